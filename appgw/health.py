"""Health state of one endpoint: the thresholds of SPEC 6, and who may take traffic.

Probers (active) and the proxy (passive: a failed connect) report here; the
balancer only reads `state`, the admin endpoint reads `state` and `last`.
"""
import logging
import time

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
    `reason` is the reason of the last state change, `since` its time.
    """

    __slots__ = ("label", "state", "healthy_threshold", "unhealthy_threshold",
                 "successes", "failures", "last", "reason", "since")

    def __init__(self, label, healthy_threshold=1, unhealthy_threshold=3):
        self.label = label
        self.state = UNKNOWN
        self.healthy_threshold = max(1, healthy_threshold)
        self.unhealthy_threshold = max(1, unhealthy_threshold)
        self.successes = self.failures = 0
        self.last = None
        self.reason = ""
        self.since = time.time()    # of the last state change (Unknown: of the start)

    def record(self, result: ProbeResult):
        self.last = result
        self._count(result.ok, result.reason)

    def passive_failure(self, time, reason):
        """A connect failure seen while proxying counts as a failed probe."""
        self._count(False, reason + " (while proxying)")

    def _count(self, ok, reason):
        if ok:
            self.failures = 0
            self.successes += 1
            if self.state == UNKNOWN or (self.state == UNHEALTHY and self.successes >= self.healthy_threshold):
                self._change(HEALTHY, reason)
        else:
            self.successes = 0
            self.failures += 1
            if self.state == UNKNOWN or (self.state == HEALTHY and self.failures >= self.unhealthy_threshold):
                self._change(UNHEALTHY, reason)

    def _change(self, state, reason):
        level = logging.WARNING if state == UNHEALTHY else logging.INFO
        log.log(level, "server %s is now %s (was %s): %s", self.label, state, self.state, reason)
        self.state = state
        self.reason = reason
        self.since = time.time()
