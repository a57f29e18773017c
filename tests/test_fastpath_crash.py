"""A bug met in a fast-path callback ends only the connection it served.

The fast path (appgw/downstream/h1_fast.py) serves a parked keep-alive
connection's request from libev callbacks in the hub; an unexpected
exception there (neither a ClientError nor a BackendError) goes to
FastPath.crash(), which must log it once, close that client connection,
let go of its backend connection (closed, not pooled: its state is
unknown) and leave the loop serving everyone else.

Each case runs tests/fastpath_crash_child.py in its own process, gevent
patched as appgw is (this pytest process stays unpatched): the real
listener, Connection, config and snapshot on 127.0.0.1 with a tiny
keep-alive backend. The bug is handed in with what the gateway serves (a
site, a rewrite set, the counters), never by patching appgw's code; the
child reports what the client, the backend and the endpoint saw as JSON.
"""
import json
import os
import subprocess
import sys

from harness import REPO

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastpath_crash_child.py")
CRASH = "internal error serving a request; closing the connection"


def run_child(case):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, CHILD, case], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    # A greenlet's uncaught error is printed by gevent's hub, not logged.
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return json.loads(lines[-1])


def assert_crashed_once_in_a_callback(verdict, frames):
    """One log line, for the injected bug, logged from the hub (a callback),
    raised where `frames` say; nothing else logged as an error."""
    assert [r["message"] for r in verdict["internal_errors"]] == [CRASH], verdict["internal_errors"]
    (record,) = verdict["internal_errors"]
    assert record["error"] == "InjectedBug"
    assert record["in_hub"], "the bug was met on a greenlet, not in a fast-path callback"
    assert record["frames"][:len(frames)] == frames, record["frames"]
    assert verdict["errors_logged"] == [CRASH]


def assert_others_served(verdict):
    assert verdict["first_status"] == 200 and verdict["pooled_before"] == 1
    assert verdict["other_status"] == 200 and verdict["other_body"] == "ok"
    assert verdict["active_at_end"] == 0


def test_a_bug_while_routing_closes_that_connection_unanswered_and_keeps_the_pool():
    verdict = run_child("routing")
    assert_crashed_once_in_a_callback(verdict, ["next_request", "begin", "take", "listener_for"])
    assert verdict["bug_connection_closed"], "the connection was left open after the bug"
    assert verdict["bug_answer_bytes"] == 0
    # No backend connection was bound yet: the warm one stays pooled and healthy.
    assert verdict["active_after_bug"] == 0
    assert verdict["warm_connection_requests"] == 1 and verdict["warm_connection_open"]
    assert [(c["open_here"], c["open_at_backend"]) for c in verdict["idle_after_bug"]] == [(True, True)]
    assert_others_served(verdict)


def test_a_bug_with_the_request_in_flight_closes_the_client_and_its_backend_connection():
    verdict = run_child("rules")
    assert_crashed_once_in_a_callback(verdict, ["on_backend", "answer_head", "respond"])
    assert verdict["bug_connection_closed"], "the connection was left open after the bug"
    assert verdict["bug_answer_bytes"] == 0     # the answer head had not been made
    # The backend answered on the pooled connection; the gateway then closed
    # it (the backend saw the EOF) and did not pool it again.
    assert verdict["active_after_bug"] == 0, "the crashed exchange still counts as active"
    assert verdict["warm_connection_requests"] == 2
    assert not verdict["warm_connection_open"], "the backend connection of the crashed exchange was not closed"
    assert verdict["idle_after_bug"] == []
    assert_others_served(verdict)


def test_a_bug_in_a_held_send_after_the_answer_closes_the_client_and_keeps_the_clean_connection():
    verdict = run_child("counting")
    assert_crashed_once_in_a_callback(verdict, ["send_answer", "to_client", "finish"])
    (record,) = verdict["internal_errors"]
    assert "_flush" in record["callers"], record["callers"]    # sent with the burst, by coalesce
    # The whole answer went out before the bug (met while logging it); the
    # connection is then closed instead of waiting for another request.
    assert verdict["bug_answer_status"] == 200
    assert verdict["bug_connection_closed"], "the connection was left open after the bug"
    # The exchange had finished cleanly: its backend connection was pooled
    # (open at both ends), not counted as active.
    assert verdict["active_after_bug"] == 0
    assert verdict["warm_connection_requests"] == 2 and verdict["warm_connection_open"]
    assert [(c["open_here"], c["open_at_backend"]) for c in verdict["idle_after_bug"]] == [(True, True)]
    assert_others_served(verdict)

