"""The answers to ACME challenges, without I/O.

- HTTP-01 (RFC 8555 8.3): GET /.well-known/acme-challenge/<token> on port 80
  answers the key authorization. `http01_answer(path, lookup)` is the
  responder: the request path in, the body out (None: not a challenge this
  gateway holds, route the request as usual).
- TLS-ALPN-01 (RFC 8737): a handshake on port 443 offering only
  "acme-tls/1" gets a self-signed certificate for the name being validated,
  carrying the SHA-256 of the key authorization in a critical
  id-pe-acmeIdentifier extension. `tls_alpn_certificate` builds it.
"""
import datetime
import hashlib
import re

from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

HTTP01, TLS_ALPN01 = "http-01", "tls-alpn-01"
PREFIX = b"/.well-known/acme-challenge/"
ACME_TLS_ALPN = b"acme-tls/1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
# Tokens are base64url (RFC 8555 8.1); anything else is no token of ours,
# and cannot name a file outside the challenge directory.
_TOKEN_RE = re.compile(rb"[A-Za-z0-9_-]{16,256}")


def http01_token(path: bytes):
    """The token of a challenge path, or None (query strings are not part of it)."""
    if not path.startswith(PREFIX):
        return None
    token = path[len(PREFIX):]
    return token.decode("ascii") if _TOKEN_RE.fullmatch(token) else None


def http01_answer(path: bytes, lookup):
    """The body answering `path`, or None. `lookup(token)` returns the key
    authorization (str) of a pending challenge, or None."""
    token = http01_token(path)
    if token is None:
        return None
    key_authorization = lookup(token)
    return None if key_authorization is None else key_authorization.encode("ascii")


class ChallengeAnswer:
    """A request the gateway answers itself with a key authorization (the
    exchange's target in place of a Backend or Redirector)."""

    __slots__ = ("body",)

    def __init__(self, body: bytes):
        self.body = body


def tls_alpn_certificate(name: str, key_authorization: str):
    """(certificate PEM, key PEM) that answers TLS-ALPN-01 for `name`."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            # The extension's value is an ASN.1 OCTET STRING of the digest.
            .add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def offers_only_acme_tls(alpn) -> bool:
    """A validation handshake: RFC 8737 has the CA offer "acme-tls/1" alone."""
    return tuple(alpn) == (ACME_TLS_ALPN,)


# The acme library stopped shipping a TLS-ALPN-01 type; without one, the
# challenge parses as UnrecognizedChallenge and has no key_authorization().

@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer that asks the CA to validate TLS-ALPN-01."""
    typ = TLS_ALPN01


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737's challenge: a token, answered by a certificate on port 443."""
    typ = TLS_ALPN01
    response_cls = TLSALPN01Response

    def validation(self, account_key, **unused):
        return hashlib.sha256(self.key_authorization(account_key).encode("ascii")).digest()


def available_challenges(config, listener):
    """The challenge types the CA can reach for an ACME listener: HTTP-01
    through any http listener on gateway.acme_http_port (the CA connects to
    port 80 of the name), TLS-ALPN-01 when the listener itself is on
    gateway.acme_tls_port (443)."""
    gateway = config.gateway
    kinds = []
    if any(item.protocol == "http" and item.port == gateway.acme_http_port for item in config.listeners):
        kinds.append(HTTP01)
    if listener.port == gateway.acme_tls_port:
        kinds.append(TLS_ALPN01)
    return kinds


def preferred_challenges(available, failed=()):
    """The challenge types to try, in order: HTTP-01 first (see the README),
    TLS-ALPN-01 next; a type whose validation failed last time goes last."""
    ordered = [kind for kind in (HTTP01, TLS_ALPN01) if kind in available]
    return [k for k in ordered if k not in failed] + [k for k in ordered if k in failed]
