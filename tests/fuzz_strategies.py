"""Hypothesis strategies for tests/test_fuzz.py: HTTP requests for the client API (gateway
and node) and the admin API, most of them broken on purpose.

A strategy draws a ``Request``: method, path, header lines (repeats allowed, raw bytes),
body bytes (or none), whether to send the body chunked, and tags the oracle reads:

- ``protocol``: the request breaks HTTP/1.1 itself (a control character in a header,
  a header line over 8190 bytes, more than 128 headers, a method that is not a token
  aiohttp knows); aiohttp's parser refuses it before any route runs (a 400 malformed_http);
- ``oversize``: the body is over the route's size limit (a 413, or a connection reset
  after the 413, is the right answer).

Bodies that are big are built from a short recipe, and ``Request.__repr__`` prints the
recipe, so a falsifying example stays readable and can be pasted as a Python literal.

A known product bug still open would be kept out of the generated inputs at exactly one
place, marked ``TODO(fuzz-BUG-n)``, with its repro in test_fuzz.py's docstring; none is
open now.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import msgspec
from hypothesis import strategies as st

from geogate.shared.config import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CHARS

__all__ = ["ADMIN_MAX_BODY", "KNOWN_REGIONS", "MAX_BODY", "REQUEST_ID_RE", "Request",
           "admin_requests", "client_requests", "harmful"]

MAX_BODY = DEFAULT_MAX_BODY_BYTES  # both services run with the defaults in the fuzz world
ADMIN_MAX_BODY = 64 * 1024  # gateway/admin.py reads admin bodies with this limit
MAX_BATCH = DEFAULT_MAX_BATCH
MAX_CHARS = DEFAULT_MAX_CHARS
KNOWN_REGIONS = ("eu-central",)  # the fuzz world's only region
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")  # shared/http.py's rule for an echoed id
MAX_HEADER_LINE = 8190  # aiohttp's max_field_size and max_line_size
MAX_HEADERS = 128  # aiohttp's max_headers

# -- the request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes | None = None
    chunks: tuple[int, ...] = ()  # chunk sizes (the last repeats): the body goes chunked when there are any
    recipe: str | None = None  # a Python expression for a body too big to print
    tags: frozenset[str] = frozenset()
    deadline_ms: float | None = None  # a valid X-Deadline-Ms, when one was sent
    items: int | None = None  # results a 200 must carry, when the body is known good
    role: str | None = None  # the token role the request carries (admin)

    def __repr__(self) -> str:
        if self.body is None:
            body = "None"
        elif self.recipe is not None:
            body = self.recipe
        elif len(self.body) <= 4096:
            body = repr(self.body)
        else:
            body = f"{self.body[:200]!r} + ... ({len(self.body)} bytes)"
        headers = [(n, v if len(v) <= 300 else v[:100] + b"...(%d bytes)" % len(v)) for n, v in self.headers]
        return (f"Request(method={self.method!r}, path={self.path!r}, headers={headers!r}, body={body}, "
                f"chunks={self.chunks!r}, tags={sorted(self.tags)!r})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints a falsifying example
        printer.text(repr(self))

    def header(self, name: str) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass(frozen=True)
class Body:
    data: bytes | None
    recipe: str | None = None
    tags: frozenset[str] = frozenset()
    items: int | None = None  # number of results expected when the body is valid as it stands


def finish_headers(headers: list[tuple[str, bytes]], tags: set[str]) -> tuple[tuple[str, bytes], ...]:
    """Header lines as http.client can send them (no CR or LF: it refuses those), tagging
    the request ``protocol`` when a line breaks HTTP/1.1 (a control character, a line
    over aiohttp's limit, too many lines)."""
    out = []
    for name, value in headers:
        value = value.replace(b"\r", b"").replace(b"\n", b"")
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value) or len(name) + 2 + len(value) > MAX_HEADER_LINE:
            tags.add("protocol")
        out.append((name, value))
    if len(out) + 3 > MAX_HEADERS:  # http.client adds Host, Content-Length or Transfer-Encoding
        tags.add("protocol")
    return tuple(out)


# -- JSON values --------------------------------------------------------------------------------

REAL_ADDRESSES = (
    "浙江省杭州市余杭区五常街道文一西路969号",
    "杭州余杭文一西路969号",
    "上海市黄浦区南京东路100号",
    "北京市海淀区中关村大街27号",
    "杭州余杭文一西路969号阿里巴巴西溪园区3号楼5层",
    "10 Downing Street, London",
    "中关村",
    "a",
)

WEIRD_CHARS = ("\x00", "\x01", "\x1f", "\x7f", "\u0085", "\u00a0", "\u200b", "\u200e", "\u2028", "\u2029",
               "\u3000", "\ufeff", "\ufffd", "\uffff", "\U0001f600", "\U0010ffff", "\u0301", "路", " ", "\t",
               "\n", "\"", "\\", "\ud800", "\udfff")

json_scalar = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**40, 2**53 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN/Infinity serialize to invalid JSON
    st.text(max_size=16),
    st.sampled_from(["", " ", "null", "true", "[]", "{}", "0", "blue", "green", "canary"]),
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@st.composite
def near_limit_text(draw: st.DrawFn) -> str:
    ch = draw(st.sampled_from(["a", "路", "\U0001f600", " ", "\u0301", "\x00", "1", "\u3000"]))
    n = draw(st.sampled_from([MAX_CHARS - 1, MAX_CHARS, MAX_CHARS + 1, 2 * MAX_CHARS, 5000]))
    prefix = draw(st.sampled_from(["", "杭州", " "]))
    return (prefix + ch * n)[:n]


