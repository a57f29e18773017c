"""Compression, sans-io: negotiation, the rules of what is compressed, header
edits, and the streaming encoder checked with the real decoders."""
import gzip
import os
import zlib

import brotli
import pytest

from appgw.exchange.compress import (
    BR, GZIP, PIECE, CompressPolicy, Encoder, client_coding, compressed_lines, has_range, negotiate,
    vary_lines,
)
from appgw.config import DEFAULT_COMPRESS_TYPES

# --- negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize("header, coding", [
    (b"gzip, deflate, br", BR),
    (b"br", BR),
    (b"gzip", GZIP),
    (b"GZIP", GZIP),
    (b"x-gzip", GZIP),
    (b"deflate", None),
    (b"", None),
    (b"identity", None),
    (b"br;q=0, gzip", GZIP),
    (b"gzip;q=0, br;q=0", None),
    (b"gzip;q=1.0, br;q=0.5", GZIP),
    (b"gzip;q=0.5, br;q=0.5", BR),          # a tie goes to br
    (b"br;q=0.001", BR),
    (b"*", BR),
    (b"*;q=0", None),
    (b"*;q=0.5, gzip", GZIP),
    (b"br;q=0, *", GZIP),
    (b"gzip;q=0, *;q=0.3", BR),
    (b"br;q=2, gzip", GZIP),                # q over 1 is malformed: that element is ignored
    (b"br;q=abc, gzip;q=0.1", GZIP),
    (b"br;q=0.0001", None),                 # four decimals: malformed, so br is not named at all
    (b" br ; q = 0.8 ,gzip;q=0.9", GZIP),
    (b",, ,br", BR),
    (b"br;level=5", BR),
])
def test_negotiate(header, coding):
    assert negotiate(header) == coding


def test_negotiate_with_no_header():
    assert negotiate(None) is None


def test_client_coding_joins_every_accept_encoding():
    assert client_coding([(b"Accept-Encoding", b"gzip;q=0.5"), (b"accept-encoding", b"br;q=0.1")]) == (GZIP, False)
    assert client_coding([(b"Accept-Encoding", b"gzip"), (b"Range", b"bytes=0-")]) == (GZIP, True)
    assert client_coding([(b"Host", b"x")]) == (None, False)


def test_has_range():
    assert has_range([(b"Host", b"x"), (b"range", b"bytes=0-1")])
    assert not has_range([(b"Host", b"x"), (b"If-Range", b"x")])


# --- what is compressed ------------------------------------------------------------------

POLICY = CompressPolicy(DEFAULT_COMPRESS_TYPES, 1024)
HTML = [b"Content-Type: text/html; charset=utf-8", b"ETag: \"abc\""]


def eligible(method=b"GET", status=200, lines=HTML, length=5000, policy=POLICY, **kw):
    return policy.eligible(method, status, lines, length, **kw)


def test_a_plain_html_answer_is_eligible():
    assert eligible() and eligible(length=None) and eligible(length=1024)


@pytest.mark.parametrize("case", [
    dict(method=b"HEAD"),
    dict(status=100), dict(status=101), dict(status=103),
    dict(status=204), dict(status=304),
    dict(status=206),
    dict(range_request=True),
    dict(lines=HTML + [b"Content-Encoding: gzip"]),
    dict(lines=HTML + [b"content-encoding: identity"]),
    dict(lines=HTML + [b"Cache-Control: public, No-Transform"]),
    dict(lines=HTML + [b"Cache-Control: max-age=1", b"Cache-Control: no-transform"]),
    dict(lines=[b"Content-Type: image/png"]),
    dict(lines=[b"Content-Type: application/octet-stream"]),
    dict(lines=[b"Server: no type at all"]),
    dict(length=1023),
    dict(length=0),
    dict(transfer_codings=[b"gzip"]),
    dict(can_chunk=False),
], ids=lambda case: ",".join(f"{k}={v!r}" for k, v in case.items()))
def test_not_compressed(case):
    assert not eligible(**case)


def test_media_type_is_matched_without_parameters_and_case():
    assert eligible(lines=[b"Content-Type: Application/JSON ; charset=utf-8"])
    assert eligible(lines=[b"content-type: image/svg+xml"])
    assert not eligible(lines=[b"Content-Type: application/json-seq"])
    assert not eligible(lines=[b"Content-Type: text/htmlx"])


