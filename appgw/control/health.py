"""Health state of one endpoint: the thresholds of SPEC 6, and who may take traffic.

Probers (active) and the proxy (passive: a failed connect) report here; the
balancer only reads `state`, the admin endpoint reads `state` and `last`.
"""
import logging
import time as _time

from gevent.event import Event

UNKNOWN, HEALTHY, UNHEALTHY = "Unknown", "Healthy", "Unhealthy"

log = logging.getLogger("appgw.health")


class ProbeResult:
    """One probe's outcome: `time` (epoch seconds), `ok`, `status` (the
    HTTP status, None when there was no answer) and a one-line `reason`."""

    __slots__ = ("time", "ok", "status", "reason")

    def __init__(self, time, ok, status, reason):
        self.time, self.ok, self.status, self.reason = time, ok, status, reason

    def __repr__(self):
        return "ProbeResult(ok=%r, status=%r, reason=%r)" % (self.ok, self.status, self.reason)


class PassiveFailure:
    """A connect that failed while proxying: `time` (epoch seconds) and `reason`."""

    __slots__ = ("time", "reason")

    def __init__(self, time, reason):
        self.time, self.reason = time, reason


class Wakeup:
    """Wakes whoever waits for a server to take requests again: fired by
    each successful probe and each successful connect.

    Edge-triggered: `event()` is set by the next fire() after it was taken,
    so a waiter that was woken and still finds no server waits for the next
    success instead of spinning. `fired_at` (monotonic) is the time of the
    last fire, for a waiter to see one that came before it took its event.
    The event is made only when someone waits, so a fire costs a clock
    read when nobody does."""

    __slots__ = ("fired_at", "_event", "waiters", "hurry")

    def __init__(self):
        self.fired_at = float("-inf")
        self._event = None
        self.waiters = 0        # requests waiting for this server now
        self.hurry = None       # the prober's Event: set when a request starts waiting

    def event(self):
        if self._event is None:
            self._event = Event()
        return self._event

    def fire(self):
        self.fired_at = _time.monotonic()
        event, self._event = self._event, None
        if event is not None:
            event.set()


class HealthState:
    """Consecutive-result counting.

    - `Unknown` only until the first result. The first result decides at
      once, whatever the thresholds: a success makes the server Healthy, a
      failure makes it Unhealthy (it never proved it can serve, and the
      balancer prefers Unknown servers to nothing, so a server that is down
      at start must not stay Unknown for threshold x interval).
    - A Healthy server becomes Unhealthy after `unhealthy_threshold`
      failures in a row; an Unhealthy one becomes Healthy again after
      `healthy_threshold` successes in a row.
    - Every change is logged once, with the reason of the result that made it.

    `last` is the last active probe (a passive failure counts toward the
    threshold but is not a probe, so it does not replace `last`);
    `passive` the last passive failure; `since` the time of the last state
    change (of the start while Unknown). The last state change is `reason`,
    `changed` (epoch seconds; None while Unknown) and `source`: "probe"
    or "passive", whichever result made it.

    `wakeup` is fired by every successful probe (and, from the endpoint,
    every successful connect), for requests waiting for a server.
    """

    __slots__ = ("label", "state", "healthy_threshold", "unhealthy_threshold",
                 "successes", "failures", "last", "passive", "reason", "changed", "source", "wakeup", "since")

    def __init__(self, label, healthy_threshold=1, unhealthy_threshold=3):
        self.label = label
        self.state = UNKNOWN
        self.healthy_threshold = max(1, healthy_threshold)
        self.unhealthy_threshold = max(1, unhealthy_threshold)
        self.successes = self.failures = 0
        self.last = None
        self.passive = None
        self.reason = ""
        self.since = _time.time()
        self.changed = None
        self.source = ""
        self.wakeup = Wakeup()

    def adopt(self, old):
        """Carry on from `old` (the same server before a reload that changed
        its probe or settings): state, counts and history; the thresholds
        stay this state's own. Whoever waits on `old` is woken with this."""
        self.state, self.successes, self.failures = old.state, old.successes, old.failures
        self.last, self.passive = old.last, old.passive
        self.reason, self.changed, self.source = old.reason, old.changed, old.source
        self.wakeup = old.wakeup
        self.since = old.since

    def record(self, result: ProbeResult):
        self.last = result
        self._count(result.ok, result.reason, "probe", result.time)
        if result.ok:
            self.wakeup.fire()

    def passive_failure(self, time, reason):
        """A connect failure seen while proxying counts as a failed probe."""
        self.passive = PassiveFailure(time, reason)
        self._count(False, reason + " (while proxying)", "passive", time)

    def _count(self, ok, reason, source, time):
        if ok:
            self.failures = 0
            self.successes += 1
            if self.state == UNKNOWN or (self.state == UNHEALTHY and self.successes >= self.healthy_threshold):
                self._change(HEALTHY, reason, source, time)
        else:
            self.successes = 0
            self.failures += 1
            if self.state == UNKNOWN or (self.state == HEALTHY and self.failures >= self.unhealthy_threshold):
                self._change(UNHEALTHY, reason, source, time)

    def _change(self, state, reason, source, time):
        level = logging.WARNING if state == UNHEALTHY else logging.INFO
        log.log(level, "server %s is now %s (was %s): %s", self.label, state, self.state, reason)
        self.state = state
        self.reason = reason
        self.since = _time.time()
        self.changed = time
        self.source = source
