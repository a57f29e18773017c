"""Request rates for the status page: per-listener totals sampled on a fixed
step, kept for the last ten minutes.

Sans-io: the admin endpoint's sampling greenlet calls `sample(now, totals)`
every STEP seconds with a monotonic clock; the page's JSON asks for rates.
Totals are the counters of appgw.stats, which only grow, so a rate is a
difference of two samples divided by the time between them.
"""
import collections

STEP = 5.0        # seconds between samples
SPAN = 600.0      # seconds of history kept: the sparkline's width
WINDOW = 60.0     # "requests/s over the last minute"


class RateHistory:
    """A ring buffer of (time, {listener: total}) samples."""

    def __init__(self, step=STEP, span=SPAN):
        self.step = step
        self.samples = collections.deque(maxlen=int(span / step) + 1)

    def sample(self, now, totals):
        self.samples.append((now, dict(totals)))

    def series(self, listener):
        """Requests/s in each step between consecutive samples, oldest first
        (at most SPAN / STEP values); a listener added later starts from 0."""
        out, previous = [], None
        for when, totals in self.samples:
            total = totals.get(listener, 0)
            if previous is not None and when > previous[0]:
                out.append(max(0, total - previous[1]) / (when - previous[0]))
            previous = (when, total)
        return out

    def rate(self, listener, now, total, window=WINDOW):
        """Requests/s from the sample nearest `window` seconds ago (or the
        oldest, when there is less history) up to `total` counted `now`.
        None before the first sample."""
        base = None
        for when, totals in self.samples:
            if base is None or when <= now - window:
                base = (when, totals.get(listener, 0))
            else:
                break
        if base is None or now <= base[0]:
            return None
        return max(0, total - base[1]) / (now - base[0])
