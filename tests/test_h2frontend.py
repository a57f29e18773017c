"""The HTTP/2 connection layer without sockets: frames made by a client-side
h2 connection (or by hyperframe, for what h2 refuses to make) are fed to
the gateway's Frontend, and what comes back is read by that client."""
import base64

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame

from appgw.http.errors import ClientError
from appgw.http.h2 import Cut, Frontend, Malformed, request_from_h2, response_headers
from appgw.http.h1 import CHUNKED, LENGTH, NONE
from appgw.http.policy import backend_head

pytestmark = pytest.mark.sansio


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def pair(**frontend_args):
    """A started Frontend and a client h2 connection that has its SETTINGS."""
    clock = Clock()
    server = Frontend(clock=clock, **frontend_args)
    server.start()
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    client.initiate_connection()
    events = server.receive(client.data_to_send())
    client_events = client.receive_data(server.data_to_send())
    server.receive(client.data_to_send())   # the client's SETTINGS ACK
    server.clock = clock
    return server, client, clock, events, client_events


def get_headers(path=b"/", authority=b"example.test", method=b"GET", extra=()):
    return [(b":method", method), (b":scheme", b"https"), (b":authority", authority),
            (b":path", path)] + list(extra)


def request(headers, end_stream=True, max_header_size=32768, max_body_size=0):
    return request_from_h2(headers, end_stream, max_header_size, max_body_size, stream_id=1)


# -- settings ---------------------------------------------------------------------

def test_server_settings_carry_the_limits_and_extended_connect():
    _, _, _, _, client_events = pair(max_concurrent_streams=7, max_header_size=4096)
    changed = next(e for e in client_events if isinstance(e, h2.events.RemoteSettingsChanged))
    settings = {code: setting.new_value for code, setting in changed.changed_settings.items()}
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 4096
    assert settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert settings[h2.settings.SettingCodes.ENABLE_PUSH] == 0


# -- the request model ----------------------------------------------------------------

