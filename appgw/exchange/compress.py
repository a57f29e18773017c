"""Compression of answers, sans-io: which coding a client takes, whether an
answer may be compressed, the header edits, and a streaming encoder.

`br` (Brotli) when the client accepts it at least as much as gzip, else
`gzip`. An encoder holds a bounded window, never the body: each piece of
the backend's body goes in and whatever compressed bytes are ready come out.
"""
import re
import zlib

import brotli

BR, GZIP = b"br", b"gzip"

# On-the-fly settings, measured on JSON: Brotli quality 3 with a 256 KiB
# window (lgwin 18) compresses better than gzip 5 and faster, in about
# 1 MiB per stream (quality 4 costs 1.6 MiB, a 1 MiB window 4.5 MiB);
# gzip 5 is as small as gzip 6 here at twice its speed.
BROTLI_QUALITY = 3
BROTLI_WINDOW = 18
GZIP_LEVEL = 5
PIECE = 64 * 1024
"""Input per step of `Encoder.pieces`: about 0.3 ms of work at these settings."""

_QVALUE = re.compile(rb"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_NOT_COMPRESSED = frozenset((204, 206, 304))


# --- the client's side -----------------------------------------------------------

def negotiate(accept_encoding: bytes):
    """The coding for a client's Accept-Encoding (several headers joined by
    ", "): b"br", b"gzip" or None.

    q-values count (q=0 refuses); "*" stands for every coding not named;
    x-gzip is gzip; an element whose q is not a valid qvalue is ignored; br
    wins a tie. No header or an empty one: None.
    """
    if not accept_encoding:
        return None
    weights, star = {}, None
    for item in accept_encoding.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight = _weight(params)
        if weight is None:
            continue
        if coding == b"x-gzip":
            coding = GZIP
        if coding == b"*":
            star = weight if star is None else star
        else:
            weights.setdefault(coding, weight)
    br = weights.get(BR, star) or 0
    gzip = weights.get(GZIP, star) or 0
    if br and br >= gzip:
        return BR
    return GZIP if gzip else None


def _weight(params: bytes):
    """q of ";q=0.5" params (1 when absent), None when q is malformed."""
    if not params:
        return 1.0
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            value = value.strip()
            return float(value) if _QVALUE.fullmatch(value) else None
    return 1.0


def has_range(headers) -> bool:
    """Whether request (name, value) pairs carry a Range header."""
    return any(name.lower() == b"range" for name, _ in headers)


def client_coding(headers):
    """(coding, range_request) of a request's (name, value) pairs, in one pass:
    the coding `negotiate` picks from every Accept-Encoding header, and
    whether a Range header was sent (its answer is never compressed)."""
    accepted, ranged = [], False
    for name, value in headers:
        lname = name.lower()
        if lname == b"accept-encoding":
            accepted.append(value)
        elif lname == b"range":
            ranged = True
    return (negotiate(b", ".join(accepted)) if accepted else None), ranged


# --- the answer's side -----------------------------------------------------------

class CompressPolicy:
    """The gateway's compress_types and compress_min_size, compiled."""

    __slots__ = ("types", "families", "min_size")

    def __init__(self, types, min_size: int):
        types = [t.lower().encode() for t in types]
        self.types = frozenset(t for t in types if not t.endswith(b"/*"))
        self.families = tuple(t[:-1] for t in types if t.endswith(b"/*"))   # b"text/"
        self.min_size = min_size

    @classmethod
    def from_gateway(cls, gateway) -> "CompressPolicy":
        return cls(gateway.compress_types, gateway.compress_min_size)

    def eligible(self, method: bytes, status: int, lines, content_length=None,
                 range_request=False, transfer_codings=(), can_chunk=True) -> bool:
        """Whether an answer may be compressed (before asking the client).

        `lines`: the answer's b"Name: value" lines as they will go out;
        `content_length`: the backend's, None when unknown; `range_request`:
        the request had a Range header; `transfer_codings`: the backend's
        codings other than chunked (a body already transfer-coded is left
        alone); `can_chunk`: the client connection can carry a body of
        unknown length and stay open (HTTP/1.1, not 1.0).
        """
        if method == b"HEAD" or status < 200 or status in _NOT_COMPRESSED:
            return False
        if range_request or transfer_codings or not can_chunk:
            return False
        if content_length is not None and (content_length == 0 or content_length < self.min_size):
            return False
        media_type = None
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-encoding":
                if value.strip():
                    return False
            elif name == b"cache-control":
                if any(d.strip().lower() == b"no-transform" for d in value.split(b",")):
                    return False
            elif name == b"content-type":
                media_type = value.partition(b";")[0].strip().lower()
        if not media_type:
            return False
        return media_type in self.types or media_type.startswith(self.families)


def compressed_lines(lines, coding: bytes) -> list:
    """The answer's lines once its body is `coding`-encoded: no Content-Length,
    Content-Encoding set, Vary lists Accept-Encoding, a strong ETag made weak."""
    out = []
    for line in lines:
        name = line[:line.index(b":")].lower()
        if name == b"content-length":
            continue
        if name == b"etag":
            value = line[5:].strip()
            if not value.startswith(b"W/"):
                line = line[:line.index(b":")] + b": W/" + value
        out.append(line)
    out.append(b"Content-Encoding: " + coding)
    return vary_lines(out)


def vary_lines(lines) -> list:
    """`lines` with Accept-Encoding in Vary: to be used also on an answer that
    would be compressed for another client, so that caches keep them apart."""
    last = None
    for i, line in enumerate(lines):
        name, _, value = line.partition(b":")
        if name.lower() == b"vary":
            listed = [v.strip().lower() for v in value.split(b",")]
            if b"*" in listed or b"accept-encoding" in listed:
                return lines
            last = i
    if last is None:
        return lines + [b"Vary: Accept-Encoding"]
    out = list(lines)
    out[last] = out[last].rstrip() + b", Accept-Encoding"
    return out


# --- the body ----------------------------------------------------------------

class Encoder:
    """One answer's streaming encoder. Bytes in, compressed bytes out; the
    output of every call, in order, is the whole encoded body."""

    __slots__ = ("coding", "piece", "_process", "_flush", "_finish")

    def __init__(self, coding: bytes, piece: int = PIECE):
        self.coding, self.piece = coding, piece
        if coding == BR:
            compressor = brotli.Compressor(quality=BROTLI_QUALITY, lgwin=BROTLI_WINDOW)
            self._process, self._flush, self._finish = compressor.process, compressor.flush, compressor.finish
        elif coding == GZIP:
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            self._process, self._finish = compressor.compress, compressor.flush
            self._flush = lambda: compressor.flush(zlib.Z_SYNC_FLUSH)
        else:
            raise ValueError("unknown coding %r" % coding)

    def feed(self, data) -> bytes:
        """Compress `data` at once (may return b"" while the encoder gathers input)."""
        return self._process(data)

    def pieces(self, data):
        """Compress `data` `piece` bytes at a time, yielding the non-empty
        outputs: the driver serves its event loop between them, so a large
        piece of body never holds up other connections."""
        view = memoryview(data)
        for start in range(0, len(view), self.piece):
            out = self._process(view[start:start + self.piece])
            if out:
                yield out

    def flush(self) -> bytes:
        """Everything fed so far, decodable now: for when the backend pauses."""
        return self._flush()

    def finish(self) -> bytes:
        """The end of the encoded body; the encoder cannot be fed after it."""
        return self._finish()
