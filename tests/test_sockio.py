"""gevent's private socket attributes, which appgw reaches only through
appgw.sockio: when a gevent release renames or changes one, this fails
first and says which, instead of the proxy failing in a callback.

The checks run in a child process, monkey-patched as appgw runs: patching
the test process itself would change every other test's sockets."""
import re
import subprocess
import sys

from harness import REPO, make_cert

CHECKS = r'''
from gevent import monkey
monkey.patch_all()
import socket, ssl, sys
import gevent
from appgw import sockio

def check(what, ok):
    if not ok:
        print("gevent changed: " + what)
        sys.exit(1)

a, b = socket.socketpair()
check("a patched socket is not gevent's socket class (sockio.PLAIN)", type(a) is sockio.PLAIN)
raw = sockio.kernel(a)
check("sockio.kernel (_sock) is not the non-blocking kernel socket",
      raw.fileno() == a.fileno() and raw.getblocking() is False)
try:
    raw.recv(1)
    check("the kernel socket blocked or read nothing that was sent", False)
except BlockingIOError:
    pass
fired = []
watcher = sockio.read_watcher(a)
watcher.start(lambda: (fired.append(1), watcher.stop()))
b.sendall(b"x")
with gevent.Timeout(2, False):
    while not fired:
        gevent.sleep(0.001)
check("sockio.read_watcher (_read_event) did not fire when a byte arrived", fired)
check("the kernel socket did not read the byte", raw.recv(1) == b"x")

server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(sys.argv[1], sys.argv[2])
client_ctx = ssl.create_default_context(cafile=sys.argv[1])
c, d = socket.socketpair()
server = server_ctx.wrap_socket(c, server_side=True, do_handshake_on_connect=False)
client = client_ctx.wrap_socket(d, server_hostname="localhost", do_handshake_on_connect=False)
done = gevent.spawn(server.do_handshake)
client.do_handshake()
done.get(timeout=5)
tls = sockio.tls_object(client)
check("sockio.tls_object (_sslobj) has no pending()/read()", hasattr(tls, "pending") and hasattr(tls, "read"))
server.sendall(b"hello")
gevent.sleep(0.05)
check("sockio.tls_object did not read the decrypted bytes", tls.read(5) == b"hello" and tls.pending() == 0)
print("ok")
'''


def test_gevent_private_socket_attributes_are_what_appgw_expects(tmp_path):
    certs = make_cert(tmp_path)
    result = subprocess.run([sys.executable, "-c", CHECKS, str(certs.cert), str(certs.key)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


PRIVATE = re.compile(r"\._(sock|read_event|write_event|sslobj)\b")


def test_no_other_module_names_them():
    found = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "appgw").rglob("*.py"))
             if path.name != "sockio.py"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if PRIVATE.search(line)]
    assert not found, "use appgw.sockio's names for gevent's private attributes: " + ", ".join(found)
