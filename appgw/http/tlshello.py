"""The first TLS ClientHello of a connection, read without consuming it.

The TLS-ALPN-01 challenge (RFC 8737) needs a certificate chosen by the ALPN
protocols the client offers, and Python's ssl module shows them to no
callback before the certificate is sent. So when a challenge is pending, the
listener peeks at the ClientHello (MSG_PEEK leaves the bytes for the
handshake) and picks the context before wrapping the socket.

`parse_client_hello` is sans-io: bytes in, (server name, ALPN protocols) out.
"""
import socket
import time
from collections import namedtuple

import gevent

ClientHello = namedtuple("ClientHello", "server_name alpn")

_HANDSHAKE, _CLIENT_HELLO = 22, 1
_EXT_SERVER_NAME, _EXT_ALPN = 0, 16
_MAX_HELLO = 1 << 16


class NotClientHello(ValueError):
    """The bytes are not the start of a TLS ClientHello."""


class _Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise NotClientHello("truncated ClientHello")
        piece = self.data[self.at:self.at + n]
        self.at += n
        return piece

    def number(self, n):
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_size):
        return self.take(self.number(length_size))


def _handshake_bytes(data):
    """The handshake message carried by the leading records, or None when
    more records must arrive first."""
    payload, at = b"", 0
    while True:
        if len(data) < at + 5:
            return None
        if data[at] != _HANDSHAKE:
            raise NotClientHello("not a TLS handshake record")
        length = int.from_bytes(data[at + 3:at + 5], "big")
        if len(data) < at + 5 + length:
            return None
        payload += data[at + 5:at + 5 + length]
        at += 5 + length
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                raise NotClientHello("the first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(payload[1:4], "big")
            if needed > _MAX_HELLO:
                raise NotClientHello("ClientHello too large")
            if len(payload) >= needed:
                return payload[4:needed]


def parse_client_hello(data: bytes):
    """ClientHello(server_name, alpn) from the first bytes a client sent;
    None while they are incomplete; NotClientHello when they are no hello.

    server_name is the lowercased SNI host name or ""; alpn a tuple of the
    offered protocol names (bytes)."""
    body = _handshake_bytes(data)
    if body is None:
        return None
    r = _Reader(body)
    r.take(2 + 32)                  # legacy_version, random
    r.vector(1)                     # legacy_session_id
    r.vector(2)                     # cipher_suites
    r.vector(1)                     # legacy_compression_methods
    server_name, alpn = "", ()
    if r.at == len(body):
        return ClientHello(server_name, alpn)
    extensions = _Reader(r.vector(2))
    while extensions.at < len(extensions.data):
        kind, ext = extensions.number(2), _Reader(extensions.vector(2))
        if kind == _EXT_SERVER_NAME:
            names = _Reader(ext.vector(2))
            while names.at < len(names.data):
                name_type, name = names.number(1), names.vector(2)
                if name_type == 0:
                    server_name = name.decode("ascii", "replace").lower().rstrip(".")
        elif kind == _EXT_ALPN:
            protocols, offered = _Reader(ext.vector(2)), []
            while protocols.at < len(protocols.data):
                offered.append(protocols.vector(1))
            alpn = tuple(offered)
    return ClientHello(server_name, alpn)


def peek_client_hello(sock, timeout: float, step: float = 0.005):
    """The ClientHello waiting on `sock`, left unread; None when the client
    sends something else or nothing complete within `timeout`."""
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(_MAX_HELLO + 5, socket.MSG_PEEK)
        except OSError:
            return None
        if not data:
            return None
        try:
            hello = parse_client_hello(data)
        except NotClientHello:
            return None
        if hello is not None:
            return hello
        if time.monotonic() >= deadline:
            return None
        # A peek returns at once while any byte waits: pause until more came.
        if len(data) == seen:
            gevent.sleep(step)
        seen = len(data)
