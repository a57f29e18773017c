"""Health state of one endpoint: the thresholds of SPEC 6, and who may take traffic.

Probers (active) and the proxy (passive: a failed connect) report here; the
balancer only reads `state`.
"""
import logging

UNKNOWN, HEALTHY, UNHEALTHY = "Unknown", "Healthy", "Unhealthy"

log = logging.getLogger("appgw.health")


class ProbeResult:
    __slots__ = ("time", "ok", "status", "reason")

    def __init__(self, time, ok, status, reason):
        self.time, self.ok, self.status, self.reason = time, ok, status, reason


class HealthState:
    """Consecutive-result counting: Unhealthy after `unhealthy_threshold`
    failures in a row, Healthy after `healthy_threshold` successes in a row.
    Unknown only until the first result."""

    __slots__ = ("label", "state", "healthy_threshold", "unhealthy_threshold",
                 "successes", "failures", "last")

    def __init__(self, label, healthy_threshold=1, unhealthy_threshold=3):
        self.label = label
        self.state = UNKNOWN
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.successes = self.failures = 0
        self.last = None

    def record(self, result: ProbeResult):
        self.last = result
        if result.ok:
            self.failures = 0
            self.successes += 1
            if self.state != HEALTHY and (self.state == UNKNOWN or self.successes >= self.healthy_threshold):
                self._change(HEALTHY, result.reason)
        else:
            self.successes = 0
            self.failures += 1
            if self.state != UNHEALTHY and (self.state == UNKNOWN or self.failures >= self.unhealthy_threshold):
                # An Unknown server that fails its first probe leaves at once:
                # it never proved it could serve.
                if self.state == UNKNOWN and self.failures < self.unhealthy_threshold:
                    return
                self._change(UNHEALTHY, result.reason)

    def passive_failure(self, time, reason):
        """A connect failure seen while proxying counts as a failed probe."""
        self.record(ProbeResult(time, False, None, reason))

    def _change(self, state, reason):
        log.warning("server %s is now %s (was %s): %s", self.label, state, self.state, reason) \
            if state == UNHEALTHY else \
            log.info("server %s is now %s (was %s): %s", self.label, state, self.state, reason)
        self.state = state
