"""One HTTP/2 client connection: the I/O around h2frontend.Frontend.

The connection's own greenlet reads frames and feeds h2; one writer
greenlet sends what h2 queues; each stream's work runs in a greenlet of its
own (the `handler`), which reads the request body and sends the answer
through its Stream.

Backpressure, never a growing buffer:
- an answer is handed to h2 only as far as the stream's and connection's
  send windows allow; a stream whose window is shut waits on its own event,
  so a slow stream stalls nobody else;
- bytes queued for the socket are bounded (HIGH): senders wait while the
  writer is behind, and so does the reader, which bounds what a client can
  make us queue by sending PINGs or SETTINGS without reading the answers;
- request body bytes are acknowledged (flow control) only once the handler
  took them, so a backend that reads slowly slows the client down.
"""
import collections
import logging
import socket
import time

import gevent
from gevent.event import Event
from h2.errors import ErrorCodes
import h2.events
import h2.exceptions

from appgw.upstream import relay
from appgw.upstream import sockio
from appgw.http.h2 import Cut, Frontend

log = logging.getLogger("appgw")

HIGH = 256 * 1024        # bytes queued for the socket before senders wait
FINAL_FLUSH = 2          # seconds granted to send the last frames of a connection


class StreamGone(Exception):
    """The client reset the stream or the connection ended: nothing more can
    be said on it. Thrown into a handler blocked anywhere, backend included."""


class Stream:
    """One request stream, as its handler sees it (the HTTP/2 Downstream)."""

    __slots__ = ("session", "id", "headers", "end_stream", "inbox", "arrived", "ended", "gone", "window",
                 "received", "sent", "greenlet", "running", "answered", "closed", "reset_by_client")

    def __init__(self, session, stream_id, headers, end_stream):
        self.session = session
        self.id = stream_id
        self.headers = headers
        self.end_stream = end_stream
        self.inbox = collections.deque()   # (data, flow-controlled length), not yet acknowledged
        self.arrived = None         # an Event, made when the handler first waits for input
        self.ended = end_stream     # the client's side is over (END_STREAM)
        self.gone = False           # reset, or the connection ended
        self.window = None          # an Event, made when the handler first waits for window
        self.received = self.sent = 0
        self.greenlet = None
        self.running = False        # the handler has begun (a kill reaches it)
        self.answered = False       # a HEADERS (not 1xx) went out
        self.closed = False         # our side ended (END_STREAM or reset)
        self.reset_by_client = False   # gone by the client's RST_STREAM, not by the connection's end

    # -- the request body ----------------------------------------------------------

    def read(self, timeout):
        """The next piece of request body; b"" once the client ended it.
        Raises StreamGone after a reset, socket.timeout after `timeout`."""
        while not self.inbox:
            if self.gone:
                raise StreamGone()
            if self.ended:
                return b""
            if self.arrived is None:
                self.arrived = Event()
            self.arrived.clear()
            if not self.arrived.wait(timeout):
                raise socket.timeout("request body not received in time")
        data, flow = self.inbox.popleft()
        self.received += len(data)
        self.session.acknowledge(self.id, flow)
        return data

    def feed(self, data, flow):
        self.inbox.append((data, flow))
        self.wake_input()

    def wake_input(self):
        if self.arrived is not None:
            self.arrived.set()

    def wake_window(self):
        if self.window is not None:
            self.window.set()

    def discard_input(self):
        """Unread body bytes are acknowledged so the connection window stays
        open; the client is told to stop sending (RST_STREAM NO_ERROR)."""
        session = self.session
        while self.inbox:
            session.acknowledge(self.id, self.inbox.popleft()[1])
        if not self.ended and not self.gone:
            session.frontend.reset(self.id, ErrorCodes.NO_ERROR)
            self.ended = True
            session.flush()

    # -- the answer -------------------------------------------------------------------

    def send_headers(self, headers, end=False):
        """A HEADERS frame: the answer's head (or a 1xx, or trailers)."""
        self._check()
        session = self.session
        session.wait_room(self)
        try:
            session.frontend.conn.send_headers(self.id, headers, end_stream=end)
        except (h2.exceptions.ProtocolError, KeyError):
            self._lost()
        if headers and headers[0][1][:1] != b"1":
            self.answered = True
        self.closed = end
        session.flush()

    def send_data(self, data, end=False, timeout=None):
        """Body bytes, as fast as the client's windows allow. Waits (at most
        `timeout` for each opening of a shut window) rather than buffering."""
        session = self.session
        conn = session.frontend.conn
        view = memoryview(data)
        while True:
            self._check()
            session.wait_room(self)
            try:
                room = min(conn.local_flow_control_window(self.id), conn.max_outbound_frame_size)
            except (h2.exceptions.ProtocolError, KeyError):
                self._lost()
            if room <= 0 and view:
                if self.window is None:
                    self.window = Event()
                self.window.clear()
                session.blocked.add(self)
                try:
                    if not self.window.wait(timeout):
                        raise socket.timeout("client did not open its flow-control window in time")
                finally:
                    session.blocked.discard(self)
                continue
            piece, view = view[:room], view[room:]
            last = end and not view
            try:
                conn.send_data(self.id, bytes(piece), end_stream=last)
            except (h2.exceptions.ProtocolError, KeyError):
                self._lost()
            self.sent += len(piece)
            session.queued(len(piece) + 9)
            if not view:
                self.closed = last
                return

    def end(self):
        """END_STREAM on an empty DATA frame (after a body of unknown length)."""
        self.send_data(b"", end=True)

    def reset(self, code=ErrorCodes.INTERNAL_ERROR):
        if not self.closed and not self.gone:
            self.session.frontend.reset(self.id, code)
            self.session.flush()
        self.closed = True

    def _check(self):
        if self.gone or self.session.frontend.closed:
            raise StreamGone()

    def _lost(self):
        self.gone = True
        raise StreamGone()


