"""With `workers = N`, the admin endpoint (served by worker 0) shows the
whole gateway: each other worker answers its counters on a unix socket of
its own, and worker 0 adds them to its own when scraped.

The sockets are in Linux's abstract namespace, named after the master's pid
and the worker's index: nothing on disk to create, clean up or outgrow the
108-byte path limit. What is summed, and how the sums are kept from going
down when a worker is slow or replaced, is in peerstate.py. Health is
worker 0's view: every worker probes the same servers on the same schedule.
"""
import json
import logging
import socket
from dataclasses import dataclass

import gevent
from gevent.server import StreamServer


log = logging.getLogger("appgw.peers")

PEER_TIMEOUT = 0.5   # seconds worker 0 waits for each other worker's counters
_MAX_STATE = 16 << 20


@dataclass(frozen=True)
class Peers:
    """Where this worker stands among the others."""
    master: int         # the master's pid: the sockets' family name
    index: int          # this worker's
    count: int          # the workers the master runs

    def address(self, index):
        return "\0appgw-%d-worker-%d" % (self.master, index)


# -- the sockets ---------------------------------------------------------------

class PeerServer:
    """Worker k > 0: answers each connection with its state, then closes it."""

    def __init__(self, address, state):
        self.address = address
        self.state = state          # () -> the dumped state
        self.server = None

    def start(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.address)     # a replaced worker's went with its process
            sock.listen(16)
        except OSError as exc:
            # Serving matters more: worker 0 then counts this worker as not reporting.
            sock.close()
            log.warning("the admin endpoint will not see this worker's counters: %s", exc)
            return
        self.server = StreamServer(sock, self._answer)
        self.server.start()

    def _answer(self, sock, _address):
        try:
            sock.sendall(json.dumps(self.state()).encode())
        except OSError:
            pass

    def stop(self):
        if self.server is not None:
            self.server.close()
            self.server = None


def gather(peers, timeout=PEER_TIMEOUT):
    """{index: state, or None when that worker did not answer in time (or
    answered nonsense)} for workers 1..count-1, asked at once."""
    jobs = {index: gevent.spawn(_ask, peers.address(index), timeout) for index in range(1, peers.count)}
    gevent.joinall(jobs.values(), timeout=timeout + 0.1)
    answers = {}
    for index, job in jobs.items():
        if not job.ready():
            job.kill(block=False)
        answers[index] = job.value if job.ready() else None
    return answers


def _ask(address, timeout):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        chunks, size = [], 0
        while size <= _MAX_STATE:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
        state = json.loads(b"".join(chunks))
        return state if isinstance(state, dict) else None
    except (OSError, ValueError) as exc:
        log.debug("worker at %r did not report: %s", address, exc)
        return None
    finally:
        sock.close()
