"""RFC 9110/9112 grammar, written down once; every check elsewhere uses these names."""
import re

TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + "+"

# request-line = method SP request-target SP HTTP-version CRLF, single spaces only.
# The target is any run of visible ASCII; llhttp checks its finer structure.
REQUEST_LINE = re.compile(rb"(%s) ([\x21-\x7e]+) HTTP/1\.([01])\r\n" % TOKEN.encode())

DIGITS = re.compile(rb"[0-9]+")

# chunk = chunk-size [ chunk-ext ] CRLF ; chunk-ext = *( BWS ";" BWS token [ "=" (token / quoted-string) ] )
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_EXT = rb"[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?" % (TOKEN.encode(), TOKEN.encode(), _QUOTED)
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:%s)*)\r\n" % _EXT)

# field-line = field-name ":" OWS field-value OWS, for trailer fields.
FIELD_LINE = re.compile(rb"%s:[\t \x21-\x7e\x80-\xff]*\r\n" % TOKEN.encode())

# Host = uri-host [ ":" port ]; uri-host is a reg-name, IPv4 or [IPv6] literal.
HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::([0-9]{0,5}))?")
