"""WebSocket over TLS through appgw: wss:// listeners and https backends.

The helpers (gateway config, raw client, access-log parsing) are
test_websocket.py's; this file adds TLS on the client leg, the backend leg
or both, including half-closes, where TLS EOF handling could make one side
hang.
"""
import socket
import ssl
import time

import pytest
import websocket
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect as sync_connect

from harness import wait_until
from test_websocket import (BINARY, TEXT, RawClient, browser_echo, close_received,
                            closes_within, exchange_everything, handshake, masked_frame,
                            start_gateway, wait_session_line, ws_url)


def client_context(certs):
    return ssl.create_default_context(cafile=certs.cert)  # self-signed: its own root


def tls_raw_client(gateway, certs):
    sock = socket.create_connection(("127.0.0.1", gateway.port()), timeout=5)
    return RawClient(client_context(certs).wrap_socket(sock, server_hostname="localhost"))


def wss(gateway_factory, certs, backend=None, app=None, settings="request_timeout = 20"):
    return start_gateway(gateway_factory, backend, app=app, settings=settings, certs=certs,
                         server_host=server_host(settings))


def https_settings(certs, extra="request_timeout = 20"):
    return f'protocol = "https"\ntrusted_root = "{certs.cert}"\n{extra}'


def server_host(settings):
    """https backends are named "localhost" (a name the certificate verifies);
    test_https_backend_addressed_by_ip covers an IP address."""
    return "localhost" if 'protocol = "https"' in settings else "127.0.0.1"


def ws_connect(gateway, certs, path, **kwargs):
    """websocket-client over wss://, trusting the test certificate."""
    assert ws_url(gateway, path).startswith("wss://")
    return websocket.create_connection(ws_url(gateway, path), timeout=10,
                                       sslopt={"ca_certs": certs.cert}, **kwargs)


# --- all four combinations of TLS legs ----------------------------------------------

@pytest.mark.parametrize("client_tls,backend_tls", [(True, False), (False, True), (True, True)],
                         ids=["wss-to-ws", "ws-to-wss", "wss-to-wss"])
def test_messages_over_tls_legs(gateway_factory, backend_factory, certs, client_tls,
                                backend_tls):
    if backend_tls:
        backend = backend_factory("ws_backend.py", "--tls", certs.cert, certs.key)
        settings = https_settings(certs)
    else:
        backend, settings = backend_factory.wsgi("ws"), "request_timeout = 20"
    gateway = start_gateway(gateway_factory, backend, settings=settings,
                            certs=certs if client_tls else None,
                            server_host=server_host(settings))
    path = "/echo" if backend_tls else "/ws/echo"
    if client_tls:
        ws = ws_connect(gateway, certs, path)
    else:
        ws = websocket.create_connection(ws_url(gateway, path), timeout=10)
    try:
        exchange_everything(ws)
    finally:
        ws.close()


def test_https_backend_addressed_by_ip(gateway_factory, backend_factory, certs):
    """The certificate names IP 127.0.0.1: verifying it needs no host name."""
    backend = backend_factory("ws_backend.py", "--tls", certs.cert, certs.key)
    gateway = start_gateway(gateway_factory, backend, settings=https_settings(certs),
                            server_host="127.0.0.1")
    ws = websocket.create_connection(ws_url(gateway, "/echo"), timeout=10)
    try:
        ws.send("by ip")
        assert ws.recv() == "by ip"
    finally:
        ws.close()


def test_wss_to_websockets_backend_with_subprotocol_and_deflate(gateway_factory,
                                                                 backend_factory, certs):
    backend = backend_factory("ws_backend.py", "--subprotocols", "chat",
                              "--compression", "deflate", "--tls", certs.cert, certs.key)
    gateway = wss(gateway_factory, certs, backend, settings=https_settings(certs))
    with sync_connect(ws_url(gateway, "/info"), ssl=client_context(certs), proxy=None,
                      subprotocols=["chat", "superchat"], compression="deflate",
                      open_timeout=5, ping_interval=None) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.recv(timeout=5)  # the backend's description of the handshake
        ws.send("over tls " * 1000)
        assert ws.recv(timeout=5) == "over tls " * 1000
        ws.close(1000, "tls bye")
        assert close_received(ws) == (1000, "tls bye")