real_address = st.sampled_from(REAL_ADDRESSES)
new_address = st.builds(lambda a, n: f"{a}{n}号", real_address, st.integers(0, 10**12))  # a cache miss
address_text = st.one_of(
    real_address, real_address, new_address, new_address, new_address,
    st.text(min_size=1, max_size=30),
    st.text(alphabet=st.sampled_from(WEIRD_CHARS), min_size=1, max_size=12),
    st.text(alphabet=st.characters(categories=["Cs", "Co", "Cn", "Cc", "Cf", "Zs", "Mn"]), min_size=1, max_size=8),
    st.builds(lambda a, w: a + w, real_address, st.sampled_from(WEIRD_CHARS)),
    near_limit_text(),
    st.sampled_from(["", " ", "   ", "\t\n", "\u3000"]),
)


def _is_good_text(text: str) -> bool:
    return bool(text.strip()) and len(text) <= MAX_CHARS and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# -- serialization ------------------------------------------------------------------------------


@st.composite
def serialize(draw: st.DrawFn, obj: Any) -> tuple[bytes, bool]:
    """``obj`` as JSON bytes in one of many spellings; says whether the bytes are still
    exactly that value in strict JSON (UTF-8, no NaN, no junk)."""
    ensure_ascii = draw(st.booleans())
    style = draw(st.sampled_from(["compact", "default", "indent"]))
    kwargs: dict[str, Any] = {"ensure_ascii": ensure_ascii}
    if style == "compact":
        kwargs["separators"] = (",", ":")
    elif style == "indent":
        kwargs["indent"] = draw(st.sampled_from([1, 2, "\t"]))
    text = json.dumps(obj, **kwargs)
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate unescaped: CESU-8 bytes, not UTF-8
    strict = "NaN" not in text and "Infinity" not in text
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        strict = False
    mangle = draw(st.sampled_from(["none"] * 12 + ["ws", "bom", "trailing", "truncate", "insert", "utf16",
                                                   "utf32", "comment", "two"]))
    if mangle == "ws":
        data = draw(st.sampled_from([b" ", b"\n", b"\t", b"\r\n"])) + data + draw(st.sampled_from([b"", b" ", b"\n"]))
    elif mangle == "bom":
        data, strict = b"\xef\xbb\xbf" + data, False
    elif mangle == "trailing":
        data, strict = data + draw(st.sampled_from([b"x", b"}", b"]", b",", b"\x00", b"{}", b" 1", b"\xff"])), False
    elif mangle == "truncate" and data:
        data, strict = data[: draw(st.integers(0, len(data) - 1))], False
    elif mangle == "insert":
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82",
                                     b"\x00", b"\\", b'"', b"\\u", b"\\ud800", b"\\x41"]))
        data, strict = data[:at] + junk + data[at:], False
    elif mangle == "utf16":
        data, strict = text.encode("utf-16", "surrogatepass"), False
    elif mangle == "utf32":
        data, strict = text.encode("utf-32-le", "surrogatepass"), False
    elif mangle == "comment":
        data, strict = b"/* c */" + data, False
    elif mangle == "two":
        data, strict = data + b"\n" + data, False
    return data, strict


def _unknown_key() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["x", "Pairs", "pair", "addresses ", "", "__proto__", "results", "\u0000",
                                      "reason", "pairs\u0000"]), st.text(max_size=10))


@st.composite
def deep_body(draw: st.DrawFn, known_key: str | None) -> Body:
    """Very deep nesting: raw brackets, under a known field, or under an unknown one (which
    msgspec skips recursively when the body type does not refuse unknown fields)."""
    where = draw(st.sampled_from(["raw", "known", "unknown", "objects"] if known_key else ["raw", "unknown", "objects"]))
    depth = draw(st.one_of(st.integers(1, 50), st.sampled_from([500, 900, 1000, 5000, 10_000, 20_000]),
                           st.sampled_from([1000, 2000, 10_000])))
    closed = draw(st.booleans())
    opener = '{"a":' if where == "objects" else draw(st.sampled_from(["[", '{"a":', '[{"a":']))
    closer = {"[": "]", '{"a":': "}", '[{"a":': "}]"}[opener]
    nest = (opener * depth + "1" + (closer * depth if closed else "")).encode()
    nest_recipe = f"{opener.encode()!r} * {depth} + b'1'" + (f" + {closer.encode()!r} * {depth}" if closed else "")
    if where in ("raw", "objects"):
        head, tail = b"", b""
    elif where == "known":
        head, tail = f'{{"{known_key}": '.encode(), b"}"
    else:
        head, tail = b'{"x": ', (f', "{known_key}": []}}' if known_key else "}").encode()
    if not closed:
        tail = b""  # an unclosed nest ends the body
    recipe = " + ".join(part for part in (repr(head) if head else "", nest_recipe, repr(tail) if tail else "") if part)
    return Body(head + nest + tail, recipe)


