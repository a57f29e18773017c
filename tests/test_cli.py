"""The command line (SPEC 2): --version, --check, config errors, bind failures,
and the sample config serving its demo page."""
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

import appgw
from harness import APPGW, REPO, free_port, run_appgw

VALID = """
[gateway]
admin_bind = ""
access_log = ""

[[listeners]]
name = "http"
bind = "127.0.0.1:{port}"
protocol = "http"

[[backend_pools]]
name = "app"
servers = ["127.0.0.1:9"]

[[backend_settings]]
name = "app-settings"

[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
backend_settings = "app-settings"
"""


def check(tmp_path, text, name="appgw.toml"):
    """``appgw -c NAME --check`` run in ``tmp_path`` (so problem lines start with NAME)."""
    (tmp_path / name).write_text(text)
    return run_appgw("-c", name, "--check", cwd=tmp_path)


def problem_lines(result, name="appgw.toml"):
    """The lines of the output that report a problem in file ``name``."""
    return [line for line in (result.stderr + result.stdout).splitlines()
            if line.startswith(name + ":")]


def assert_only_problems(result, *expected, name="appgw.toml"):
    """Exit 1 and exactly the ``expected`` lines: a str is the whole line, a
    compiled pattern must match it. Order does not matter."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = problem_lines(result, name)
    assert len(lines) == len(expected), lines
    unmatched = list(lines)
    for want in expected:
        hit = next((line for line in unmatched
                    if (line == want if isinstance(want, str) else want.fullmatch(line))),
                   None)
        assert hit is not None, f"no line like {want!r} in {lines}"
        unmatched.remove(hit)
    assert "Traceback" not in result.stderr, result.stderr


# --- --version and --check on the sample ------------------------------------------

def test_version():
    result = run_appgw("--version")
    assert result.returncode == 0
    output = (result.stdout + result.stderr).strip()
    assert output == f"appgw {appgw.__version__}", output
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", appgw.__version__)


def test_check_on_the_sample_config():
    result = run_appgw("-c", REPO / "appgw.toml", "--check")
    assert result.returncode == 0, result.stderr
    summary = result.stdout
    for fact in ('"http"', "127.0.0.1:8080", '"main"', '"demo"', '"demo-settings"',
                 "appgw.demo:app", '"demo-health"', "/health"):
        assert fact in summary, f"{fact} missing from the summary:\n{summary}"
    # A one-screen summary.
    assert len(summary.splitlines()) <= 40
    assert "Traceback" not in result.stderr


def test_check_does_not_start_anything(tmp_path):
    port = free_port()
    started = time.monotonic()
    result = check(tmp_path, VALID.replace("{port}", str(port)))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- broken files ---------------------------------------------------------------------

def test_unknown_key(tmp_path):
    text = VALID.replace('admin_bind = ""', 'admin_bind = ""\nworkerz = 2')
    result = check(tmp_path, text.replace("{port}", str(free_port())))
    assert_only_problems(result, re.compile(r"appgw\.toml: gateway\.workerz: .*unknown.*"))


def test_unknown_key_in_an_array_entry_and_unknown_section(tmp_path):
    text = VALID.replace('protocol = "http"', 'protocol = "http"\nhostnames = ["a"]')
    text += '\n[[listener]]\nname = "typo"\n'
    result = check(tmp_path, text.replace("{port}", str(free_port())))
    assert_only_problems(result,
                         re.compile(r"appgw\.toml: listeners\[0\]\.hostnames: .*unknown.*"),
                         re.compile(r"appgw\.toml: listener(\[0\])?: .*unknown.*"))


def test_dangling_reference(tmp_path):
    text = VALID.replace('backend_pool = "app"', 'backend_pool = "chatt"')
    result = check(tmp_path, text.replace("{port}", str(free_port())))
    assert_only_problems(result, 'appgw.toml: rules[0].backend_pool: no backend pool named "chatt"')


def test_toml_syntax_error_gives_line_and_column(tmp_path):
    result = check(tmp_path, '[gateway]\nadmin_bind = ""\nworkers = = 2\n')
    assert_only_problems(result, re.compile(r"appgw\.toml: line 3, column 11: \S.*"))


def test_toml_syntax_error_unterminated_string(tmp_path):
    result = check(tmp_path, '[gateway]\n\n[[listeners]]\nname = "a"\nbind = "127.0.0.1:80\n')
    assert_only_problems(result, re.compile(r"appgw\.toml: line 5, column 21: \S.*"))


def test_missing_certificate(tmp_path, certs):
    text = VALID.replace('protocol = "http"', 'protocol = "https"\n'
                         'certificate = "missing-cert.pem"\n'
                         f'private_key = "{certs.key}"')
    result = check(tmp_path, text.replace("{port}", str(free_port())))
    assert_only_problems(result, re.compile(
        r"appgw\.toml: listeners\[0\]\.certificate: .*missing-cert\.pem.*"))


def test_https_listener_without_certificate(tmp_path):
    text = VALID.replace('protocol = "http"', 'protocol = "https"')
    result = check(tmp_path, text.replace("{port}", str(free_port())))
    assert result.returncode == 1
    lines = problem_lines(result)
    assert any(line.startswith("appgw.toml: listeners[0].certificate: ") for line in lines), lines
    assert any(line.startswith("appgw.toml: listeners[0].private_key: ") for line in lines), lines


@pytest.mark.parametrize("spec,mentions", [
    ("no_such_module_xyz:app", "no_such_module_xyz"),
    ("appgw.demo:no_such_callable", "no_such_callable"),
])
def test_app_that_cannot_import(tmp_path, spec, mentions):
    text = VALID.replace('servers = ["127.0.0.1:9"]', f'app = "{spec}"')
    result = check(tmp_path, text.replace("{port}", str(free_port())))
    assert_only_problems(result, re.compile(
        r"appgw\.toml: backend_pools\[0\]\.app: .*" + re.escape(mentions) + ".*"))


def test_several_problems_are_reported_together(tmp_path):
    text = VALID.replace('admin_bind = ""', 'admin_bind = ""\nworkers = "two"\nbogus = 1')
    text = text.replace('backend_pool = "app"', 'backend_pool = "chatt"')
    text = text.replace('name = "app-settings"', 'name = "app-settings"\nconnect_timeout = -1')
    text += ('\n[[backend_pools]]\nname = "legacy"\napp = "no_such_module_xyz:app"\n'
             '\n[[listeners]]\nname = "tls"\nbind = "127.0.0.1:{port2}"\nprotocol = "https"\n'
             'certificate = "missing-cert.pem"\nprivate_key = "missing-key.pem"\n'
             '\n[[rules]]\nname = "tls-rule"\nlistener = "tls"\nbackend_pool = "app"\n'
             'backend_settings = "app-settings"\n')
    text = text.replace("{port}", str(free_port())).replace("{port2}", str(free_port()))
    result = check(tmp_path, text)
    assert result.returncode == 1
    lines = problem_lines(result)
    for key_path in ("gateway.workers", "gateway.bogus", "rules[0].backend_pool",
                     "backend_settings[0].connect_timeout", "listeners[1].certificate",
                     "listeners[1].private_key", "backend_pools[1].app"):
        assert any(line.startswith(f"appgw.toml: {key_path}: ") for line in lines), \
            f"{key_path} not reported; got:\n" + "\n".join(lines)
    assert 'appgw.toml: rules[0].backend_pool: no backend pool named "chatt"' in lines


def test_missing_config_file(tmp_path):
    result = run_appgw("-c", "nope.toml", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert problem_lines(result, "nope.toml"), result.stderr
    assert "Traceback" not in result.stderr


# --- bind failures ------------------------------------------------------------------

def test_every_address_is_bound_before_any_listens():
    """A start that fails on its second address never listened on the
    first: a socket that listens accepts connections before anyone serves."""
    from appgw.config import parse_config
    from appgw.control.listener import BindError, bind_all, listen_all

    first, second = free_port(), free_port()
    text = VALID.replace("{port}", str(first)) + (
        f'\n[[listeners]]\nname = "second"\nbind = "127.0.0.1:{second}"\nprotocol = "http"\n'
        '\n[[rules]]\nname = "second-rule"\nlistener = "second"\nbackend_pool = "app"\n'
        'backend_settings = "app-settings"\n')
    sockets = bind_all(parse_config(text), listen=False)
    try:
        for port in (first, second):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=1)
        listen_all(sockets)
        for port in (first, second):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        for sock in sockets.values():
            sock.close()

    # The second address taken: nothing is left bound, and the error names it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", second))
        holder.listen(1)
        with pytest.raises(BindError, match=f"cannot listen on 127.0.0.1:{second}: address already in use"):
            bind_all(parse_config(text))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", first))    # free again



def test_port_in_use_exits_before_anything_serves(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    first, admin = free_port(), free_port()
    text = VALID.replace("{port}", str(first)).replace('admin_bind = ""',
                                                        f'admin_bind = "127.0.0.1:{admin}"')
    text = text.replace('servers = ["127.0.0.1:9"]', 'app = "appgw.demo:app"')
    text += (f'\n[[listeners]]\nname = "second"\nbind = "127.0.0.1:{busy}"\nprotocol = "http"\n'
             '\n[[rules]]\nname = "second-rule"\nlistener = "second"\nbackend_pool = "app"\n'
             'backend_settings = "app-settings"\n')
    (tmp_path / "appgw.toml").write_text(text)

    # Watch the other addresses while appgw runs: nothing may accept, even briefly.
    accepted, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for port in (first, admin):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    accepted.append(port)
                except OSError:
                    pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with holder:
            result = subprocess.run([sys.executable, str(APPGW), "-c", "appgw.toml"],
                                    cwd=tmp_path, capture_output=True, text=True, timeout=20)
    finally:
        done.set()
        watcher.join()
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{busy}: address already in use" in result.stderr, \
        result.stderr
    assert "Traceback" not in result.stderr
    assert not accepted, f"appgw served on {set(accepted)} before failing"


# --- the sample config ----------------------------------------------------------------

def test_sample_config_serves_the_demo_page(gateway_factory):
    text = (REPO / "appgw.toml").read_text()
    assert "127.0.0.1:8080" in text and 'admin_bind = "127.0.0.1:9901"' in text
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
    text = text.replace('admin_bind = "127.0.0.1:9901"', 'admin_bind = ""')
    gw = gateway_factory(text)
    r = requests.get(gw.url("/"), timeout=5)
    assert r.status_code == 200
    assert "appgw demo" in r.text
    assert r.headers["Content-Type"].startswith("text/html")
    r = requests.get(gw.url("/health"), timeout=5)
    assert (r.status_code, r.text) == (200, "ok")
    info = requests.get(gw.url("/api/info"), timeout=5).json()
    assert info["headers"]["X-Forwarded-Proto"] == "http"
    # The sample logs to stdout: one access-log line per request.
    gw.wait_for_output("GET /api/info", stream="stdout")
