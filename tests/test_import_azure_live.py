"""`appgw import-azure` with processes: the written file through `appgw --check`, and
a live gateway on an imported config.

The live tests import tests/azure/live.json, start appgw on the result in
front of real backends on 127.0.0.2-5 (one port, as the template's backend
settings give one port to a pool) and check what the template says:
routing (basic, path-based, multi-site), redirects, probes and cookie
affinity; a rewrite set, a backend path override and a custom error page.
The socket-free tests are in test_import_azure.py.
"""
import io
import subprocess

import pytest
import requests

from appgw.azure import command
from harness import REPO, free_port, run_appgw, wait_until

DATA = REPO / "tests" / "azure"
EPOCH = "1764547200"


@pytest.fixture
def importer(monkeypatch):
    """Runs the command in-process from tests/azure/: (exit status, stdout, stderr lines)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.chdir(DATA)

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        status = command.main([str(a) for a in args], out, err)
        return status, out.getvalue(), err.getvalue().splitlines()

    return run


def verdict_of(lines):
    start = next(i for i, line in enumerate(lines) if line.startswith("appgw --check of the result"))
    return lines[start:]


def test_written_file_passes_appgw_check(tmp_path):
    out = tmp_path / "appgw.toml"
    result = run_appgw("import-azure", DATA / "minimal.json", "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out} (gateway \"mini-gw\")" in result.stderr
    check = run_appgw("-c", out, "--check")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{out}: ok")



def test_full_template_passes_check_once_its_placeholder_files_are_made(tmp_path, importer):
    """The header's openssl commands make the certificates; with the error pages and
    the trusted root in place too, `appgw --check` takes the imported file."""
    status, out, err = importer("full.json", "-o", tmp_path / "appgw.toml")
    written = (tmp_path / "appgw.toml").read_text()
    commands = [line[len("#   "):] for line in written.splitlines()
                if line.startswith(("#   mkdir", "#   openssl"))]
    assert len(commands) == 3  # mkdir, then one per certificate and key pair
    for line in commands:
        subprocess.run(line.split(), cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "certs" / "internal-ca.pem").write_bytes((tmp_path / "certs" / "kv-cert.pem").read_bytes())
    (tmp_path / "errors").mkdir()
    for page in ("503.html", "https-listener-502.html"):
        (tmp_path / "errors" / page).write_text("<h1>sorry</h1>\n")
    check = run_appgw("-c", tmp_path / "appgw.toml", "--check")
    assert check.returncode == 0, check.stderr
    # and the importer itself now checks the whole file
    status, out, err = importer("full.json", "-o", tmp_path / "appgw.toml")
    assert status == 0
    assert verdict_of(err)[:2] == ["appgw --check of the result:", f"{tmp_path / 'appgw.toml'}: ok"]


def backend_health(gw):
    body = requests.get(gw.admin_url("/backend-health"), timeout=5).json()
    return {server["address"]: server["health"]
            for pool in body["backend_pools"] for server in pool["servers"]}


PAGE = "<h1>Back soon</h1>\n"


@pytest.fixture
def imported_gateway(tmp_path, backend_factory, gateway_factory):
    """live.json imported and running: (gateway, its site URL, the redirect port, backend port)."""
    app_a = backend_factory("wsgi_backend.py", "--host", "127.0.0.2", "--name", "app-a")
    port = app_a.port
    backend_factory("wsgi_backend.py", "--host", "127.0.0.3", "--port", port, "--name", "app-b")
    backend_factory("wsgi_backend.py", "--host", "127.0.0.4", "--port", port, "--name", "api")
    backend_factory("wsgi_backend.py", "--host", "127.0.0.5", "--port", port, "--name", "admin")
    gw_port, redirect_port = free_port(), free_port()
    out = tmp_path / "appgw.toml"
    result = run_appgw("import-azure", DATA / "live.json", "--set", f"gatewayPort={gw_port}",
                       "--set", f"redirectPort={redirect_port}", "--set", f"backendPort={port}",
                       "--bind-host", "127.0.0.1", "-o", out)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert 'admin_bind = "127.0.0.1:9901"' in text
    (tmp_path / "gw0" / "errors").mkdir(parents=True)  # beside the gateway's appgw.toml
    (tmp_path / "gw0" / "errors" / "502.html").write_text(PAGE)
    gw = gateway_factory(text.replace('admin_bind = "127.0.0.1:9901"',
                                      f'admin_bind = "127.0.0.1:{free_port()}"'))
    servers = [f"127.0.0.{n}:{port}" for n in (2, 3, 4, 5)]
    wait_until(lambda: all(backend_health(gw).get(s) == "Healthy" for s in servers),
               message="every server Healthy")
    return gw, f"http://127.0.0.1:{gw_port}", redirect_port, port


def test_live_imported_config_routes_redirects_probes_and_sticks(imported_gateway):
    gw, site, redirect_port, port = imported_gateway
    # basic rule target of the path map: both app servers take turns
    names = {requests.get(f"{site}/name", timeout=5).text for _ in range(4)}
    assert names == {"app-a", "app-b"}
    # path rule: /echo goes to the api pool, with the settings' host name
    echo = requests.get(f"{site}/echo", timeout=5).json()
    assert echo["name"] == "api"
    assert ["Host", "api.internal.test"] in echo["headers"]
    # multi-site: the admin host name has its own listener on the same port
    assert requests.get(f"{site}/name", headers={"Host": "admin.example.test"}, timeout=5).text == "admin"
    # a path rule's redirect to a URL (Found, path kept, query not)
    moved = requests.get(f"{site}/old/page?x=1", allow_redirects=False, timeout=5)
    assert (moved.status_code, moved.headers["Location"]) == (302, "http://docs.example.test/moved/old/page")
    # a listener that redirects to another (Permanent, path and query kept)
    to_site = requests.get(f"http://127.0.0.1:{redirect_port}/a/b?q=1", allow_redirects=False, timeout=5)
    assert (to_site.status_code, to_site.headers["Location"]) == (301, f"{site}/a/b?q=1")

    # cookie affinity: a client with the cookie stays on one server
    session = requests.Session()
    first = session.get(f"{site}/name", timeout=5)
    assert "ApplicationGatewayAffinity" in session.cookies
    assert {session.get(f"{site}/name", timeout=5).text for _ in range(5)} == {first.text}

    # the probe: app-b fails /probe-status (status 500 is not in ["200"]) and leaves the pool
    requests.post(f"http://127.0.0.3:{port}/set-probe-status?code=500", timeout=5).raise_for_status()
    wait_until(lambda: backend_health(gw)[f"127.0.0.3:{port}"] == "Unhealthy", message="app-b Unhealthy")
    assert {requests.get(f"{site}/name", timeout=5).text for _ in range(4)} == {"app-a"}
    assert session.get(f"{site}/name", timeout=5).text == "app-a"


def test_live_imported_rewrites_path_override_and_error_page(imported_gateway):
    gw, site, redirect_port, port = imported_gateway
    # the path override "/" of root-settings: /static/echo reaches the backend as /echo
    static = requests.get(f"{site}/static/echo?q=1", timeout=5).json()
    assert (static["name"], static["path"], static["query"]) == ("api", "/echo", "q=1")
    # the rewrite set of the api path rule adds request headers
    echo = requests.get(f"{site}/echo", timeout=5).json()
    assert ["X-Gateway", "appgw"] in echo["headers"]
    assert any(name == "X-Client-Port" and value.isdigit() for name, value in echo["headers"])
    # the gateway's custom error page, for its own 502 (no server of pool "down" answers)
    down = requests.get(f"{site}/down/x", timeout=5)
    assert (down.status_code, down.text) == (502, PAGE)