def test_wss_demo_app_in_process(gateway_factory, certs):
    gateway = wss(gateway_factory, certs, app="appgw.demo:app")
    ws = ws_connect(gateway, certs, "/ws/echo")
    try:
        exchange_everything(ws)
    finally:
        ws.close()


# --- bytes with the handshake, over TLS ------------------------------------------------

def test_wss_client_frame_in_the_handshake_record(gateway_factory, backend_factory, certs):
    gateway = wss(gateway_factory, certs, backend_factory.wsgi("ws"))
    client = tls_raw_client(gateway, certs)
    try:
        client.upgrade(handshake("/ws/echo"), early=masked_frame(TEXT, b"early over tls"))
        assert client.frame() == (TEXT, b"early over tls")
    finally:
        client.close()


def test_https_backend_frame_with_its_101(gateway_factory, backend_factory, certs):
    backend = backend_factory("ws_raw_backend.py", "--mode", "frame-with-101",
                              "--tls", certs.cert, certs.key)
    gateway = wss(gateway_factory, certs, backend, settings=https_settings(certs))
    client = tls_raw_client(gateway, certs)
    try:
        client.upgrade(handshake("/"), early=masked_frame(BINARY, b"\x00early"))
        assert client.frame() == (TEXT, b"sent with the 101")
        assert client.frame() == (BINARY, b"\x00early")
    finally:
        client.close()


# --- half-close over TLS: neither side may hang ------------------------------------------
# A TLS side ends its direction as the gateway's relay does: a TCP FIN without
# close_notify, its TLS reads going on. The raw backend keeps writing after
# such an EOF (OP_IGNORE_UNEXPECTED_EOF); an OpenSSL client cannot (after any
# TLS EOF it refuses to write), so a wss client that got the backend's EOF
# can only close.

LEGS = {"wss-to-ws": (True, False), "ws-to-wss": (False, True), "wss-to-wss": (True, True)}


def half_close_setup(gateway_factory, backend_factory, certs, legs, mode):
    client_tls, backend_tls = LEGS[legs]
    args = ("--tls", certs.cert, certs.key) if backend_tls else ()
    backend = backend_factory("ws_raw_backend.py", "--mode", mode, *args)
    settings = https_settings(certs) if backend_tls else "request_timeout = 20"
    gateway = start_gateway(gateway_factory, backend, settings=settings,
                            certs=certs if client_tls else None,
                            server_host=server_host(settings))
    client = tls_raw_client(gateway, certs) if client_tls else RawClient.connect(gateway.port())
    client.upgrade(handshake("/"))
    return backend, gateway, client


def end_of_stream(sock):
    """The TCP FIN, also under TLS (no close_notify)."""
    socket.socket.shutdown(sock, socket.SHUT_WR)


@pytest.mark.parametrize("legs", list(LEGS))
def test_client_half_close_over_tls(gateway_factory, backend_factory, certs, legs):
    backend, gateway, client = half_close_setup(gateway_factory, backend_factory, certs, legs,
                                                "eof-then-send")
    try:
        client.send(TEXT, b"one")
        client.send(TEXT, b"two")
        end_of_stream(client.sock)
        assert client.frame() == (TEXT, b"after EOF: one|two")
        client.read_eof()
    finally:
        client.close()
    assert wait_session_line(gateway)["ended"] == "client_close"


