"""The access log's two formats carry the same fields under the same names."""
import io
import json
import re

import pytest

from appgw.control.accesslog import AccessLog, Entry

pytestmark = pytest.mark.sansio

FIELDS = re.compile(r' (\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def lines_of(entry):
    """The combined line's key=value fields and the JSON record of one entry."""
    out = {}
    for fmt in ("combined", "json"):
        log = AccessLog("", fmt)
        log._stream = io.StringIO()
        log.write(entry)
        out[fmt] = log._stream.getvalue()
    return dict(FIELDS.findall(out["combined"])), json.loads(out["json"]), out["combined"]


def session_entry():
    entry = Entry("127.0.0.1", "web")
    entry.rule, entry.server, entry.status = "main", "127.0.0.1:9000", 101
    entry.method, entry.target, entry.version = b"GET", b"/chat", b"HTTP/1.1"
    entry.received, entry.sent, entry.ended = 1234, 567, "idle timeout"
    return entry


def test_every_named_combined_field_is_a_json_key_with_the_same_value():
    combined, record, _ = lines_of(session_entry())
    assert set(combined) == {"listener", "rule", "server", "rx", "duration", "pid", "ended"}
    for name, value in combined.items():
        assert name in record, name
        if name != "duration":      # rounded differently: 3 digits against 6
            assert str(record[name]) == value, name
    assert record["rx"] == 1234 and record["ended"] == "idle_timeout"


def test_status_and_bytes_sent_are_the_same_in_both():
    combined, record, line = lines_of(session_entry())
    status, sent = re.search(r'" (\d+) (\d+) "', line).groups()
    assert record["status"] == int(status) == 101
    assert record["sent"] == int(sent) == 567


def test_the_reason_of_a_gateway_answer_is_in_both():
    entry = session_entry()
    entry.ended, entry.status, entry.reason = "", 502, 'no healthy server in pool "app"'
    combined, record, _ = lines_of(entry)
    assert combined["reason"] == '"no healthy server in pool \\"app\\""'
    assert record["reason"] == 'no healthy server in pool "app"'


def test_a_request_without_a_session_end_has_no_ended_field():
    entry = session_entry()
    entry.ended = ""
    combined, record, _ = lines_of(entry)
    assert "ended" not in combined and "ended" not in record
