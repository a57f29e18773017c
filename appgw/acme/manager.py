"""Certificates from an ACME CA for the listeners with acme = true: kept,
renewed and swapped in while the gateway runs.

One greenlet per such listener (a "slot": its name set at its CA):
- at start, a stored certificate that is still valid is served at once; a
  missing one is ordered in the background, and until it arrives the
  handshakes for its names fail (a log line says why); no other listener's
  certificate ever stands in for it;
- renewal when a third of the lifetime is left, checked when the greenlet
  wakes (at that time, after every start, at least every CHECK_INTERVAL);
- a new certificate becomes a new SSLContext: new handshakes get it, open
  connections keep the one they were made with;
- a failure keeps the old certificate, logs the CA's problem type and
  detail, and is retried with backoff (acme_schedule);
- with several workers, the process holding the slot's file lock orders;
  the others wait for its result on disk and serve it (certstore).

The challenge answers live in the storage directory too, so whichever
worker the CA's validation connection reaches can answer it.
"""
import logging
import os
import ssl
import time

import gevent

from appgw.acme import challenges
from appgw.acme.client import AcmeClient, AcmeError
from appgw.acme.schedule import LOCK_POLL, next_action, retry_delay
from appgw.acme.store import CertStore, iso, new_private_key, slot_name
from appgw.config import is_host
from appgw.control.listener import alpn_for, base_context
from appgw.http.tlshello import peek_client_hello

log = logging.getLogger("appgw.acme")

REFUSAL_LOG_INTERVAL = 10.0


class HttpSolver:
    """HTTP-01: the key authorization as a file every worker can serve."""

    def __init__(self, store):
        self.store, self.tokens = store, []

    def publish(self, name, challenge, key_authorization):
        token = challenge.encode("token")
        self.store.put_challenge(challenges.HTTP01, token, key_authorization.encode("ascii"))
        self.tokens.append(token)

    def withdraw(self):
        for token in self.tokens:
            self.store.drop_challenge(challenges.HTTP01, token)
        self.tokens = []


class TlsAlpnSolver:
    """TLS-ALPN-01: the challenge certificate, served for its name on the
    listener's own port while the CA validates."""

    def __init__(self, store):
        self.store, self.names = store, []

    def publish(self, name, challenge, key_authorization):
        cert_pem, key_pem = challenges.tls_alpn_certificate(name, key_authorization)
        self.store.put_challenge(challenges.TLS_ALPN01, name + ".pem", key_pem + cert_pem)
        self.names.append(name)

    def withdraw(self):
        for name in self.names:
            self.store.drop_challenge(challenges.TLS_ALPN01, name + ".pem")
        self.names = []


SOLVERS = {challenges.HTTP01: HttpSolver, challenges.TLS_ALPN01: TlsAlpnSolver}


