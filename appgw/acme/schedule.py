"""When to order, renew and retry: pure functions of times and counts.

- A certificate is renewed once a third of its lifetime is left (for a
  90-day certificate, 30 days before it expires): early enough that weeks
  of failed attempts still end before it does.
- A failed attempt is retried after 1, 2, 4 ... minutes, at most every
  RETRY_CAP seconds; a CA's Retry-After (a rate limit) pushes it later.
"""
import email.utils
import math

RENEW_FRACTION = 1 / 3
RETRY_FIRST = 60.0
RETRY_CAP = 4 * 3600.0
# Wake up at least this often: a clock that jumped, or a certificate another
# worker stored, is noticed within it.
CHECK_INTERVAL = 3600.0
# While another process holds the order lock: how often to look for its result.
LOCK_POLL = 1.0


def renewal_time(not_before: float, not_after: float, fraction: float = RENEW_FRACTION) -> float:
    """When a certificate valid from not_before to not_after is to be renewed."""
    return not_after - (not_after - not_before) * fraction


def retry_delay(failures: int, retry_after=None, first: float = RETRY_FIRST, cap: float = RETRY_CAP) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1, 2, ...);
    `retry_after` (seconds the CA asked for) wins when it is later."""
    delay = min(first * 2 ** max(failures - 1, 0), cap)
    if retry_after is not None and retry_after > delay:
        delay = float(retry_after)
    return delay


def parse_retry_after(value, now: float):
    """Seconds from `now` that a Retry-After header asks for (delta-seconds
    or an HTTP date), None when absent or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    seconds = when.timestamp() - now
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def next_action(now: float, info, status: dict):
    """("order", 0) when an order is due now, else ("wait", seconds).

    `info` is the stored certificate's CertInfo (None: none yet); `status`
    the shared record of the last attempt (its "retry_at" holds back a new
    try after a failure, whichever process made it)."""
    due = now if info is None else renewal_time(info.not_before, info.not_after)
    retry_at = status.get("retry_at")
    if retry_at is not None and not status.get("ok", False):
        due = max(due, retry_at)
    if due <= now:
        return "order", 0.0
    return "wait", min(due - now, CHECK_INTERVAL)
