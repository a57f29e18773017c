"""Sends made in event-loop callbacks, held to the end of the loop iteration.

A send on loopback wakes the process waiting for the bytes, and when that
process sleeps on another core the wake-up is an inter-processor
interrupt: on a virtual machine, a trap to the hypervisor. perf puts a
seventh of the gateway's time there when every send goes out from its own
callback, one wake-up of the backend (or of the load of clients) per
message. Holding the sends of one burst of events and making them together,
just before the loop polls again, wakes each peer once per burst: the first
send costs what it did, the ones after it find the peer awake.

Nothing waits longer than the burst it arrived in: gevent runs callbacks
queued with run_callback before the loop blocks again.
"""
import logging

from gevent import get_hub

log = logging.getLogger("appgw")
_held = []


def later(send, arg):
    """Call send(arg) once the callbacks of this loop iteration have run.

    `send` must check that what it sends is still wanted: the connection
    may have ended in between."""
    if not _held:
        get_hub().loop.run_callback(_flush)
    _held.append((send, arg))


def _flush():
    batch = _held[:]
    del _held[:]   # a send may hold more (a pipelined request): they start a new batch
    for send, arg in batch:
        try:
            send(arg)
        except Exception:
            # Senders end their own connection on a bug; this keeps one
            # from taking the rest of the batch with it.
            log.exception("internal error in a held send")
