"""With `workers = N`, the admin endpoint (served by worker 0) shows the
whole gateway: each other worker answers its counters on a private unix
socket, and worker 0 adds them to its own when scraped.

What is summed is in peerstate.py. Health is worker 0's view: every
worker probes the same servers on the same schedule. A worker that does not
answer within PEER_TIMEOUT (it is being restarted, or blocked) is left out,
and the documents say how many workers reported.
"""
import json
import logging
import os
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
    directory: str      # the master's private directory of worker sockets
    index: int          # this worker's
    count: int          # workers in all

    @property
    def path(self):
        return socket_path(self.directory, self.index)


def socket_path(directory, index):
    return os.path.join(directory, "worker-%d.sock" % index)


# -- the sockets ---------------------------------------------------------------

class PeerServer:
    """Worker k > 0: answers each connection with its state, then closes it."""

    def __init__(self, path, state):
        self.path = path
        self.state = state          # () -> the dumped state
        self.server = None

    def start(self):
        try:
            os.unlink(self.path)    # a worker restarted in the same place
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(16)
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
        try:
            os.unlink(self.path)
        except OSError:
            pass


def gather(directory, count, timeout=PEER_TIMEOUT):
    """The states of workers 1..count-1, asked at once; those that do not
    answer in time (or answer nonsense) are left out."""
    jobs = [gevent.spawn(_ask, socket_path(directory, index), timeout) for index in range(1, count)]
    gevent.joinall(jobs, timeout=timeout + 0.1)
    states = []
    for job in jobs:
        if job.ready() and job.value is not None:
            states.append(job.value)
        else:
            job.kill(block=False)
    return states


def _ask(path, timeout):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
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
        log.debug("worker at %s did not report: %s", path, exc)
        return None
    finally:
        sock.close()