@st.composite
def oversize_body(draw: st.DrawFn, limit: int) -> Body:
    over = draw(st.sampled_from([1, 2, 17, 4096, limit, 3 * limit]))
    kind = draw(st.sampled_from(["string", "bytes", "items"]))
    size = limit + over
    if kind == "string":
        head, tail = b'{"addresses": ["', b'"]}'
        fill = size - len(head) - len(tail)
        return Body(head + b"a" * fill + tail, f"b'{{\"addresses\": [\"' + b'a' * {fill} + b'\"]}}'",
                    frozenset({"oversize"}))
    if kind == "bytes":
        byte = draw(st.sampled_from([b"\x00", b"\xff", b"[", b" "]))
        return Body(byte * size, f"{byte!r} * {size}", frozenset({"oversize"}))
    unit = b'["a","b"],'
    n = size // len(unit) + 1
    data = b'{"pairs": [' + unit * n + b'["a","b"]]}'
    return Body(data, f"b'{{\"pairs\": [' + {unit!r} * {n} + b'[\"a\",\"b\"]]}}'", frozenset({"oversize"}))


@st.composite
def raw_body(draw: st.DrawFn) -> Body:
    kind = draw(st.sampled_from(["binary", "text", "empty", "none", "json-ish"]))
    if kind == "binary":
        return Body(draw(st.binary(max_size=64)))
    if kind == "text":
        return Body(draw(st.text(max_size=40)).encode("utf-8", "surrogatepass"))
    if kind == "empty":
        return Body(b"")
    if kind == "none":
        return Body(None)
    return Body(draw(st.sampled_from([b"{", b"}", b"[", b"null", b"true", b"0", b"-", b'"', b'""', b"{}", b"[]",
                                      b"{'pairs': []}", b'{"pairs": [["a" "b"]]}', b'{"pairs" [["a","b"]]}',
                                      b'{"pairs": [["a","b"],]}', b'{"addresses": ["a",]}', b'{,}', b"\xef\xbb\xbf{}",
                                      b'{"pairs": [["\\ud800", "b"]]}', b'{"addresses": ["\\udc00\\ud800"]}',
                                      b'{"addresses": ["\\u0000"]}', b'{"addresses": ["a\\', b"1e99999",
                                      b'{"pairs": 1e99999}', b'{"address": "a", "address": 1}'])))


# -- client API bodies --------------------------------------------------------------------------

CLIENT_PATHS = ("/v1/similarity", "/v1/parse", "/match", "/parse")
KNOWN_FIELD = {"/v1/similarity": "pairs", "/v1/parse": "addresses", "/match": "address1", "/parse": "address"}


@st.composite
def _items(draw: st.DrawFn, path: str) -> tuple[Any, int | None]:
    """A plausible payload for the route, and the results a 200 must carry when it is valid."""
    def one() -> Any:
        return draw(address_text)

    def good(x: Any) -> bool:
        return isinstance(x, str) and _is_good_text(x)

    if path in ("/match", "/parse"):
        if path == "/match":
            obj = {"address1": one(), "address2": one()}
            valid = good(obj["address1"]) and good(obj["address2"])
        else:
            obj = {"address": one()}
            valid = good(obj["address"])
        return obj, 1 if valid else None
    size = draw(st.one_of(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
                          st.sampled_from([0, 1, 2, MAX_BATCH - 1, MAX_BATCH, MAX_BATCH + 1, 1000])))
    if size > 8:  # big batches repeat a few items: cheap to draw, still a full batch for the node
        base = [one() for _ in range(draw(st.integers(1, 3)))]
        base_items = [[a, a] for a in base] if path == "/v1/similarity" else base
        items = (base_items * size)[:size]
    else:
        items = [([one(), one()] if path == "/v1/similarity" else one()) for _ in range(size)]
    flat = [x for item in items for x in (item if isinstance(item, list) else [item])]
    valid = 0 < size <= MAX_BATCH and all(good(x) for x in flat)
    return {KNOWN_FIELD[path]: items}, size if valid else None


@st.composite
def _mutated(draw: st.DrawFn, path: str) -> Any:
    """A body of the wrong shape: wrong types, wrong arity, missing or extra fields."""
    obj, _ = draw(_items(path))
    key = KNOWN_FIELD[path]
    how = draw(st.sampled_from(["replace", "replace-item", "arity", "missing", "extra", "top", "swap"]))
    if how == "replace":
        obj[key] = draw(json_value)
    elif how == "replace-item" and isinstance(obj.get(key), list) and obj[key]:
        i = draw(st.integers(0, len(obj[key]) - 1))
        item = obj[key][i]
        if isinstance(item, list) and draw(st.booleans()):
            item = list(item)
            item[draw(st.integers(0, len(item) - 1))] = draw(json_value)
            obj[key][i] = item
        else:
            obj[key][i] = draw(json_value)
    elif how == "arity" and path == "/v1/similarity":
        obj[key] = [draw(st.lists(st.text(min_size=1, max_size=5), max_size=4)) for _ in range(draw(st.integers(1, 3)))]
    elif how == "missing":
        obj.pop(key, None)
        if path == "/match":
            obj.pop(draw(st.sampled_from(["address1", "address2"])), None)
    elif how == "extra":
        obj[draw(_unknown_key())] = draw(json_value)
    elif how == "top":
        return draw(json_value)
    elif how == "swap":  # another route's field name
        obj = {draw(st.sampled_from([k for k in KNOWN_FIELD.values() if k != key] + ["address2"])): obj.pop(key, None)}
    return obj


