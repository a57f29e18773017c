"""One certificate order over RFC 8555, with certbot's `acme` library.

`AcmeClient.obtain(names, key_pem, solvers)` registers (or finds) the
account, orders one certificate covering every name (SAN), answers one
challenge per authorization with the first solver the CA offers a type
for, and returns the full chain (PEM). Whatever goes wrong comes out as
AcmeError carrying the CA's problem type and detail, and the Retry-After
the CA sent with it, if any.

Blocking calls over `requests`: under gevent's monkey patching they wait in
the hub, so the order runs in its own greenlet without holding up traffic.
"""
import datetime
import logging
import re
import time

import josepy as jose
import requests
from acme import client, errors, messages
from acme import crypto_util
from cryptography.hazmat.primitives import serialization

from appgw import __version__
from appgw.acme.schedule import parse_retry_after

log = logging.getLogger("appgw.acme")

ORDER_TIMEOUT = 90
NETWORK_TIMEOUT = 30


class AcmeError(Exception):
    """A failed order: `kind` is the CA's problem type (or what failed on
    our side), `detail` its explanation, `retry_after` seconds or None."""

    def __init__(self, kind, detail, retry_after=None):
        super().__init__("%s: %s" % (kind, detail))
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


class _Network(client.ClientNetwork):
    """Keeps the last response, whose Retry-After the library drops when it
    turns an error answer into an exception."""

    last_response = None

    def _send_request(self, method, url, *args, **kwargs):
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response


class AcmeClient:
    def __init__(self, directory_url, account_key_pem, email="", trusted_root="",
                 timeout=NETWORK_TIMEOUT):
        key = serialization.load_pem_private_key(account_key_pem, password=None)
        self.jwk = jose.JWKEC(key=key)
        self.directory_url = directory_url
        self.email = email
        self.net = _Network(key=self.jwk, alg=jose.ES256, verify_ssl=trusted_root or True,
                            user_agent="appgw/%s" % __version__, timeout=timeout)
        self.acme = None

    # -- account ---------------------------------------------------------------

    def _connect(self):
        """The directory, and the account of our key (created when new: the
        key is the account, so a CA that forgot it simply gets it again)."""
        directory = client.ClientV2.get_directory(self.directory_url, self.net)
        self.acme = client.ClientV2(directory, self.net)
        self.net.account = None
        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True)
        try:
            self.acme.new_account(registration)
        except errors.ConflictError as exc:   # the key has an account already
            self.net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())

    # -- the order -------------------------------------------------------------

    def obtain(self, names, key_pem, solvers, timeout=ORDER_TIMEOUT) -> bytes:
        """The full chain for `names`. `solvers` maps a challenge type to an
        object with publish(name, challenge, key_authorization) and
        withdraw(), tried in the mapping's order."""
        try:
            return self._obtain(names, key_pem, solvers, timeout)
        except AcmeError:
            raise
        except messages.Error as exc:
            raise self._error(exc) from None
        except errors.ValidationError as exc:
            raise self._validation_error(exc) from None
        except errors.IssuanceError as exc:
            raise self._error(exc.error) from None
        except errors.TimeoutError:
            raise AcmeError("timeout", "the order was not done within %ds" % timeout) from None
        except requests.RequestException as exc:
            raise AcmeError("connection", "cannot reach %s: %s" % (self.directory_url, _reason(exc))) from None
        except (errors.Error, ValueError, KeyError, jose.DeserializationError) as exc:
            raise AcmeError("protocol", "unexpected answer from %s: %s" % (self.directory_url, exc)) from None
        finally:
            for solver in solvers.values():
                solver.withdraw()

    def _obtain(self, names, key_pem, solvers, timeout):
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        self._connect()
        csr = crypto_util.make_csr(key_pem, list(names))
        order = self.acme.new_order(csr)
        log.info("order %s for %s", order.uri, ", ".join(names))
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue    # validated earlier for this account
            name = authz.body.identifier.value
            challb, solver = self._choose(authz, solvers)
            key_authorization = challb.chall.key_authorization(self.jwk)
            solver.publish(name, challb.chall, key_authorization)
            log.info("answering %s for %s", challb.chall.typ, name)
            self.acme.answer_challenge(challb, challb.chall.response(self.jwk))
        order = self.acme.poll_and_finalize(order, deadline)
        return order.fullchain_pem.encode("ascii")

    @staticmethod
    def _choose(authz, solvers):
        offered = {challb.chall.typ: challb for challb in authz.body.challenges}
        for kind, solver in solvers.items():
            if kind in offered:
                return offered[kind], solver
        raise AcmeError("noChallenge", "the CA offers %s for %s; appgw can answer %s here" % (
            ", ".join(sorted(offered)) or "no challenge", authz.body.identifier.value,
            " or ".join(solvers) or "none"))

    # -- errors ----------------------------------------------------------------

    def _retry_after(self):
        response = self.net.last_response
        if response is None or response.ok:
            return None
        return parse_retry_after(response.headers.get("Retry-After"), time.time())

    def _error(self, problem):
        detail = problem.detail or problem.description or "no detail given"
        for sub in problem.subproblems or ():
            detail += "; %s: %s" % (sub.identifier.value if sub.identifier else "", sub.detail)
        return AcmeError(problem.typ, detail, self._retry_after())

    def _validation_error(self, exc):
        problems = []
        for authz in exc.failed_authzrs:
            for challb in authz.body.challenges:
                if challb.error is not None:
                    problems.append((authz.body.identifier.value, challb.chall.typ, challb.error))
        if not problems:
            return AcmeError("validation", str(exc))
        name, kind, problem = problems[0]
        error = AcmeError(problem.typ, "%s for %s: %s" % (kind, name, problem.detail or problem.description))
        error.challenge = kind
        return error


def _reason(exc):
    """requests nests the cause (urllib3's error, then the OSError): its
    innermost error says it best, e.g. "Connection refused"."""
    for _ in range(8):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return errno.group(1).strip() if errno else text[:300]