class Session:
    """One client connection that chose HTTP/2. `handler(session, stream)`
    serves one stream; it returns when the stream is answered (or raises)."""

    __slots__ = ("sock", "client_ip", "site", "runtime", "gateway", "frontend", "streams", "handler",
                 "wake", "room", "unsent", "blocked", "writer", "waiting", "handed_over", "draining",
                 "done", "early", "served", "protocol", "timer_pool", "client_port", "quiet_since")

    def __init__(self, sock, client_ip, site, runtime, handler, early=b"", client_port=0):
        self.sock = sock
        self.client_ip = client_ip
        self.client_port = client_port
        self.site = site
        self.runtime = runtime
        self.gateway = gateway = runtime.config.gateway
        listener = site.listeners[0].listener
        self.frontend = Frontend(listener.max_concurrent_streams, gateway.max_header_size)
        self.streams = {}          # stream id -> Stream whose handler runs
        self.handler = handler
        self.wake = Event()        # the writer has something to send
        self.room = Event()        # fewer than HIGH bytes wait for the writer
        self.room.set()
        self.unsent = 0
        self.blocked = set()       # streams waiting for their send window
        self.writer = None
        self.waiting = False       # runtime.stop() closes a waiting connection: an h2 one drains instead
        self.handed_over = False
        self.draining = False      # GOAWAY sent: finish the open streams, then close
        self.done = False
        self.early = early         # bytes read while telling h2c from HTTP/1
        self.served = 0
        self.protocol = b"HTTP/2.0"
        self.timer_pool = {}       # seconds -> spare sockio.Timers for stream drivers
        self.quiet_since = time.monotonic()   # since when no stream is open: the idle clock

    # -- the reader (the connection's greenlet) -----------------------------------

    def serve(self):
        stats = self.runtime.stats
        stats.http2_connections += 1
        try:
            self._serve()
        finally:
            stats.http2_connections -= 1

    def _serve(self):
        frontend = self.frontend
        frontend.start()
        self.writer = gevent.spawn(self._write_loop)
        self.flush()
        data, limit = self.early, self.gateway.client_header_timeout
        try:
            while not self.done:
                if data:
                    try:
                        events = frontend.receive(data, len(self.streams))
                    except Cut as cut:
                        log.info("HTTP/2 connection from %s cut: %s", self.client_ip, cut.reason)
                        break
                    self._dispatch(events)
                    self.flush()
                    if self.unsent >= HIGH:
                        self.room.wait()   # the client must read what it asked for first
                    if self.draining and not self.streams:
                        break
                    if self.served or self.streams:
                        limit = self.gateway.client_idle_timeout
                if self.streams:
                    timeout = limit    # streams keep their own clocks: this bounds one wait only
                else:
                    # Idle since the last stream ended, whatever frames came
                    # since: a PING or SETTINGS does not keep a connection.
                    timeout = self.quiet_since + limit - time.monotonic()
                    if timeout <= 0:
                        break          # idle: GOAWAY and close
                self.sock.settimeout(timeout)
                try:
                    data = sockio.recv(self.sock, sockio.RECV)
                except socket.timeout:
                    if self.streams:
                        data = b""
                        continue
                    break
                if not data:
                    break
        except (OSError, gevent.GreenletExit):
            pass
        finally:
            self._finish()

    def _dispatch(self, events):
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._start(event)
            elif kind is h2.events.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is None or stream.ended or stream.gone:
                    self.acknowledge(event.stream_id, event.flow_controlled_length)
                else:
                    stream.feed(event.data, event.flow_controlled_length)
                    if event.stream_ended is not None:
                        stream.ended = True
            elif kind is h2.events.StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.ended = True
                    stream.wake_input()
            elif kind is h2.events.StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.reset_by_client = True
                    self._abort(stream)
            elif kind is h2.events.WindowUpdated:
                if event.stream_id == 0:
                    self._open_windows()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.wake_window()
            elif kind is h2.events.RemoteSettingsChanged:
                self._open_windows()   # the initial window or the frame size may have grown
            elif kind is h2.events.ConnectionTerminated:
                # The client's GOAWAY: it opens no more streams.
                if event.error_code != ErrorCodes.NO_ERROR:
                    for stream in list(streams.values()):
                        self._abort(stream)
                self.draining = True

    def _start(self, event):
        stream = Stream(self, event.stream_id, event.headers, event.stream_ended is not None)
        self.streams[stream.id] = stream
        self.served += 1
        stream.greenlet = gevent.spawn(self._run, stream)

    def _run(self, stream):
        stream.running = True
        try:
            if not stream.gone:   # reset before its handler even began: nothing to do
                self.handler(self, stream)
        except StreamGone:
            pass
        except Exception:   # a bug in a handler must not take the connection down
            log.exception("HTTP/2 stream %d from %s failed", stream.id, self.client_ip)
            if not stream.closed:
                try:
                    stream.reset(ErrorCodes.INTERNAL_ERROR)
                except StreamGone:
                    pass
        finally:
            if not stream.closed and not stream.gone:
                stream.reset(ErrorCodes.CANCEL)
            stream.discard_input()
            self.streams.pop(stream.id, None)
            if not self.streams:
                self.quiet_since = time.monotonic()
            if self.draining and not self.streams:
                self.close()

    def _abort(self, stream):
        """The stream is over for the client: wake its handler wherever it
        waits (on the backend too), so its backend connection is let go now."""
        stream.gone = True
        stream.wake_input()
        stream.wake_window()
        glet = stream.greenlet
        # A handler not yet begun sees `gone` first thing; killing it instead
        # would skip its cleanup.
        if stream.running and glet is not None and glet is not gevent.getcurrent() and not glet.dead:
            glet.kill(StreamGone, block=False)

    def _open_windows(self):
        for stream in list(self.blocked):
            stream.wake_window()

    # -- flow control and the writer -------------------------------------------------

    def acknowledge(self, stream_id, flow):
        if flow and not self.frontend.closed:
            self.frontend.conn.acknowledge_received_data(flow, stream_id)
            self.flush()

    def queued(self, size):
        self.unsent += size
        if self.unsent >= HIGH:
            self.room.clear()
        self.wake.set()

    def flush(self):
        self.wake.set()

    def wait_room(self, stream):
        while not self.room.is_set():
            self.room.wait()
            if stream.gone or self.frontend.closed:
                raise StreamGone()

    def _write_loop(self):
        sock, frontend = self.sock, self.frontend
        sock_timeout = self.gateway.client_idle_timeout
        try:
            while True:
                if not self.wake.is_set():
                    if self.done:
                        return
                    self.wake.wait()
                self.wake.clear()
                data = frontend.data_to_send()
                self.unsent = 0
                self.room.set()
                if data:
                    sock.settimeout(sock_timeout)   # a client that stops reading is let go
                    sockio.sendall(sock, data)
        except OSError:
            self.done = True
            self._close_socket()
        finally:
            self.room.set()   # nobody waits on a writer that is gone

    # -- ending ---------------------------------------------------------------------------

    def drain(self):
        """Graceful stop or reload: GOAWAY with the last stream that will be
        served; open streams finish, then the connection closes."""
        if self.done:
            return
        self.frontend.goaway()
        self.draining = True
        self.flush()
        if not self.streams:
            self.close()

    def close(self):
        """The final GOAWAY and the end of the connection, without waiting:
        what the writer has queued goes out first (for FINAL_FLUSH at most),
        then the socket is shut, which ends the reader. A stop closing many
        connections whose clients do not read is never held up by one."""
        if self.done:
            return
        self._last_words()
        gevent.spawn(self._shut_after_flush)

    def _last_words(self):
        self.frontend.close()
        self.done = True
        self.flush()

    def _shut_after_flush(self):
        writer = self.writer
        if writer is not None:
            writer.join(FINAL_FLUSH)
        self._close_socket()

    def _close_socket(self):
        relay.shutdown(self.sock, socket.SHUT_RDWR)

    def _finish(self):
        """The reader is done: every stream still open ends with the
        connection, and the last frames go out before the listener closes
        the socket (for FINAL_FLUSH at most)."""
        for stream in list(self.streams.values()):
            self._abort(stream)
        if not self.done:
            self._last_words()
        writer = self.writer
        if writer is not None:
            writer.join(FINAL_FLUSH)
            writer.kill(block=False)