@st.composite
def client_body(draw: st.DrawFn, path: str) -> Body:
    kind = draw(st.sampled_from(["valid"] * 7 + ["mutated"] * 6 + ["raw"] * 2 + ["deep"] * 2 + ["oversize"]))
    if kind == "valid":
        obj, items = draw(_items(path))
        data, strict = draw(serialize(obj))
        return Body(data, items=items if strict else None)
    if kind == "mutated":
        data, _ = draw(serialize(draw(_mutated(path))))
        return Body(data)
    if kind == "raw":
        return draw(raw_body())
    if kind == "deep":
        return draw(deep_body(KNOWN_FIELD.get(path, "pairs")))
    return draw(oversize_body(MAX_BODY))


# -- headers ------------------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+.^_`|~-"
# Names whose random values would frame the message differently (a second body length, a
# tunnel): common_headers sends them only with values chosen for them.
RESERVED_NAMES = {"content-length", "transfer-encoding", "host", "expect", "upgrade", "connection", "authorization"}
header_name = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=24).map(
    lambda name: "X-" + name if name.lower() in RESERVED_NAMES else name)
# Bytes a header value may hold (RFC 9110: VCHAR, SP, HTAB, obs-text): the app sees them.
legal_value_byte = st.one_of(st.integers(0x20, 0x7E), st.just(0x09), st.integers(0x80, 0xFF))
legal_value = st.lists(legal_value_byte, max_size=40).map(bytes)
# A control character (other than HTAB) in a value: HTTP/1.1 forbids it.
illegal_value = st.builds(lambda a, c, b: a + bytes([c]) + b, legal_value,
                          st.sampled_from([0x00, 0x01, 0x08, 0x0B, 0x0C, 0x1B, 0x1F, 0x7F]), legal_value)
CONTENT_TYPES = (b"application/json", b"application/json; charset=utf-8", b"application/json; charset=latin-1",
                 b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
                 b"application/xml", b"*/*", b"", b"application/json; charset=\xff", b"application/jsonx",
                 b"APPLICATION/JSON", b"application/problem+json", b"application/json;;;")

# Text for header values: no control characters (finish_headers tags those "protocol", and the
# few cases that break HTTP on purpose are drawn in common_headers), lone surrogates now and then.
header_text = st.one_of(st.text(alphabet=st.characters(exclude_categories=["Cc"]), max_size=12),
                        st.sampled_from(["\ud800", "1\udcff", "\u0085", "\u00a0 5"]))
ip_hop = st.one_of(
    st.sampled_from(["89.160.20.113", "50.114.0.1", "127.0.0.1", "10.0.0.1", "::1", "2001:db8::1", "[::1]",
                     "::ffff:89.160.20.113", "fe80::1%eth0", "89.160.20.113:443", "[2001:db8::1]:443", "unknown",
                     "_hidden", "", " ", "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.5", "999.1.1.1", "0x7f.1",
                     "089.160.20.113", "localhost", "\u0661.\u0662.\u0663.\u0664"]),
    st.ip_addresses().map(str),
    header_text,
)


@st.composite
def forwarded_for(draw: st.DrawFn) -> list[bytes]:
    def value() -> bytes:
        hops = draw(st.lists(ip_hop, min_size=1, max_size=6))
        sep = draw(st.sampled_from([", ", ",", " , ", ",,"]))
        return sep.join(hops).encode("utf-8", "surrogatepass")

    kind = draw(st.sampled_from(["one", "one", "few", "many", "long", "bytes"]))
    if kind == "one":
        return [value()]
    if kind == "few":
        return [value() for _ in range(draw(st.integers(2, 5)))]
    if kind == "many":
        return [value()] * draw(st.integers(6, 60))
    if kind == "long":
        n = draw(st.sampled_from([100, 500, 1000]))
        hop = draw(st.sampled_from(["89.160.20.113", "127.0.0.1", "10.1.1.1", "x"]))
        return [", ".join([hop] * n).encode()[:8000]]
    return [draw(legal_value)]


DEADLINE_TEXT = ("0", "-0", "-1", "-5", "-1e9", "1e309", "-1e309", "inf", "-inf", "Infinity", "nan", "NaN", "600000",
                 "600000.0001", "600001", "1e6", "9" * 400, "soon", "", " ", "10s", "1,000", "1_000", "0x10",
                 "\u0661\u0660\u0660", "\uff11\uff10", "1e-400", "5e-324", "1.7976931348623157e308", "+100",
                 "100 ", " 100", "1/2", "½", "0.5", "1", "2", "10", "50", "100", "1000", "9999", "10000", "30000",
                 "599999.999")


def _deadline_value(raw: str) -> float | None:
    """What shared/http.py's deadline() makes of the header: a valid deadline, or None."""
    try:
        ms = float(raw.strip())
    except ValueError:
        return None
    return ms if 0 < ms <= 600_000 else None


