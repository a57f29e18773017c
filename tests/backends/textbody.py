"""The body the wsgi backend serves on /text, written once: the backend
serves it and the tests check what arrives against it. No gevent here, so
the test process can import it without being monkey-patched."""

TEXT_LINE = 64
TEXT_PERIOD = 4 * 1024 * 1024   # the line numbers start again after 65536 lines
TEXT_FORMAT = b"%08d: the quick brown fox jumps over the lazy dog, %08d\n"
assert len(TEXT_FORMAT % (0, 0)) == TEXT_LINE


def text_bytes(offset, length):
    """``length`` bytes of the /text body from ``offset``."""
    period = _text_period()
    start = offset % TEXT_PERIOD
    if start + length <= TEXT_PERIOD:
        return period[start:start + length]
    return (period[start:] + period * (length // TEXT_PERIOD + 1))[:length]


_period = []


def _text_period():
    # Built once: slices of it are served at memory speed, faster than a
    # gateway compresses, so the gateway is the one that must pace itself.
    if not _period:
        _period.append(b"".join(TEXT_FORMAT % (i, i) for i in range(TEXT_PERIOD // TEXT_LINE)))
    return _period[0]