def test_type_families_and_the_minimum():
    policy = CompressPolicy(["text/*", "application/json"], 0)
    assert eligible(lines=[b"Content-Type: text/anything"], policy=policy)
    assert not eligible(lines=[b"Content-Type: textual/x"], policy=policy)
    assert eligible(lines=[b"Content-Type: application/json"], length=1, policy=policy)
    assert not eligible(lines=[b"Content-Type: application/json"], length=0, policy=policy)


def test_other_statuses_are_compressed():
    assert eligible(status=404) and eligible(status=500) and eligible(status=201)


# --- header edits ------------------------------------------------------------------------

def test_compressed_lines():
    lines = [b"Content-Type: text/html", b"Content-Length: 5000", b'ETag: "v1"', b"Server: demo"]
    assert compressed_lines(lines, BR) == [b"Content-Type: text/html", b'ETag: W/"v1"', b"Server: demo",
                                           b"Content-Encoding: br", b"Vary: Accept-Encoding"]


def test_a_weak_etag_stays_and_vary_is_extended():
    lines = [b'etag: W/"v1"', b"Vary: Origin", b"Vary: Cookie"]
    assert compressed_lines(lines, GZIP) == [b'etag: W/"v1"', b"Vary: Origin",
                                             b"Vary: Cookie, Accept-Encoding", b"Content-Encoding: gzip"]


def test_vary_is_left_alone_when_it_already_covers_accept_encoding():
    for vary in (b"Vary: accept-encoding", b"Vary: Origin, Accept-Encoding", b"Vary: *"):
        assert vary_lines([vary]) == [vary]
    assert vary_lines([]) == [b"Vary: Accept-Encoding"]


# --- the encoder -------------------------------------------------------------------------

def text_body(size):
    """Compressible but not trivial: numbered JSON-ish records."""
    out, total, i = [], 0, 0
    while total < size:
        out.append(b'{"id": %d, "name": "item %d", "price": %d},\n' % (i, i, i * 7919 % 10007))
        total += len(out[-1])
        i += 1
    return b"".join(out)[:size]


def decode(coding, data):
    return brotli.decompress(data) if coding == BR else gzip.decompress(data)


@pytest.mark.parametrize("coding", [BR, GZIP])
def test_round_trip_fed_in_uneven_pieces(coding):
    body = text_body(300_000)
    encoder = Encoder(coding)
    out, pos = [], 0
    for size in (1, 10, 4096, 65536, 100_000, 7):
        out.append(encoder.feed(body[pos:pos + size]))
        pos += size
    out.append(encoder.feed(body[pos:]))
    out.append(encoder.finish())
    encoded = b"".join(out)
    assert decode(coding, encoded) == body
    assert len(encoded) < len(body) / 4


@pytest.mark.parametrize("coding", [BR, GZIP])
def test_pieces_bound_the_work_per_step(coding):
    body = text_body(10 * PIECE + 123)
    encoder = Encoder(coding, piece=PIECE)
    steps = list(encoder.pieces(body))
    assert all(steps) and len(steps) <= 11
    assert decode(coding, b"".join(steps) + encoder.finish()) == body


@pytest.mark.parametrize("coding", [BR, GZIP])
def test_pieces_take_incompressible_data_too(coding):
    body = os.urandom(3 * PIECE)
    encoder = Encoder(coding, piece=PIECE)
    assert decode(coding, b"".join(encoder.pieces(body)) + encoder.finish()) == body


@pytest.mark.parametrize("coding", [BR, GZIP])
def test_flush_makes_everything_so_far_decodable(coding):
    encoder = Encoder(coding)
    first = encoder.feed(b"hello ") + encoder.flush()
    if coding == BR:
        decoder = brotli.Decompressor()
        assert decoder.process(first) == b"hello "
        assert decoder.process(encoder.feed(b"world") + encoder.finish()) == b"world"
    else:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert decoder.decompress(first) == b"hello "
        assert decoder.decompress(encoder.feed(b"world") + encoder.finish()) == b"world"


@pytest.mark.parametrize("coding", [BR, GZIP])
def test_an_empty_body_is_a_valid_stream(coding):
    assert decode(coding, Encoder(coding).finish()) == b""


def test_unknown_coding():
    with pytest.raises(ValueError):
        Encoder(b"deflate")
