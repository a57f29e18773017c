"""Health states and probe matching, without a network (SPEC 6)."""
import logging
import math
import socket
import ssl

import pytest
import requests
import urllib3

from appgw.config import Probe, parse_config
from appgw.control.health import HEALTHY, UNHEALTHY, UNKNOWN, HealthState, ProbeResult
from appgw.control.prober import JITTER, failure_reason, format_ranges, next_due

pytestmark = pytest.mark.sansio

OK = ProbeResult(0, True, 200, "status 200")
FAIL = ProbeResult(0, False, 500, "status 500 not in 200-399")


def states(health, results):
    seen = []
    for result in results:
        health.record(result)
        seen.append(health.state)
    return seen


def test_unknown_until_the_first_answer_which_decides_at_once():
    assert HealthState("a").state == UNKNOWN
    assert states(HealthState("a", healthy_threshold=3), [OK]) == [HEALTHY]
    # A server that fails its first probe never proved it can serve.
    assert states(HealthState("a", unhealthy_threshold=3), [FAIL]) == [UNHEALTHY]


def test_unhealthy_after_threshold_consecutive_failures():
    health = HealthState("a", unhealthy_threshold=3)
    assert states(health, [OK, FAIL, FAIL, OK, FAIL, FAIL, FAIL, FAIL]) == \
        [HEALTHY, HEALTHY, HEALTHY, HEALTHY, HEALTHY, HEALTHY, UNHEALTHY, UNHEALTHY]


def test_healthy_again_after_threshold_consecutive_successes():
    health = HealthState("a", healthy_threshold=2, unhealthy_threshold=1)
    assert states(health, [OK, FAIL, OK, FAIL, OK, OK, OK]) == \
        [HEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY, HEALTHY, HEALTHY]


def test_thresholds_below_one_act_as_one():
    health = HealthState("a", healthy_threshold=0, unhealthy_threshold=0)
    assert states(health, [OK, FAIL, OK]) == [HEALTHY, UNHEALTHY, HEALTHY]


def test_each_change_is_logged_once_with_its_reason(caplog):
    health = HealthState("10.0.0.4:80 (pool app)", unhealthy_threshold=2)
    with caplog.at_level(logging.INFO, logger="appgw.health"):
        states(health, [OK, OK, FAIL, FAIL, FAIL, FAIL, OK, OK])
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("INFO", "server 10.0.0.4:80 (pool app) is now Healthy (was Unknown): status 200"),
        ("WARNING", "server 10.0.0.4:80 (pool app) is now Unhealthy (was Healthy): status 500 not in 200-399"),
        ("INFO", "server 10.0.0.4:80 (pool app) is now Healthy (was Unhealthy): status 200"),
    ]
    assert health.reason == "status 200"


def test_last_keeps_the_last_probe():
    health = HealthState("a")
    assert health.last is None
    health.record(OK)
    health.record(FAIL)
    assert health.last is FAIL


def test_passive_failure_counts_toward_the_threshold_but_is_not_a_probe():
    health = HealthState("a", unhealthy_threshold=2)
    health.record(OK)
    health.passive_failure(1.0, "connection refused")
    assert health.state == HEALTHY
    health.passive_failure(2.0, "connection refused")
    assert health.state == UNHEALTHY
    assert health.reason == "connection refused (while proxying)"
    assert health.last is OK


def test_a_success_breaks_a_run_of_passive_failures():
    health = HealthState("a", unhealthy_threshold=2)
    health.record(OK)
    health.passive_failure(1.0, "connection refused")
    health.record(OK)
    health.passive_failure(2.0, "connection refused")
    assert health.state == HEALTHY


# --- match_status ----------------------------------------------------------------

def test_default_probe_matches_200_to_399():
    probe = Probe(name="")
    assert [probe.status_matches(s) for s in (199, 200, 301, 399, 400, 500)] == \
        [False, True, True, True, False, False]


MINIMAL = """
[[listeners]]
name = "http"
bind = "127.0.0.1:8080"
[[backend_pools]]
name = "app"
servers = ["127.0.0.1"]
[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
"""


def test_match_status_codes_and_ranges_from_the_config():
    config = parse_config(MINIMAL + """
[[probes]]
name = "p"
match_status = ["200", "204-206", "418"]
""")
    probe = config.probe("p")
    assert [s for s in (200, 201, 204, 205, 206, 207, 418, 500) if probe.status_matches(s)] == \
        [200, 204, 205, 206, 418]
    assert format_ranges(probe.match_status) == "200,204-206,418"


def test_default_probe_values():
    probe = parse_config(MINIMAL).probe("")
    assert (probe.path, probe.interval, probe.timeout, probe.unhealthy_threshold,
            probe.healthy_threshold, format_ranges(probe.match_status)) == ("/", 30, 30, 3, 1, "200-399")


# --- failure reasons -------------------------------------------------------------

def _wrapped(inner):
    """An exception as requests raises it around a connect failure."""
    try:
        try:
            raise inner
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(None, "failed") from exc
    except urllib3.exceptions.NewConnectionError as exc:
        return requests.exceptions.ConnectionError(exc)


