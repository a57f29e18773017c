"""What the admin endpoint and `--check` say about certificates: every https
listener's names, where its certificate comes from (a file or the ACME CA),
issuing CA, expiry and the last renewal attempt.

`certificates(runtime)` is the document of GET /certificates (and the
"certificates" of /status.json, which the status page draws); the expiry
metric and the --check lines are made from the same facts.
"""
import time

from prometheus_client.core import GaugeMetricFamily

from appgw.acme.challenges import available_challenges, preferred_challenges
from appgw.acme.store import CertStore, cert_info, iso, slot_name

WARN_DAYS = 14


def _file_info(path):
    try:
        with open(path, "rb") as f:
            return cert_info(f.read()), None
    except (OSError, ValueError, IndexError) as exc:
        return None, "cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc)


def listener_certificate(listener, gateway, acme=None, now=None):
    """One https listener's entry; `acme` is the running AcmeManager (None
    for --check, which reads the storage directly)."""
    now = time.time() if now is None else now
    entry = {"listener": listener.name, "bind": listener.address, "names": list(listener.host_names)}
    status, problem = {}, None
    if listener.acme:
        slot = acme.slots.get(listener.name) if acme is not None else None
        store = slot.store if slot is not None else CertStore(gateway.acme_storage)
        name = slot.slot if slot is not None else slot_name(listener.host_names, gateway.acme_directory)
        stored = slot.stored if slot is not None else store.load(name)
        info = stored.info if stored is not None else None
        status = store.status(name)
        entry.update(source="acme", acme_directory=gateway.acme_directory, storage=store.slot_dir(name))
        if info is None:
            problem = "no certificate yet"
    else:
        info, problem = _file_info(listener.certificate)
        entry.update(source="file", file=listener.certificate)
    entry.update({
        "signed_by": info.issuer if info else None,
        "serial": info.serial if info else None,
        "certificate_names": list(info.names) if info else [],
        "not_before": iso(info.not_before) if info else None,
        "not_after": iso(info.not_after) if info else None,
        "expires_in_seconds": round(info.not_after - now) if info else None,
        "problem": problem,
        "warning": _warning(info, problem, now),
        "last_renewal": {"time": iso(status["time"]), "ok": status.get("ok", False),
                         "result": status.get("result", "")} if status.get("time") else None,
        "next_attempt": iso(status["retry_at"]) if status.get("retry_at") and not status.get("ok") else None,
    })
    return entry


def _warning(info, problem, now):
    """What the status page flags: no certificate, expired, or expiring
    within WARN_DAYS (file certificates too); None when all is well."""
    if info is None:
        return problem
    left = info.not_after - now
    if left < 0:
        return "expired"
    if left < WARN_DAYS * 86400:
        return "expires within %d days (%.1f days left)" % (WARN_DAYS, left / 86400)
    return None


def certificates(runtime):
    """The JSON document of GET /certificates."""
    config = runtime.config
    return {"certificates": [listener_certificate(item, config.gateway, runtime.acme)
                             for item in config.listeners if item.protocol == "https"]}


class ExpiryCollector:
    """appgw_certificate_expiry_seconds{listener}: seconds until not-after
    (negative once expired; no sample while a listener has no certificate)."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        family = GaugeMetricFamily("appgw_certificate_expiry_seconds",
                                   "Seconds until the certificate of each https listener expires.",
                                   labels=["listener"])
        for entry in certificates(self.runtime)["certificates"]:
            if entry["expires_in_seconds"] is not None:
                family.add_metric([entry["listener"]], entry["expires_in_seconds"])
        yield family


def check_lines(config, listener):
    """The --check lines of an ACME listener: the CA and what is stored."""
    if not listener.acme:
        return []
    entry = listener_certificate(listener, config.gateway)
    kinds = " then ".join(preferred_challenges(available_challenges(config, listener)))
    lines = [f"  certificate: ACME from {config.gateway.acme_directory} ({kinds}), stored in {entry['storage']}"]
    if entry["not_after"] is None:
        lines.append("    stored: nothing yet (ordered at start)")
    else:
        expired = " (expired)" if entry["expires_in_seconds"] < 0 else ""
        lines.append(f"    stored: serial {entry['serial']} from {entry['signed_by']}, "
                     f"valid until {entry['not_after']}{expired}")
    last = entry["last_renewal"]
    if last is not None:
        lines.append(f"    last attempt {last['time']}: {'ok' if last['ok'] else 'failed'}: {last['result']}")
    return lines