@st.composite
def deadline_header(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], float | None]:
    kind = draw(st.sampled_from(["text", "small", "number", "float", "garbage", "repeat"]))
    if kind == "text":
        raw = draw(st.sampled_from(DEADLINE_TEXT))
    elif kind == "small":  # valid, and too short for a call (504) or just long enough
        raw = draw(st.one_of(st.integers(1, 20).map(str), st.floats(1e-6, 10).map(repr), st.integers(20, 2000).map(str)))
    elif kind == "number":
        raw = str(draw(st.integers(min_value=-(10**12), max_value=10**12)))
    elif kind == "float":
        raw = repr(draw(st.floats(allow_nan=True, allow_infinity=True)))
    elif kind == "garbage":
        raw = draw(header_text)
    else:
        raw = "100, 200"
    raw = raw.replace("\r", "").replace("\n", "")  # what finish_headers leaves of it
    return [("X-Deadline-Ms", raw.encode("utf-8", "surrogatepass"))], _deadline_value(raw)


request_id_value = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9._:/+=-]{1,128}\Z"),
    st.sampled_from([b"a" * 129, b"", b" ", b"abc def", b"\xff\xfe", b"\xc3\xa9t\xc3\xa9", b"<script>", b"a\tb",
                     b"../../etc/passwd", b"%00", b"a" * 8000, "\u0661".encode()]),
    legal_value,
)
mgeo_version_value = st.one_of(st.sampled_from([b"canary", b"CANARY", b" canary ", b"stable", b"blue", b"green", b"",
                                                b"canary, canary", b"\xff", b"c\xc3\xa1nary"]), legal_value)


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


@st.composite
def common_headers(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], set[str], float | None]:
    """Headers shared by every API; returns them, tags and the valid deadline (ms) if any."""
    headers: list[tuple[str, bytes]] = []
    tags: set[str] = set()
    deadline = None
    if draw(st.integers(0, 3)):
        headers.append(("Content-Type", draw(st.one_of(st.sampled_from(CONTENT_TYPES), legal_value))))
    if draw(st.integers(0, 2)) == 0:
        headers += [("X-Forwarded-For", v) for v in draw(forwarded_for())]
    if draw(st.integers(0, 2)) == 0:
        lines, deadline = draw(deadline_header())
        headers += lines
    if draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 2))):
            headers.append(("X-Request-ID", _b(draw(request_id_value))))
    if draw(st.integers(0, 3)) == 0:
        headers.append(("X-MGeo-Version", draw(mgeo_version_value)))
    for _ in range(draw(st.integers(0, 2))):
        headers.append((draw(header_name), draw(legal_value)))
    if draw(st.integers(0, 9)) == 9:
        headers.append(("Expect", draw(st.one_of(st.sampled_from([b"100-continue", b"100-Continue", b"close"]),
                                                 legal_value))))
    if draw(st.integers(0, 3)) == 0:
        headers.append((draw(st.sampled_from(["Connection", "Accept", "Accept-Encoding", "Range", "Cookie", "Host",
                                               "Upgrade", "Origin", "If-None-Match", "Forwarded"])),
                        draw(st.one_of(st.sampled_from([b"close", b"keep-alive", b"gzip", b"*/*", b"bytes=0-1",
                                                        b"websocket", b"h2c", b"x" * 4000]),
                                       legal_value))))
    if draw(st.integers(0, 19)) == 19:  # 1 in 20 breaks HTTP/1.1: aiohttp's parser answers, not geogate
        how = draw(st.sampled_from(["ctl", "long", "many"]))
        if how == "ctl":
            headers.append((draw(st.sampled_from(["X-Request-ID", "X-Deadline-Ms", "X-Forwarded-For", "X-Junk"])),
                            draw(illegal_value)))
        elif how == "long":
            headers.append((draw(st.sampled_from(["X-Forwarded-For", "X-Request-ID", "X-Junk", "Authorization"])),
                            b"1" * draw(st.sampled_from([8191, 8200, 20_000, 70_000]))))
        else:
            headers += [("X-Forwarded-For", b"89.160.20.113")] * draw(st.integers(129, 200))
    return headers, tags, deadline


@st.composite
def _path(draw: st.DrawFn, routes: tuple[str, ...], extra: tuple[str, ...]) -> str:
    kind = draw(st.sampled_from(["route"] * 14 + ["query", "variant", "other"]))
    route = draw(st.sampled_from(routes))
    if kind == "route":
        return route
    if kind == "query":
        return route + "?" + quote(draw(st.text(max_size=20)), safe="=&")
    if kind == "variant":
        return draw(st.sampled_from([route + "/", route.upper(), "/" + route, route + "%00", route + "/..",
                                     route.replace("/", "/%2F", 1), route + ";x", route + "#frag",
                                     route.replace("v1", "v%31"), route + "?" + "a" * 7000]))
    return draw(st.sampled_from(extra + ("/", "/v2/similarity", "/v1", "/%ff", "/" + "x" * 4000, "/v1/similarity/x",
                                         "*", "/admin", "/metrics/../v1/parse")))


METHODS = ("POST",) * 24 + ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "PROPFIND")
BAD_METHODS = ("FOO", "post", "P0ST", "G(ET", "X" * 100, "PRI")


@st.composite
def _method(draw: st.DrawFn, tags: set[str]) -> str:
    if draw(st.integers(0, 49)) == 49:  # 1 in 50
        tags.add("protocol")
        return draw(st.sampled_from(BAD_METHODS))
    return draw(st.sampled_from(METHODS))