class Slot:
    """One ACME listener's certificate and the greenlet that keeps it."""

    def __init__(self, manager, listener, gateway, available):
        self.manager = manager
        self.store = manager.store
        self.listener = listener.name
        self.alpn = alpn_for(listener)   # "h2" too when the listener speaks HTTP/2
        self.names = listener.host_names
        self.slot = slot_name(self.names, gateway.acme_directory)
        self.settings(gateway, available)
        self.stored = None      # certstore.Stored being served
        self.context = None     # its SSLContext
        self.ordering = False
        self.glet = None
        self.refused_logged = 0.0

    def settings(self, gateway, available):
        """Values a reload may change without a new name set or CA."""
        self.directory = gateway.acme_directory
        self.email = gateway.acme_email
        self.trusted_root = gateway.acme_trusted_root
        self.available = available

    def label(self):
        return 'listener "%s" (%s)' % (self.listener, ", ".join(self.names))

    def start(self):
        self.pick_up(first=True)
        self.glet = gevent.spawn(self.run)

    def stop(self):
        if self.glet is not None:
            self.glet.kill(block=False)

    # -- what is served ----------------------------------------------------------

    def pick_up(self, first=False, ordered=False):
        """Serve the stored certificate if it changed on disk."""
        mtime = self.store.mtime(self.slot)
        if mtime is None or (self.stored is not None and mtime == self.stored.mtime):
            return
        stored = self.store.load(self.slot)
        if stored is None:
            return
        try:
            context = base_context(self.alpn)
            context.load_cert_chain(stored.path)
        except (ssl.SSLError, OSError) as exc:
            log.error("%s: the stored certificate %s cannot be used: %s", self.label(), stored.path, exc)
            return
        self.stored, self.context = stored, context
        info = stored.info
        how = ("using the stored certificate" if first else
               "new certificate in use" if ordered else
               "picked up the certificate another worker obtained")
        log.info("%s: %s, serial %s, issued by %s, valid until %s (pid %d)", self.label(), how,
                 info.serial, info.issuer, iso(info.not_after), os.getpid())
        if info.not_after < time.time():
            log.warning("%s: the certificate in use expired at %s", self.label(), iso(info.not_after))

    # -- the greenlet --------------------------------------------------------------

    def run(self):
        while True:
            try:
                wait = self.step()
            except OSError as exc:     # the storage directory: say which, without a traceback
                log.error("%s: ACME storage %s: %s; trying again in 60s", self.label(), self.store.root,
                          exc.strerror or exc)
                wait = 60.0
            except Exception:
                log.exception("%s: certificate upkeep failed", self.label())
                wait = 60.0
            gevent.sleep(wait)

    def step(self):
        """One look at the slot: order when due and the lock is ours; the
        seconds until the next look."""
        self.pick_up()
        action, wait = next_action(time.time(), self.info(), self.store.status(self.slot))
        if action == "wait":
            return wait
        lock = self.store.try_lock(self.slot)
        if lock is None:      # another worker orders: its result lands on disk
            return LOCK_POLL
        with lock:
            self.pick_up()
            status = self.store.status(self.slot)
            if next_action(time.time(), self.info(), status)[0] == "order":
                self.order(status)
        return 0.0

    def info(self):
        return self.stored.info if self.stored is not None else None

    def order(self, status):
        started = time.time()
        failures = status.get("failures", 0) if not status.get("ok") else 0
        order = challenges.preferred_challenges(self.available, [status.get("failed_challenge")])
        solvers = {kind: SOLVERS[kind](self.store) for kind in order}
        log.info("%s: ordering a certificate from %s (%s)", self.label(), self.directory,
                 "renewal" if self.stored else "none stored yet")
        self.ordering = True
        try:
            key_pem = new_private_key()
            account_key = self.store.account_key()
            chain = AcmeClient(self.directory, account_key, self.email, self.trusted_root).obtain(
                self.names, key_pem, solvers)
            self.store.save(self.slot, key_pem, chain)
        except (AcmeError, OSError) as exc:
            if isinstance(exc, OSError):
                exc = AcmeError("storage", "cannot write to %s: %s" % (self.store.root, exc.strerror or exc))
            failures += 1
            delay = retry_delay(failures, exc.retry_after)
            self.store.save_status(self.slot, {
                "time": started, "ok": False, "result": str(exc), "type": exc.kind, "detail": exc.detail,
                "failures": failures, "retry_at": started + delay,
                "failed_challenge": getattr(exc, "challenge", None)})
            if self.stored is None:
                kept = "no certificate to serve yet"
            else:
                not_after = self.stored.info.not_after
                kept = "keeping the certificate %s %s" % (
                    "that expired at" if not_after < time.time() else "valid until", iso(not_after))
            log.error("%s: the order failed: %s; %s; next try in %ds", self.label(), exc, kept, delay)
            return
        finally:
            self.ordering = False
        self.pick_up(ordered=True)
        info = self.info()
        self.store.save_status(self.slot, {
            "time": started, "ok": True, "failures": 0,
            "result": "obtained: serial %s, valid until %s" % (info.serial, iso(info.not_after))
                      if info else "obtained"})

    # -- handshakes without a certificate ------------------------------------------

    def refused(self, server_name):
        now = time.monotonic()
        if now - self.refused_logged < REFUSAL_LOG_INTERVAL:
            return
        self.refused_logged = now
        status = self.store.status(self.slot)
        why = "the last order failed: %s" % status["result"] if status and not status.get("ok") else \
            "the order is under way" if self.ordering else "waiting for the ACME CA"
        log.warning("%s: TLS handshake for %s refused: no certificate yet (%s)",
                    self.label(), server_name or "(no SNI)", why)


