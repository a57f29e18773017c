"""A small HTTP/2 client over a real socket, made with the h2 library, for
tests that need exact frames: it sends what it is told and reports every
event, acknowledging received data only where the test says so."""
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class H2Client:
    def __init__(self, port, host="127.0.0.1", tls=False, validate=True, timeout=10, server_name="localhost"):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=server_name)
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate,
            normalize_outbound_headers=validate, validate_inbound_headers=validate))
        self.conn.initiate_connection()
        self.flush()
        self.events = []
        self.bodies = {}          # stream id -> bytearray
        self.responses = {}       # stream id -> headers
        self.ended = set()        # streams the server ended
        self.resets = {}          # stream id -> error code
        self.terminated = None    # the server's GOAWAY (ConnectionTerminated)
        self.closed = False       # the server closed the socket
        self.hold = set()         # streams whose received data is not acknowledged
        self.raw = bytearray()    # bytes read by raw_frame, not yet a whole frame

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def get(self, path, authority=b"localhost", method=b"GET", extra=(), end=True):
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(b":method", method), (b":scheme", b"http"), (b":authority", authority), (b":path", path)]
        self.conn.send_headers(stream_id, headers + list(extra), end_stream=end)
        self.flush()
        return stream_id

    def receive_once(self, timeout=10):
        """Read once from the socket and handle the events; False at EOF."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self.events.append(event)
            self.on_event(event)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def on_event(self, event):
        if isinstance(event, h2.events.ResponseReceived):
            self.responses[event.stream_id] = event.headers
        elif isinstance(event, h2.events.DataReceived):
            self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
            size = event.flow_controlled_length
            if size:
                try:
                    self.conn.increment_flow_control_window(size)
                except h2.exceptions.ProtocolError:   # after the server's GOAWAY (h2 is closed then)
                    return
                if event.stream_id not in self.hold and event.stream_id not in self.ended \
                        and event.stream_ended is None:
                    try:
                        self.conn.increment_flow_control_window(size, event.stream_id)
                    except Exception:   # the stream closed meanwhile
                        pass
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event

    def run_until(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("condition not reached in %gs" % timeout)
            if not self.receive_once(left):
                if not predicate():
                    raise AssertionError("connection closed before the condition")
                return

    def status(self, stream_id):
        return dict(self.responses[stream_id])[b":status"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def raw_frame(self, timeout=10):
        """The next frame, parsed by hyperframe past h2 (which refuses every
        frame after a GOAWAY, though RFC 9113 lets the streams it names
        finish); None once the server closed the socket."""
        from hyperframe.frame import Frame
        deadline = time.monotonic() + timeout
        while len(self.raw) < 9 or len(self.raw) < 9 + int.from_bytes(self.raw[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame in %gs" % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return None
            self.raw += data
        frame, length = Frame.parse_frame_header(memoryview(self.raw[:9]))
        frame.parse_body(memoryview(self.raw[9:9 + length]))
        del self.raw[:9 + length]
        return frame

    def send_raw_data(self, stream_id, data):
        """A DATA frame made by hand (after a GOAWAY h2 sends none)."""
        from hyperframe.frame import DataFrame
        frame = DataFrame(stream_id)
        frame.data = data
        self.send_raw(frame.serialize())

    def read_after_goaway(self, stream_id, timeout=10):
        """(status, body) of `stream_id` once it ends, read frame by frame
        after a GOAWAY (see raw_frame)."""
        from hyperframe.frame import DataFrame, HeadersFrame
        status, body = None, bytearray(self.bodies.get(stream_id, b""))
        if stream_id in self.responses:
            status = self.status(stream_id)
        deadline = time.monotonic() + timeout
        while True:
            frame = self.raw_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise AssertionError("closed before stream %d ended" % stream_id)
            if frame.stream_id != stream_id:
                continue
            if isinstance(frame, HeadersFrame):
                status = dict(self.conn.decoder.decode(frame.data, raw=True))[b":status"]
            elif isinstance(frame, DataFrame):
                body += frame.data
            if "END_STREAM" in frame.flags:
                return status, bytes(body)