@st.composite
def _chunks(draw: st.DrawFn, body: bytes | None) -> tuple[int, ...]:
    if body is None or not body or draw(st.integers(0, 5)):
        return ()
    if len(body) > 65536:
        return (65536,)
    return tuple(draw(st.lists(st.integers(1, max(1, len(body))), min_size=1, max_size=4)))


@st.composite
def client_requests(draw: st.DrawFn, *, for_gateway: bool) -> Request:
    """A request for the scoring routes of the gateway (``for_gateway``) or of a node."""
    tags: set[str] = set()
    method = draw(_method(tags))
    extra = ("/healthz", "/readyz", "/openapi.json") if for_gateway else ("/health/live", "/health/ready", "/info")
    path = draw(_path(CLIENT_PATHS, extra))
    if path == "*":  # the asterisk form is for OPTIONS only: aiohttp answers any "* HTTP/1.1" itself
        tags.add("protocol")
    body = draw(client_body(path if path in CLIENT_PATHS else "/v1/parse"))
    headers, header_tags, deadline = draw(common_headers())
    tags |= header_tags | body.tags
    lines = finish_headers(headers, tags)
    items = body.items if (method == "POST" and path in CLIENT_PATHS) else None
    return Request(method, path, lines, body.data, draw(_chunks(body.data)), body.recipe, frozenset(tags), deadline, items)


# -- admin API ----------------------------------------------------------------------------------

ROLE_FOR = {"viewer": 0, "operator": 1, "admin": 2}


def reason_value() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(["fuzz", "x", "", " ", "a" * 500, "a" * 501, "理由", "\u0000", "\ud800"]),
                     st.text(max_size=20), json_value)


def epoch_value() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.integers(-5, 10_000), st.sampled_from([2**63, -(2**63) - 1, 10**30, 1.5, "1"]),
                     json_value)


def _field(draw: st.DrawFn, good: st.SearchStrategy[Any], name: str, obj: dict[str, Any]) -> None:
    choice = draw(st.integers(0, 9))
    if choice < 6:
        obj[name] = draw(good)
    elif choice < 9:
        obj[name] = draw(json_value)
    # else: missing


@st.composite
def admin_body(draw: st.DrawFn, route: str) -> Body:
    kind = draw(st.sampled_from(["fields"] * 10 + ["raw", "deep", "oversize", "big-valid-ish"]))
    if kind == "raw":
        return draw(raw_body())
    if kind == "deep":
        return draw(deep_body("reason"))
    if kind == "oversize":
        return draw(oversize_body(ADMIN_MAX_BODY))
    obj: dict[str, Any] = {}
    if route == "switch":
        _field(draw, st.sampled_from(["blue", "green", "BLUE", "red", "", "blue "]), "to", obj)
        _field(draw, st.booleans(), "dry_run", obj)
    elif route == "canary":
        _field(draw, st.one_of(st.sampled_from([0, 0.0, -0.0, 1, 50, 100, 100.0001, -1, 1e308]),
                               st.floats(allow_nan=True, allow_infinity=True)), "percent", obj)
    elif route == "colors":
        _field(draw, st.one_of(st.sampled_from(["ab", "abc", "mgeo_demo_tiny-synth_v1-20261124T0144Z", "v" * 201]),
                               st.text(max_size=12)), "model_version", obj)
        _field(draw, st.one_of(st.sampled_from(["", "0" * 64, "F" * 64, "0" * 63, "g" * 64]), st.text(max_size=8)),
               "sha256", obj)
    elif route == "drills":
        _field(draw, st.one_of(st.sampled_from(["eu-central", "us-east", "", "EU-CENTRAL", "eu-central "]),
                               st.text(max_size=12)), "region", obj)
        _field(draw, st.one_of(st.sampled_from([0, -1, 0.001, 1, 600, 601, 1e308]), st.floats()), "duration_s", obj)
        _field(draw, st.sampled_from(["fail", "drain", "kill", "restore", "", "FAIL"]), "mode", obj)
        _field(draw, st.booleans(), "wait", obj)
    elif route == "clients":
        _field(draw, st.one_of(st.sampled_from([*FUZZ_CLIENTS, "", "x" * 65, "bad name", "é", "a/b"]),
                               st.text(max_size=12)), "name", obj)
        _field(draw, st.one_of(st.sampled_from([["parse"], ["similarity", "parse"], [], ["other"], "parse"]),
                               st.lists(st.text(max_size=10), max_size=3)), "tasks", obj)
        _field(draw, st.one_of(st.sampled_from([["eu-central"], [], [""]]), st.lists(st.text(max_size=10), max_size=3)),
               "regions", obj)
        number = st.one_of(st.sampled_from([0, 1, 0.5, -1, 1e308, 10**30, "5"]), st.floats(allow_nan=True))
        _field(draw, st.one_of(st.dictionaries(st.sampled_from(["rps", "burst", "items_per_s", "items_burst",
                                                                 "daily_quota", "max_concurrent", "other"]),
                                               number, max_size=4), json_value), "limits", obj)
        _field(draw, st.one_of(st.sampled_from([0, 1, 3600, -1, 1e12]), st.floats()), "overlap_s", obj)
        _field(draw, st.booleans(), "disabled", obj)
        _field(draw, st.booleans(), "key", obj)
    _field(draw, reason_value(), "reason", obj)
    if draw(st.booleans()):
        _field(draw, epoch_value(), "expected_epoch", obj)
    if draw(st.integers(0, 4)) == 0:
        obj[draw(_unknown_key())] = draw(json_value)
    if kind == "big-valid-ish":
        obj["reason"] = "r" * draw(st.sampled_from([499, 500, 501, 60_000]))
    top: Any = obj if draw(st.integers(0, 14)) else draw(json_value)
    data, _ = draw(serialize(top))
    return Body(data)


