"""The counters of several workers summed for the admin endpoint: each
counter, histogram and open-connection count is the sum of the workers',
through the JSON the workers exchange."""
import json
from types import SimpleNamespace

import pytest

from appgw.control.accesslog import Entry
from appgw.control.peerstate import dump, endpoint_key, merged
from appgw.control.stats import Stats

pytestmark = pytest.mark.sansio


def finished(stats, status, server="10.0.0.1:80", listener="web", seconds=0.02, ended=""):
    entry = Entry("127.0.0.1", listener)
    entry.rule, entry.status, entry.server = "main", status, server
    entry.received, entry.sent, entry.start, entry.ended = 100, 1000, 10.0, ended
    stats.finished(entry, now=10.0 + seconds)


def endpoint(label, active, sessions):
    return SimpleNamespace(label=label, active=active, sessions=set(range(sessions)))


def worker(requests, errors, sessions_open, active):
    stats = Stats()
    for _ in range(requests):
        finished(stats, 200)
    for _ in range(errors):
        finished(stats, 502, seconds=2.0)
    finished(stats, 101, ended="client_close")
    stats.connections_active["web"] += active
    stats.websocket_active += sessions_open
    stats.backend_seconds["pool"].observe(0.02)
    stats.probes[("pool", "ok")] += 3
    stats.http2_requests += 1
    servers = [("pool", [("settings", endpoint("10.0.0.1:80", active + sessions_open, sessions_open))])]
    return stats, json.loads(json.dumps(dump(stats, servers)))   # as it crosses the socket


def test_every_counter_is_the_sum_of_the_workers():
    own_stats, own = worker(requests=5, errors=1, sessions_open=2, active=3)
    _, other = worker(requests=7, errors=0, sessions_open=1, active=1)
    stats, endpoints = merged(own, [other])

    assert stats.started == own_stats.started
    assert stats.requests[("web", "main", "2xx")] == 12
    assert stats.requests[("web", "main", "5xx")] == 1
    assert stats.requests[("web", "main", "1xx")] == 2
    assert stats.websocket_ended["web"] == 2
    assert stats.connections_active["web"] == 4
    assert stats.websocket_active == 3
    assert stats.bytes_received == 100 * 15 and stats.bytes_sent == 1000 * 15
    assert stats.probes[("pool", "ok")] == 6
    assert stats.http2_requests == 2
    assert stats.backend_seconds["pool"].count == 2

    server = stats.servers["10.0.0.1:80"]
    assert (server.requests, server.errors, server.websocket_sessions) == (13, 1, 2)
    assert server.seconds.count == 13
    # The one slow error is the top 1 of 13: the p99 lies in its bucket.
    assert server.seconds.quantile(0.5) < 0.025 < 1.0 < server.seconds.quantile(0.99) <= 2.5

    key = endpoint_key("pool", "settings", SimpleNamespace(label="10.0.0.1:80"))
    assert endpoints == {key: [5 + 2, 3]}     # (active incl. sessions, sessions) of both workers


def test_one_worker_alone_is_itself():
    own_stats, own = worker(requests=2, errors=0, sessions_open=0, active=0)
    stats, _ = merged(own, [])
    assert stats.requests == own_stats.requests
    assert stats.servers["10.0.0.1:80"].seconds.counts == own_stats.servers["10.0.0.1:80"].seconds.counts


def test_a_histogram_of_other_buckets_is_refused():
    _, own = worker(requests=1, errors=0, sessions_open=0, active=0)
    _, other = worker(requests=1, errors=0, sessions_open=0, active=0)
    other["backend_seconds"]["pool"][0].append(1)
    with pytest.raises(ValueError):
        merged(own, [other])


def state_of(requests, pid, since, open_connections=0):
    stats = Stats()
    for _ in range(requests):
        finished(stats, 200)
    stats.connections_active["web"] += open_connections
    return json.loads(json.dumps(dump(stats, [], since=since, pid=pid)))


def answered_total(book, own, answers):
    book.update(answers)
    stats, _ = book.total(own)
    return stats.requests[("web", "main", "2xx")], stats.connections_active["web"]


def test_the_sums_never_go_down_when_a_worker_is_slow_or_replaced():
    from appgw.control.peerstate import PeerBook

    own = state_of(10, pid=100, since=1.0)
    book = PeerBook(own_since=1.0)
    assert answered_total(book, own, {1: state_of(5, 101, 1.1, open_connections=2)}) == (15, 2)
    # Worker 1 does not answer in time: it counts with what it said last.
    assert answered_total(book, own, {1: None}) == (15, 2)
    # Worker 1 was replaced: its 5 stay; the new one adds its own 3; the old
    # one's open connections went with it.
    assert answered_total(book, own, {1: state_of(3, 102, 50.0)}) == (18, 0)
    assert answered_total(book, own, {1: state_of(4, 102, 50.0, open_connections=1)}) == (19, 1)


def test_a_replaced_worker_0_counts_from_its_own_start():
    """The admin endpoint's worker was replaced: the others' counters before
    it began are not counted, so the sums start again from zero (a reset,
    as after a restart) and grow from there."""
    from appgw.control.peerstate import PeerBook

    own = state_of(0, pid=200, since=100.0)
    book = PeerBook(own_since=100.0)
    assert answered_total(book, own, {1: state_of(40, 101, 1.1, open_connections=3)}) == (0, 3)
    assert answered_total(book, own, {1: state_of(46, 101, 1.1)}) == (6, 0)
    # ...and when that older worker is replaced in turn, its 6 stay counted.
    assert answered_total(book, own, {1: state_of(2, 103, 150.0)}) == (8, 0)
