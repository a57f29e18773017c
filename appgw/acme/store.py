"""ACME storage on disk: the account key, each certificate with its key, the
last order attempt, and the pending challenges.

Layout under gateway.acme_storage (directories 0700, files 0600):

    account.key                       the account's ECDSA P-256 key, made once
    certificates/<name>-<hash>/       one directory per name set and CA
        certificate.pem               private key, then the full chain
        status.json                   the last attempt: time, result, next try
        lock                          held by the one process that orders
    challenges/http-01/<token>        key authorizations being validated
    challenges/tls-alpn-01/<name>.pem challenge certificate and key

Every file is written whole to a temporary name and renamed, so a reader
(another worker, a restart) sees the old file or the new one, never half;
the key and chain share one file so that they can never disagree. Workers
share the directory: the status, challenges and certificates of the process
that orders are what the others serve and show.
"""
import datetime
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections import namedtuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

CertInfo = namedtuple("CertInfo", "names issuer serial not_before not_after")


def write_private(path: str, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)   # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _mkdir(path):
    """`path` and its missing parents, each 0700 (makedirs gives only the last one the mode)."""
    if not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent and parent != path:
            _mkdir(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    return path


def cert_info(pem: bytes) -> CertInfo:
    """The facts /certificates shows of a PEM chain's first certificate."""
    leaf = x509.load_pem_x509_certificates(pem)[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(names, leaf.issuer.rfc4514_string(), format(leaf.serial_number, "x"),
                    leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp())


def new_private_key() -> bytes:
    """A fresh ECDSA P-256 key, PEM (PKCS#8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def slot_name(names, directory_url: str) -> str:
    """The directory of one name set at one CA: readable, and distinct for
    every set (order-insensitive) and every CA (staging is not production)."""
    digest = hashlib.sha256(("\n".join(sorted(names)) + "\n" + directory_url).encode()).hexdigest()[:12]
    return "%s-%s" % (names[0], digest)


class Stored(namedtuple("Stored", "path pem info mtime")):
    """A certificate on disk: the file (key + chain), its bytes, its facts."""


class CertStore:
    def __init__(self, root: str):
        self.root = root

    # -- the account -----------------------------------------------------------

    def account_key(self) -> bytes:
        """The account key, created on first use. Workers starting together
        agree on one: the key is linked into place only if none is there."""
        path = os.path.join(_mkdir(self.root), "account.key")
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(new_private_key())
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            _unlink(tmp)
        with open(path, "rb") as f:
            return f.read()

    # -- certificates ----------------------------------------------------------

    def slot_dir(self, slot: str) -> str:
        return os.path.join(self.root, "certificates", slot)

    def certificate_path(self, slot: str) -> str:
        return os.path.join(self.slot_dir(slot), "certificate.pem")

    def load(self, slot: str):
        """The stored certificate of `slot`, or None (none, or unreadable)."""
        path = self.certificate_path(slot)
        try:
            with open(path, "rb") as f:
                mtime = os.fstat(f.fileno()).st_mtime_ns
                pem = f.read()
            return Stored(path, pem, cert_info(pem), mtime)
        except (OSError, ValueError, IndexError):
            return None

    def mtime(self, slot: str):
        try:
            return os.stat(self.certificate_path(slot)).st_mtime_ns
        except OSError:
            return None

    def save(self, slot: str, key_pem: bytes, chain_pem: bytes) -> None:
        _mkdir(self.slot_dir(slot))
        write_private(self.certificate_path(slot), key_pem + chain_pem)

    def status(self, slot: str) -> dict:
        """The last attempt as the ordering process wrote it ({} when none)."""
        try:
            with open(os.path.join(self.slot_dir(slot), "status.json"), "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return {}

    def save_status(self, slot: str, status: dict) -> None:
        _mkdir(self.slot_dir(slot))
        write_private(os.path.join(self.slot_dir(slot), "status.json"), json.dumps(status).encode())

    def try_lock(self, slot: str):
        """An open file holding the slot's ordering lock, or None when another
        process holds it. Closing the file (or dying) releases it."""
        fd = os.open(os.path.join(_mkdir(self.slot_dir(slot)), "lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        f = os.fdopen(fd, "wb")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return f

    def slots(self):
        """Every stored slot name (for --check)."""
        try:
            return sorted(os.listdir(os.path.join(self.root, "certificates")))
        except OSError:
            return []

    # -- challenges ------------------------------------------------------------

    def challenge_dir(self, kind: str) -> str:
        return os.path.join(self.root, "challenges", kind)

    def put_challenge(self, kind: str, key: str, data: bytes) -> str:
        path = os.path.join(_mkdir(self.challenge_dir(kind)), key)
        write_private(path, data)
        return path

    def drop_challenge(self, kind: str, key: str) -> None:
        _unlink(os.path.join(self.challenge_dir(kind), key))

    def read_challenge(self, kind: str, key: str):
        try:
            with open(os.path.join(self.challenge_dir(kind), key), "rb") as f:
                return f.read()
        except OSError:
            return None

    def challenge_keys(self, kind: str):
        try:
            return [name for name in os.listdir(self.challenge_dir(kind)) if not name.startswith(".")]
        except OSError:
            return []


def iso(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