def _decodes(data: bytes | None, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(data or b"", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None


def harmful(route: str, path_args: tuple[str, ...], role: str | None, data: bytes | None) -> bool:
    """Would this admin call break the world for later examples (a failed or drained
    region, a new color, a running drill)? The guard decodes with the gateway's own
    body types, so a body it lets through is rejected by the gateway the same way."""
    from geogate.gateway.control.admin import ColorBody, DrillBody, ReasonBody
    from geogate.gateway.control.clients import NewClientBody

    level = ROLE_FOR.get(role or "", -1)
    if route == "clients":  # a few fuzz clients at most: thousands would bloat the registry record
        created = _decodes(data, NewClientBody)
        return level >= 2 and path_args == ("",) and created is not None and created.name not in FUZZ_CLIENTS
    if route == "colors":
        return level >= 2 and _decodes(data, ColorBody) is not None
    if route == "regions":
        region, action = path_args
        return (level >= 1 and action in ("drain", "fail") and _near_known(region)
                and _decodes(data, ReasonBody) is not None)
    if route == "drills":
        body = _decodes(data, DrillBody)
        return level >= 1 and body is not None and _near_known(body.region)
    return False


def _near_known(region: str) -> bool:
    return any(region.strip().lower() == known for known in KNOWN_REGIONS)


@st.composite
def admin_auth(draw: st.DrawFn, tokens: dict[str, str], wanted: str, *, never_valid: bool = False
               ) -> tuple[list[tuple[str, bytes]], str | None]:
    """Authorization header lines, and the role they authenticate as (None: none)."""
    kind = draw(st.sampled_from(["wanted"] * 6 + ["other"] * 2 + ["garbage"] * 3))
    if never_valid:
        kind = "garbage"
    if kind == "wanted":
        scheme = draw(st.sampled_from(["Bearer", "Bearer", "bearer", "BEARER"]))
        pad = draw(st.sampled_from(["", "", " ", "\t"]))
        return [("Authorization", f"{scheme} {pad}{tokens[wanted]}{pad}".encode())], wanted
    if kind == "other":
        role = draw(st.sampled_from(sorted(tokens)))
        return [("Authorization", f"Bearer {tokens[role]}".encode())], role
    value = draw(st.one_of(
        st.sampled_from([b"", b"Bearer", b"Bearer ", b"Bearer  ", b"Basic dXNlcjpwYXNz", b"Token abc", b"bearer",
                         b"Bearer " + b"a" * 7000, b"Bearer \xc3\xa9", b"Bearer \xe2\x80\x8b", b"Bearer\ttoken",
                         b"Bearer " + tokens[wanted][:-1].encode(), b"Bearer " + tokens[wanted].encode() + b"x",
                         b"Bearer " + tokens[wanted].upper().encode()]),
        legal_value,
        st.builds(lambda scheme, token: scheme + token, st.sampled_from([b"Bearer ", b"bearer  "]), legal_value),
    ))
    lines = [("Authorization", value)]
    if draw(st.integers(0, 4)) == 4:
        lines = [] if draw(st.booleans()) else lines * 2
    return lines, None


def _strongest(tokens: dict[str, str], lines: list[tuple[str, bytes]]) -> str | None:
    """The strongest role whose token appears anywhere in the headers (a conservative guard)."""
    best = None
    for role, token in tokens.items():
        seen = any(token.encode() in value for _, value in lines)
        if seen and (best is None or ROLE_FOR[role] > ROLE_FOR[best]):
            best = role
    return best


ADMIN_READS = ("status", "whoami", "audit", "route", "drill", "events", "clients-list")
ADMIN_WRITES = ("switch", "rollback", "canary", "colors", "regions", "drills", "clients")
FUZZ_CLIENTS = ("fuzz-a", "fuzz-b")
CLIENT_PATHS_ADMIN = ("", "/{name}", "/{name}/keys", "/{name}/keys/{key}/revoke", "/{name}/revoke", "/{name}/x")

COUNT_VALUES = ("50", "1", "0", "-1", "1000", "1001", "1e3", "1.0", "", " 5", "5 ", "0x10", "1_000", "\u0665",
                "\uff15", "9" * 5000, "nan", "%ff", "10&count=20", "abc")
IP_VALUES = ("89.160.20.113", "50.114.0.1", "127.0.0.1", "::1", "::ffff:89.160.20.113", "fe80::1%eth0", "", " ",
             "1.2.3", "256.1.1.1", "[::1]", "2001:db8::", "0.0.0.0", "\u0661.\u0662.\u0663.\u0664", "x" * 5000,
             "1.2.3.4/24", "%ff%fe", "%00")
REGION_SEGMENTS = ("eu-central", "us-east", "EU-CENTRAL", "eu-central ", "", "..", "%2F", "x" * 300, "%ff", "%00",
                   "region with space", "eu%2Dcentral", "\u00e9")


def _q(value: str) -> str:
    return quote(value, safe="%&=")  # keep %xx as written: raw percent garbage reaches the server


def _segment(value: str) -> str:
    return quote(value, safe="")


@st.composite
def admin_requests(draw: st.DrawFn, tokens: dict[str, str]) -> Request:
    tags: set[str] = set()
    route = draw(st.sampled_from(ADMIN_READS + ADMIN_WRITES + ("unknown",)))
    args: tuple[str, ...] = ()
    body: Body = Body(None)
    if route in ADMIN_READS:
        method = "GET" if draw(st.integers(0, 9)) else draw(st.sampled_from(["POST", "PUT", "DELETE", "HEAD"]))
        wanted = "viewer"
        if route == "audit":
            query = draw(st.one_of(st.just(""), st.sampled_from(COUNT_VALUES).map(lambda v: "?count=" + _q(v)),
                                   st.text(max_size=10).map(lambda v: "?count=" + quote(v))))
            path = "/admin/v1/audit" + query
        elif route == "route":
            parts = []
            if draw(st.integers(0, 5)):
                parts.append("ip=" + _q(draw(st.one_of(st.sampled_from(IP_VALUES), st.ip_addresses().map(str),
                                                       st.text(max_size=20)))))
            if draw(st.booleans()):
                parts.append("task=" + _q(draw(st.one_of(st.sampled_from(["similarity", "parse", "", "PARSE", "x"]),
                                                         st.text(max_size=10)))))
            path = "/admin/v1/route" + ("?" + "&".join(parts) if parts else "")
        elif route == "drill":
            path = "/admin/v1/drills/" + draw(st.one_of(st.from_regex(r"\A[0-9a-f]{12}\Z"),
                                                        st.text(min_size=1, max_size=20).map(_segment),
                                                        st.sampled_from(["%ff", "%00", "..", "x" * 5000])))
        else:
            path = "/admin/v1/" + route.removesuffix("-list")
        if method != "GET" and draw(st.booleans()):
            body = draw(admin_body("switch"))
    elif route in ADMIN_WRITES:
        method = "POST" if draw(st.integers(0, 14)) else draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD"]))
        wanted = "admin" if route in ("colors", "clients") else "operator"
        if route == "clients":
            name = draw(st.one_of(st.sampled_from([*FUZZ_CLIENTS, "nobody", "%ff", "%00", "x" * 300]),
                                  st.text(min_size=1, max_size=10).map(_segment)))
            key = draw(st.one_of(st.from_regex(r"\A[0-9a-f]{8}\Z"), st.sampled_from(["file0", "%ff", ""])))
            suffix = draw(st.sampled_from(CLIENT_PATHS_ADMIN)).format(name=name, key=key)
            args, path = (suffix,), "/admin/v1/clients" + suffix
        elif route == "colors":
            color = draw(st.one_of(st.sampled_from(["blue", "green", "red", "BLUE", "%ff", "%00", "x" * 300]),
                                   st.text(min_size=1, max_size=10).map(_segment)))
            args, path = (color,), f"/admin/v1/colors/{color}"
        elif route == "regions":
            region = draw(st.one_of(st.sampled_from(REGION_SEGMENTS).map(_q), st.text(min_size=1, max_size=12).map(_segment)))
            action = draw(st.one_of(st.sampled_from(["drain", "fail", "restore", "DRAIN", "kill", "", "%00"]).map(_q),
                                    st.text(min_size=1, max_size=8).map(_segment)))
            args, path = (region, action), f"/admin/v1/regions/{region}/{action}"
        else:
            path = f"/admin/v1/{route}"
        body = draw(admin_body(route))
    else:
        method = draw(st.sampled_from(["GET", "POST"]))
        wanted = "viewer"
        path = draw(st.sampled_from(["/admin/v1", "/admin/v1/", "/admin/v2/status", "/admin/v1/status/x",
                                     "/admin/v1/regions/eu-central", "/admin/v1/drills", "/admin/v1/colors",
                                     "/admin/v1/regions//fail", "/admin/v1/STATUS", "/admin/v1/status?x=%ff"]))
    # A valid token on GET /admin/v1/events streams forever: that route only gets bad ones.
    auth, role = draw(admin_auth(tokens, wanted, never_valid=(route == "events")))
    headers, header_tags, deadline = draw(common_headers())
    tags |= header_tags | body.tags
    data = body.data
    if route in ADMIN_WRITES and method == "POST":
        plain = tuple(unquote(a) for a in args)
        if route == "clients":
            plain = ("" if args == ("",) else "other",)
        if harmful(route, plain, role, data) or harmful(route, plain, _strongest(tokens, auth + headers), data):
            # A valid change that would break the world: one unknown field makes the gateway refuse it.
            data = data[:-1] + b', "fuzz-unknown-field": 1}' if data and data.endswith(b"}") else b"[]"
            assert not harmful(route, plain, "admin", data), data
    lines = finish_headers(auth + headers, tags)
    recipe = body.recipe if data is body.data else None
    return Request(method, path, lines, data, draw(_chunks(data)), recipe, frozenset(tags), deadline, role=role)