def test_a_get_becomes_the_request_an_http1_head_would():
    req = request(get_headers(b"/a/b?x=1", extra=[(b"user-agent", b"t/1"), (b"accept", b"*/*")]))
    assert (req.method, req.target, req.path, req.query) == (b"GET", b"/a/b?x=1", b"/a/b", b"x=1")
    assert req.host == b"example.test"
    assert req.framing == NONE and req.content_length == 0
    assert req.passed == [b"user-agent: t/1", b"accept: */*"]
    assert req.protocol == b"HTTP/2.0" and req.stream_id == 1
    head = backend_head(req, req.host, b"https", b"443", b"127.0.0.1")
    assert head.startswith(b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.test\r\nuser-agent: t/1\r\n")
    assert b"X-Original-Host: example.test\r\n" in head and head.endswith(b"\r\n\r\n")


def test_body_framing_follows_content_length_or_the_stream():
    post = get_headers(method=b"POST")
    with_length = request(post + [(b"content-length", b"12")], end_stream=False)
    assert (with_length.framing, with_length.content_length) == (LENGTH, 12)
    unknown = request(post, end_stream=False)
    assert unknown.framing == CHUNKED
    assert b"Transfer-Encoding: chunked" in backend_head(unknown, b"h", b"https", b"443", b"1.2.3.4")
    assert request(post, end_stream=True).framing == NONE


def test_cookie_crumbs_are_joined_into_one_field():
    req = request(get_headers(extra=[(b"cookie", b"a=1"), (b"accept", b"x"), (b"cookie", b"b=2")]))
    assert req.passed == [b"accept: x", b"cookie: a=1; b=2"]
    assert (b"cookie", b"a=1; b=2") in req.headers


def test_host_field_alone_or_matching_is_accepted():
    no_authority = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h.test:8080")]
    assert request(no_authority).host == b"h.test:8080"
    assert request(get_headers(extra=[(b"host", b"example.test")])).host == b"example.test"


def test_underscore_names_are_dropped_unless_allowed():
    headers = get_headers(extra=[(b"x_user", b"admin"), (b"x-user", b"me")])
    assert request(headers).passed == [b"x-user: me"]
    assert request_from_h2(headers, True, 32768, allow_underscores=True).passed == [b"x_user: admin", b"x-user: me"]


def test_x_forwarded_for_of_the_client_is_kept_for_appending():
    req = request(get_headers(extra=[(b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2")]))
    assert req.forwarded_for == b"10.0.0.1, 10.0.0.2"
    assert b"X-Forwarded-For: 10.0.0.1, 10.0.0.2, 1.2.3.4\r\n" in backend_head(req, b"h", b"https", b"443", b"1.2.3.4")


@pytest.mark.parametrize("headers, why", [
    (get_headers(extra=[(b"host", b"other.test")]), "host differs"),
    (get_headers() + [(b":path", b"/again")], "repeated"),
    ([(b"accept", b"x")] + get_headers(), "after a regular field"),
    (get_headers() + [(b":bogus", b"1")], "unknown pseudo-header"),
    (get_headers(extra=[(b"connection", b"keep-alive")]), "connection-specific"),
    (get_headers(extra=[(b"transfer-encoding", b"chunked")]), "connection-specific"),
    (get_headers(extra=[(b"upgrade", b"websocket")]), "connection-specific"),
    (get_headers(extra=[(b"keep-alive", b"5")]), "connection-specific"),
    (get_headers(extra=[(b"te", b"gzip")]), "te other than trailers"),
    (get_headers(extra=[(b"Accept", b"x")]), "invalid field name"),
    (get_headers(extra=[(b"a b", b"x")]), "invalid field name"),
    (get_headers(extra=[(b"accept", b" x")]), "invalid value"),
    (get_headers(extra=[(b"accept", b"x\x01y")]), "invalid value"),
    (get_headers(extra=[(b"accept", b"x\r\nevil: 1")]), "invalid value"),
    (get_headers(path=b"no-slash"), "invalid :path"),
    (get_headers(path=b"/a b"), "invalid :path"),
    (get_headers(authority=b"user@example.test"), "userinfo"),
    (get_headers(authority=b"exa mple"), "invalid :authority"),
    ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")], "neither :authority nor host"),
    ([(b":method", b"GET"), (b":authority", b"h"), (b":path", b"/")], "missing :scheme"),
    (get_headers()[1:], "invalid :method"),
    (get_headers(extra=[(b"content-length", b"5")]), "ended with its headers"),
    (get_headers(extra=[(b"content-length", b"+5")]), "invalid content-length"),
    (get_headers() + [(b":protocol", b"websocket")], ":protocol without CONNECT"),
])
def test_malformed_blocks_are_stream_errors(headers, why):
    with pytest.raises(Malformed, match=why):
        request(headers)


def test_differing_content_lengths_are_malformed():
    with pytest.raises(Malformed, match="differing"):
        request(get_headers(method=b"POST", extra=[(b"content-length", b"1"), (b"content-length", b"2")]),
                end_stream=False)


def test_gateway_refusals_carry_their_status():
    with pytest.raises(ClientError) as refused:
        request([(b":method", b"CONNECT"), (b":authority", b"h:443")])
    assert refused.value.status == 405
    with pytest.raises(ClientError) as refused:
        request(get_headers(method=b"CONNECT", extra=()) + [(b":protocol", b"connect-udp")], end_stream=False)
    assert refused.value.status == 501
    with pytest.raises(ClientError) as refused:
        request(get_headers(method=b"POST", extra=[(b"content-length", b"101")]), end_stream=False,
                max_body_size=100)
    assert refused.value.status == 413
    with pytest.raises(ClientError) as refused:
        request(get_headers(extra=[(b"cookie", b"x" * 2000)]), max_header_size=1024)
    assert refused.value.status == 431 and not isinstance(refused.value, Malformed)


def test_extended_connect_websocket_is_a_websocket_get():
    headers = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
               (b":path", b"/chat?room=1"), (b":authority", b"example.test"),
               (b"sec-websocket-version", b"13"), (b"sec-websocket-protocol", b"chat"),
               (b"origin", b"https://example.test")]
    req = request(headers, end_stream=False)
    assert req.websocket and req.method == b"GET" and req.framing == NONE
    head = backend_head(req, req.host, b"https", b"443", b"1.2.3.4")
    assert head.startswith(b"GET /chat?room=1 HTTP/1.1\r\n")
    assert b"Upgrade: websocket\r\nConnection: Upgrade\r\n" in head
    assert b"sec-websocket-protocol: chat\r\n" in head and b"origin: https://example.test\r\n" in head
    assert b"Sec-WebSocket-Key: %s\r\n" % req.ws_key in head and len(base64.b64decode(req.ws_key)) == 16
    assert b"sec-websocket-version: 13\r\n" in head
    assert request(headers, end_stream=False).ws_key != req.ws_key
    with pytest.raises(Malformed, match="ends its stream"):
        request(headers, end_stream=True)


def test_response_headers_are_lower_cased_without_connection_fields():
    headers = response_headers(200, [b"Content-Type: text/plain", b"Connection: close", b"X-Drop: 1",
                                     b"Keep-Alive: 5", b"Set-Cookie: a=1", b"Set-Cookie: b=2"],
                               drop=frozenset((b"x-drop",)), content_length=5, extra=[b"Set-Cookie: s=3; Path=/"])
    assert headers == [(b":status", b"200"), (b"content-type", b"text/plain"), (b"set-cookie", b"a=1"),
                       (b"set-cookie", b"b=2"), (b"content-length", b"5"), (b"set-cookie", b"s=3; Path=/")]


# -- the connection and its limits -----------------------------------------------

def test_a_request_comes_out_as_events():
    server, client, *_ = pair()
    client.send_headers(1, get_headers(), end_stream=True)
    events = server.receive(client.data_to_send())
    received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert len(received) == 1 and received[0].stream_ended is not None
    req = request_from_h2(received[0].headers, True, 32768)
    assert req.host == b"example.test"


def ended_by(server, client):
    """The client's view of the GOAWAY the server queued."""
    events = client.receive_data(server.data_to_send())
    return next(e for e in events if isinstance(e, h2.events.ConnectionTerminated))


def test_rapid_reset_is_cut_after_a_bounded_number_of_streams():
    server, client, *_ = pair(max_concurrent_streams=10)
    stream_id, opened = 1, 0
    with pytest.raises(Cut) as cut:
        for _ in range(1000):
            client.send_headers(stream_id, get_headers(), end_stream=True)
            client.reset_stream(stream_id, ErrorCodes.CANCEL)
            opened += 1
            server.receive(client.data_to_send())
            stream_id += 2
    assert cut.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert opened <= 2 * 10 + 1
    terminated = ended_by(server, client)
    assert terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    # Stream ids go 1, 3, ...: the last one handed out before the cut.
    assert terminated.last_stream_id == stream_id - 2


def test_resets_are_refilled_with_time():
    server, client, clock, *_ = pair(max_concurrent_streams=10)
    stream_id = 1
    for _ in range(200):
        client.send_headers(stream_id, get_headers(), end_stream=True)
        client.reset_stream(stream_id, ErrorCodes.CANCEL)
        server.receive(client.data_to_send())
        stream_id += 2
        clock.now += 0.2     # 5 a second: under the refill rate, never cut


def test_streams_still_at_work_count_against_the_limit():
    server, client, *_ = pair(max_concurrent_streams=2)
    client.send_headers(1, get_headers(), end_stream=True)
    client.reset_stream(1)
    events = server.receive(client.data_to_send(), running=1)
    assert [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)] == [1]
    # Stream 1's handler is still at work: h2 counts it closed, the gateway does not.
    client.send_headers(3, get_headers(), end_stream=True)
    events = server.receive(client.data_to_send(), running=2)
    assert not any(isinstance(e, h2.events.RequestReceived) for e in events)
    resets = [e for e in client.receive_data(server.data_to_send()) if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(3, ErrorCodes.REFUSED_STREAM)]


def test_ping_flood_is_cut():
    server, client, *_ = pair()
    with pytest.raises(Cut, match="PING"):
        for i in range(1000):
            client.ping(b"%08d" % i)
            server.receive(client.data_to_send())
    assert ended_by(server, client).error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_settings_flood_is_cut():
    server, client, *_ = pair()
    with pytest.raises(Cut, match="SETTINGS"):
        for _ in range(1000):
            frame = SettingsFrame(0)
            frame.settings = {SettingsFrame.HEADER_TABLE_SIZE: 4096}
            server.receive(frame.serialize())


def test_empty_data_flood_is_cut():
    server, client, *_ = pair()
    client.send_headers(1, get_headers(method=b"POST"), end_stream=False)
    server.receive(client.data_to_send())
    with pytest.raises(Cut, match="empty DATA"):
        for _ in range(1000):
            client.send_data(1, b"")
            server.receive(client.data_to_send())


def test_continuation_flood_is_cut_by_h2():
    server, client, *_ = pair()
    headers = HeadersFrame(1)
    headers.data = client.encoder.encode(get_headers())
    headers.flags.add("END_STREAM")     # no END_HEADERS: CONTINUATION must follow
    with pytest.raises(Cut) as cut:
        server.receive(headers.serialize())
        for _ in range(1000):
            frame = ContinuationFrame(1)
            frame.data = b""
            server.receive(frame.serialize())
    assert cut.value.error_code == ErrorCodes.PROTOCOL_ERROR
    assert ended_by(server, client).error_code == ErrorCodes.PROTOCOL_ERROR


def test_header_bomb_past_the_hard_limit_is_cut():
    server, client, *_ = pair(max_header_size=1024)
    client.send_headers(1, get_headers(extra=[(b"x-big", b"y" * 8000)]), end_stream=True)
    with pytest.raises(Cut) as cut:
        server.receive(client.data_to_send())
    assert cut.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_window_overflow_on_the_connection_is_cut():
    server, client, *_ = pair()
    frame = WindowUpdateFrame(0)
    frame.window_increment = 2 ** 31 - 1
    with pytest.raises(Cut) as cut:
        server.receive(frame.serialize())
    assert cut.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_window_overflow_on_a_stream_resets_it():
    server, client, *_ = pair()
    client.send_headers(1, get_headers(), end_stream=True)
    server.receive(client.data_to_send())
    frame = WindowUpdateFrame(1)
    frame.window_increment = 2 ** 31 - 1
    events = server.receive(frame.serialize())
    reset = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert reset and reset[0].error_code == ErrorCodes.FLOW_CONTROL_ERROR and not reset[0].remote_reset


def test_data_past_content_length_is_cut():
    server, client, *_ = pair()
    client.send_headers(1, get_headers(method=b"POST", extra=[(b"content-length", b"3")]), end_stream=False)
    server.receive(client.data_to_send())
    client.send_data(1, b"abcdef", end_stream=True)
    with pytest.raises(Cut) as cut:
        server.receive(client.data_to_send())
    assert cut.value.error_code == ErrorCodes.PROTOCOL_ERROR


def test_malformed_requests_in_a_loop_are_cut():
    server, client, *_ = pair(max_concurrent_streams=5)
    with pytest.raises(Cut, match="malformed"):
        for n in range(100):
            server.refused(1 + 2 * n)


def test_goaway_names_the_last_stream_and_refuses_later_ones():
    server, client, *_ = pair()
    client.send_headers(1, get_headers(), end_stream=True)
    client.send_headers(3, get_headers(), end_stream=True)
    server.receive(client.data_to_send())
    server.goaway()
    terminated = ended_by(server, client)
    assert (terminated.error_code, terminated.last_stream_id) == (ErrorCodes.NO_ERROR, 3)
    # Stream 3 can still be answered after the GOAWAY ...
    server.conn.send_headers(3, [(b":status", b"204")], end_stream=True)
    assert server.data_to_send()
    # ... and a stream the client opened meanwhile is refused.
    frame = HeadersFrame(5)
    frame.data = client.encoder.encode(get_headers())
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    events = server.receive(frame.serialize())
    assert not any(isinstance(e, h2.events.RequestReceived) for e in events)


def test_the_clients_goaway_no_error_is_taken_out_in_any_split():
    """A GOAWAY(NO_ERROR) is taken out of the bytes h2 sees, however the
    bytes are cut, and every other frame passes unchanged."""
    from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame

    from appgw.http.h2 import PREFACE, GoawayFilter

    def goaway(code, last=0, data=b""):
        frame = GoAwayFrame(0)
        frame.error_code, frame.last_stream_id, frame.additional_data = code, last, data
        return frame.serialize()

    headers = HeadersFrame(1, data=b"\x82\x86\x84", flags=["END_HEADERS"]).serialize()
    data = DataFrame(1, data=b"x" * 300).serialize()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    kept = PREFACE + headers + data + ping + goaway(1)       # an error GOAWAY passes on
    stream = PREFACE + headers + goaway(0, 0, b"bye") + data + ping + goaway(0, 7) + goaway(1)
    for cut in range(1, len(stream)):
        for second in (cut, min(len(stream), cut + 5)):
            f = GoawayFilter()
            out, found = b"", []
            for piece in (stream[:cut], stream[cut:second], stream[second:]):
                passed, goaways = f.feed(piece)
                out += passed
                found += goaways
            assert (out, found) == (kept, [0, 7]), (cut, second)