def test_backend_half_close_to_plain_client_over_https_backend(gateway_factory,
                                                              backend_factory, certs):
    """The client (plain TCP) can go on sending after the TLS backend's FIN."""
    backend, gateway, client = half_close_setup(gateway_factory, backend_factory, certs,
                                                "ws-to-wss", "shut-then-read")
    try:
        assert client.frame() == (TEXT, b"backend done writing")
        client.read_eof()
        client.send(TEXT, b"still")
        client.send(TEXT, b"here")
        end_of_stream(client.sock)
        wait_until(lambda: "RECEIVED still|here" in backend.stderr_text(), 5,
                   message="the backend to get the client's frames after its FIN")
    finally:
        client.close()
    assert wait_session_line(gateway)["ended"] == "backend_close"


@pytest.mark.parametrize("legs", ["wss-to-ws", "wss-to-wss"])
def test_backend_half_close_to_wss_client(gateway_factory, backend_factory, certs, legs):
    """The wss client sees the last frame and the end; when it closes, the
    backend sees the end too: no side hangs."""
    backend, gateway, client = half_close_setup(gateway_factory, backend_factory, certs, legs,
                                                "shut-then-read")
    try:
        assert client.frame() == (TEXT, b"backend done writing")
        client.read_eof()
    finally:
        client.close()
    wait_until(lambda: "RECEIVED " in backend.stderr_text(), 3,
               message="the backend to see the end of the session")
    assert wait_session_line(gateway)["ended"] in ("backend_close", "client_close")


def test_wss_close_handshake_then_both_ends_close(gateway_factory, backend_factory, certs):
    """A clean close over TLS on both legs: the session ends, nothing hangs."""
    backend = backend_factory("ws_backend.py", "--mode", "close-after", "--count", "1",
                              "--tls", certs.cert, certs.key)
    gateway = wss(gateway_factory, certs, backend, settings=https_settings(certs))
    started = time.monotonic()
    with sync_connect(ws_url(gateway, "/"), ssl=client_context(certs), proxy=None,
                      open_timeout=5, ping_interval=None, compression=None) as ws:
        ws.send("once")
        assert ws.recv(timeout=5) == "once"
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)
        assert close_received(ws) == (1000, "done")
    wait_session_line(gateway)
    assert time.monotonic() - started < 5


# --- timeouts and failures over TLS -----------------------------------------------------

def test_wss_idle_session_is_closed(gateway_factory, backend_factory, certs):
    backend = backend_factory("ws_backend.py", "--mode", "hold", "--tls", certs.cert, certs.key)
    gateway = wss(gateway_factory, certs, backend,
                  settings=https_settings(certs, "websocket_idle_timeout = 1"))
    ws = ws_connect(gateway, certs, "/held")
    try:
        closes_within(ws, 0.8, 3)
    finally:
        ws.close()
    wait_until(lambda: "CLOSED path=/held" in backend.stderr_text(), 5,
               message="the backend to see its side closed")
    assert wait_session_line(gateway)["ended"] == "idle_timeout"


def test_wss_backend_dying_closes_the_client_promptly(gateway_factory, backend_factory, certs):
    backend = backend_factory("ws_backend.py", "--tls", certs.cert, certs.key)
    gateway = wss(gateway_factory, certs, backend, settings=https_settings(certs))
    ws = ws_connect(gateway, certs, "/echo")
    try:
        ws.send("alive")
        assert ws.recv() == "alive"
        backend.proc.kill()
        closes_within(ws, 0, 3)
    finally:
        ws.close()


def test_wss_refusal_relayed_as_http(gateway_factory, backend_factory, certs):
    backend = backend_factory("ws_backend.py", "--mode", "refuse", "--tls", certs.cert, certs.key)
    gateway = wss(gateway_factory, certs, backend, settings=https_settings(certs))
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        ws_connect(gateway, certs, "/")
    assert caught.value.status_code == 403


# --- a real browser over wss -------------------------------------------------------------

def test_browser_demo_page_echo_over_wss(gateway_factory, certs, tmp_path):
    gateway = wss(gateway_factory, certs, app="backends.ws_browser_app:app")
    assert gateway.url("/").startswith("https://")
    browser_echo(gateway, tmp_path, "--ignore-certificate-errors")
