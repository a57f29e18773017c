"""Fixtures shared by the behaviour tests; the helpers live in harness.py."""
import os
import socket
import sys

import pytest

from harness import REPO, BackendFactory, GatewayFactory, make_cert, start_backend

# Test the checkout even when it is not pip-installed (pytest run directly).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A self-signed localhost certificate: ``certs.cert``, ``certs.key`` (paths)."""
    return make_cert(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def wsgi_backend():
    """One wsgi_backend.py (name "session") shared by the whole run."""
    backend = start_backend("wsgi_backend.py", "--name", "session")
    yield backend
    backend.stop()


@pytest.fixture
def backend_factory():
    """``backend_factory(script, *args)``, ``.wsgi(name)``, ``.raw(mode, record=None)``."""
    factory = BackendFactory()
    yield factory
    factory.stop_all()


@pytest.fixture
def gateway_factory(tmp_path):
    """``gateway_factory(toml_text, args=(), wait=True, env=None, **placeholders)``."""
    factory = GatewayFactory(tmp_path)
    yield factory
    factory.stop_all()


def pytest_configure(config):
    config.addinivalue_line("markers", "sansio: a socket-free test of protocol or decision code (`./dev test-fast`)")
    if os.environ.get("APPGW_SANSIO"):
        # `./dev test-fast` promises seconds and no network: a test in it
        # that opens a socket is in the wrong set, and says so.
        def refuse(*_args, **_kwargs):
            raise RuntimeError("a socket-free test (marked sansio) used a socket")
        for name in ("connect", "connect_ex", "bind"):
            setattr(socket.socket, name, refuse)