def _ssl_error():
    """A real ssl.SSLError: a TLS client handshake against a plain-text answer."""
    incoming = ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, ssl.MemoryBIO(), server_hostname="x")
    for _ in range(3):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            incoming.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        except ssl.SSLError as exc:
            return exc
    raise AssertionError("no TLS error")


@pytest.mark.parametrize("exc, reason", [
    (_wrapped(ConnectionRefusedError(111, "Connection refused")), "connection refused"),
    (_wrapped(socket.gaierror(-2, "Name or service not known")), "cannot resolve: Name or service not known"),
    (requests.exceptions.ReadTimeout("read timed out"), "timeout"),
    (_wrapped(TimeoutError("timed out")), "timeout"),
    (requests.exceptions.SSLError(_ssl_error()), "TLS error: wrong version number"),
    (_wrapped(FileNotFoundError(2, "No such file or directory")), "no such socket"),
    (_wrapped(OSError(113, "No route to host")), "connection failed: no route to host"),
])
def test_failure_reasons(exc, reason):
    assert failure_reason(exc) == reason


# --- when probes run --------------------------------------------------------------

def draws(n=2001):
    """Jitter draws spread evenly over [1 - JITTER, 1 + JITTER]."""
    return [1 - JITTER + 2 * JITTER * i / (n - 1) for i in range(n)]


@pytest.mark.parametrize("interval, tick", [(1.0, 0.1), (0.5, 0.05), (30.0, 0.1), (0.005, 0.001)])
def test_probes_wake_on_a_grid_and_keep_their_interval_on_average(interval, tick):
    started = 12345.678
    dues = [next_due(started, interval, d) for d in draws()]
    assert all(abs(due / tick - round(due / tick)) < 1e-6 for due in dues), "on the grid"
    waits = [due - started for due in dues]
    assert abs(sum(waits) / len(waits) - interval) < tick / 20 + 1e-9
    assert max(waits) - min(waits) <= 2 * JITTER * interval + tick + 1e-9
    # The jitter still spreads probers over every tick it reaches: bursts
    # are a tick's worth of probes, and a tick is never more than 100 ms.
    assert len({round(due / tick) for due in dues}) >= max(2, int(2 * JITTER * interval / tick))


@pytest.mark.parametrize("interval", [5e-324, 1e-305, 1e-9])
def test_a_tiny_interval_still_gives_a_time_to_wake(interval):
    due = next_due(100.0, interval, 1 + JITTER)
    assert math.isfinite(due) and abs(due - 100.0) <= 0.001


# --- why a server is in its state; state kept across a reload ------------------

def test_the_last_change_names_its_source_and_the_passive_failure_is_kept():
    health = HealthState("a", unhealthy_threshold=1)
    assert (health.changed, health.source, health.passive) == (None, "", None)
    health.record(ProbeResult(10.0, True, 200, "status 200"))
    assert (health.changed, health.source, health.reason) == (10.0, "probe", "status 200")
    health.passive_failure(20.0, "connection refused")
    assert health.state == UNHEALTHY
    assert (health.changed, health.source, health.reason) == (20.0, "passive", "connection refused (while proxying)")
    assert (health.passive.time, health.passive.reason) == (20.0, "connection refused")
    assert health.last.ok is True


def test_adopt_goes_on_from_the_old_state_with_the_new_thresholds():
    old = HealthState("a", unhealthy_threshold=3)
    old.record(OK)
    old.record(FAIL)
    new = HealthState("a", unhealthy_threshold=2)
    new.adopt(old)
    assert (new.state, new.last, new.reason) == (HEALTHY, FAIL, "status 200")
    new.record(FAIL)        # the second failure in a row: 2 of the new threshold
    assert new.state == UNHEALTHY
    assert new.wakeup is old.wakeup


# --- waking requests that wait for a server (retry_window) --------------------------

def test_wakeup_is_edge_triggered():
    from appgw.control.health import Wakeup

    wakeup = Wakeup()
    wakeup.fire()                   # nobody waits: only the time is noted
    first = wakeup.event()
    assert not first.is_set()
    wakeup.fire()
    assert first.is_set()
    second = wakeup.event()         # a waiter that found nothing waits for the next success
    assert second is not first and not second.is_set()


def test_wait_for_server_counts_a_success_from_before_the_wait_and_times_out_otherwise():
    import time

    from gevent.event import Event

    from appgw.upstream.balancer import Backend
    from appgw.config import BackendPool, BackendSettings
    from appgw.upstream.endpoint import Endpoint

    endpoints = [Endpoint(("p", f"s{i}", None, None), f"s{i}", host="127.0.0.1", port=9) for i in range(2)]
    backend = Backend(BackendPool(name="p"), BackendSettings(name="s", retry_window=1), endpoints)
    since = time.monotonic()
    endpoints[1].health.record(ProbeResult(0, True, 200, "status 200"))
    assert backend.wait_for_server(since, time.monotonic() + 5) is True     # at once: it came after `since`

    started = time.monotonic()
    assert backend.wait_for_server(time.monotonic(), started + 0.05) is False
    assert 0.05 <= time.monotonic() - started < 0.5

    abort = Event()
    abort.set()
    assert backend.wait_for_server(time.monotonic(), time.monotonic() + 5, abort) is False
    assert all(e.health.wakeup.waiters == 0 for e in endpoints)