def alpn_challenge_file(server_name):
    """The challenge file of an SNI name; None for anything but a DNS name
    (the name comes from the client: it must not reach outside the directory)."""
    if not server_name or not is_host(server_name) or server_name.startswith("."):
        return None
    return server_name + ".pem"


class AcmeManager:
    """Every slot of the running config, the challenge answers, and what
    /certificates reports about them."""

    def __init__(self):
        self.slots = {}                  # listener name -> Slot
        self.store = None
        self.http01_binds = frozenset()  # http binds that answer HTTP-01
        self.alpn_binds = frozenset()    # https binds that answer TLS-ALPN-01
        self._alpn_seen = (None, False)  # (directory mtime, challenges pending)

    def update(self, config):
        """Start, keep or stop slots for `config` (at start and on reload).
        A stored certificate is in place before this returns."""
        gateway = config.gateway
        wanted = [item for item in config.listeners if item.acme]
        if not wanted:
            self.stop()
            self.http01_binds = self.alpn_binds = frozenset()
            return
        self.store = CertStore(gateway.acme_storage)
        http_binds = {(item.host, item.port) for item in config.listeners
                      if item.protocol == "http" and item.port == gateway.acme_http_port}
        self.http01_binds = frozenset(http_binds)
        self.alpn_binds = frozenset((item.host, item.port) for item in wanted if item.port == gateway.acme_tls_port)
        slots = {}
        for listener in wanted:
            available = challenges.available_challenges(config, listener)
            old = self.slots.get(listener.name)
            if old is not None and old.names == listener.host_names and old.directory == gateway.acme_directory \
                    and old.store.root == self.store.root:
                old.settings(gateway, available)
                slots[listener.name] = old
                continue
            slot = Slot(self, listener, gateway, available)
            slots[listener.name] = slot
            slot.start()
        for name, slot in self.slots.items():
            if slots.get(name) is not slot:
                slot.stop()
        self.slots = slots

    def stop(self):
        for slot in self.slots.values():
            slot.stop()
        self.slots = {}

    # -- TLS -----------------------------------------------------------------------

    def context_for(self, listener_name, server_name):
        """The SSLContext of an ACME listener's certificate, or None (the
        handshake is refused, and the log says why)."""
        slot = self.slots.get(listener_name)
        if slot is None:
            return None
        if slot.context is None:
            slot.refused(server_name)
        return slot.context

    def alpn_pending(self):
        """True while some TLS-ALPN-01 challenge waits for the CA (one stat
        of the challenge directory per handshake otherwise)."""
        directory = self.store.challenge_dir(challenges.TLS_ALPN01)
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            return False
        if mtime != self._alpn_seen[0]:
            self._alpn_seen = (mtime, bool(self.store.challenge_keys(challenges.TLS_ALPN01)))
        return self._alpn_seen[1]

    def challenge_context(self, sock, timeout):
        """For a handshake that offers only acme-tls/1 for a name with a
        pending challenge: the context serving its challenge certificate."""
        hello = peek_client_hello(sock, timeout)
        if hello is None or not challenges.offers_only_acme_tls(hello.alpn):
            return None
        key = alpn_challenge_file(hello.server_name)
        if key is None or self.store.read_challenge(challenges.TLS_ALPN01, key) is None:
            log.warning("TLS-ALPN-01 handshake for %r, which has no pending challenge", hello.server_name)
            return None
        path = os.path.join(self.store.challenge_dir(challenges.TLS_ALPN01), key)
        context = base_context(alpn=(challenges.ACME_TLS_ALPN.decode(),))
        try:
            context.load_cert_chain(path)
        except (ssl.SSLError, OSError):
            return None     # withdrawn meanwhile
        log.info("TLS-ALPN-01 validation handshake for %s", hello.server_name)
        return context

    # -- HTTP-01 ---------------------------------------------------------------------

    def http01_answer(self, bind, method: bytes, path: bytes):
        """A ChallengeAnswer for a GET of a pending HTTP-01 token on an http
        bind that answers them; None for anything else (routed as usual)."""
        if not path.startswith(challenges.PREFIX) or method != b"GET" or bind not in self.http01_binds:
            return None
        body = challenges.http01_answer(path, self._key_authorization)
        return None if body is None else challenges.ChallengeAnswer(body)

    def _key_authorization(self, token):
        data = self.store.read_challenge(challenges.HTTP01, token)
        return None if data is None else data.decode("ascii", "replace")
