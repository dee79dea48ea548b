"""Wire types of the scoring API, spoken by both the node and the gateway (docs/design.md).

Decoding is strict (msgspec): a wrong type is an InvalidRequest, never a crash. Limits
that depend on configuration (batch size, address length) are checked by
``validate_*`` so that both services apply them the same way.
"""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from geogate.shared.errors import BatchTooLarge, InputTooLong, InvalidJSON, InvalidRequest

__all__ = [
    "LABELS",
    "CompatParseRequest",
    "CompatParseResponse",
    "Element",
    "MatchRequest",
    "MatchResponse",
    "ParseRequest",
    "ParseResponse",
    "ParseResult",
    "SimilarityRequest",
    "SimilarityResponse",
    "SimilarityResult",
    "decode",
    "encode",
    "validate_addresses",
    "validate_pairs",
]

# MGeo entity alignment's classes; `score` is the probability of EXACT_MATCH.
NOT_MATCH: Final = "not_match"
PARTIAL_MATCH: Final = "partial_match"
EXACT_MATCH: Final = "exact_match"
LABELS: Final = (NOT_MATCH, PARTIAL_MATCH, EXACT_MATCH)


class SimilarityRequest(msgspec.Struct, frozen=True):
    pairs: list[tuple[str, str]]


class SimilarityResult(msgspec.Struct, frozen=True):
    score: float
    label: str


class SimilarityResponse(msgspec.Struct, frozen=True):
    results: list[SimilarityResult]
    model_version: str
    color: str
    region: str


class ParseRequest(msgspec.Struct, frozen=True):
    addresses: list[str]


class Element(msgspec.Struct, frozen=True):
    type: str
    text: str
    start: int
    end: int


class ParseResult(msgspec.Struct, frozen=True):
    elements: list[Element]


class ParseResponse(msgspec.Struct, frozen=True):
    results: list[ParseResult]
    model_version: str
    color: str
    region: str


class MatchRequest(msgspec.Struct, frozen=True):
    """Compatibility route ``POST /match`` of existing clients."""

    address1: str
    address2: str


class MatchResponse(msgspec.Struct, frozen=True):
    similarity: float


class CompatParseRequest(msgspec.Struct, frozen=True):
    """Compatibility route ``POST /parse`` of existing clients."""

    address: str


class CompatParseResponse(msgspec.Struct, frozen=True):
    elements: list[Element]


T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[object]] = {}


def decode(body: bytes, kind: type[T]) -> T:
    """Decode a request body, mapping every failure onto the error tree."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)  # type: ignore[return-value]
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # an unknown field nested ~1,000 deep, skipped by msgspec recursively
        raise InvalidJSON("request body is nested too deeply") from exc
    except UnicodeDecodeError as exc:  # msgspec raises it for bad bytes inside a string
        raise InvalidJSON(f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc


def encode(obj: object) -> bytes:
    return _encoder.encode(obj)


def validate_pairs(pairs: list[tuple[str, str]], *, max_items: int, max_chars: int) -> None:
    _check_count("pairs", len(pairs), max_items)
    for i, (a, b) in enumerate(pairs):
        _check_text(a, f"pairs[{i}][0]", max_chars)
        _check_text(b, f"pairs[{i}][1]", max_chars)


def validate_addresses(addresses: list[str], *, max_items: int, max_chars: int) -> None:
    _check_count("addresses", len(addresses), max_items)
    for i, text in enumerate(addresses):
        _check_text(text, f"addresses[{i}]", max_chars)


def _check_count(what: str, n: int, max_items: int) -> None:
    if n == 0:
        raise InvalidRequest(f"{what} must not be empty")
    if n > max_items:
        raise BatchTooLarge(f"{n} {what} in one request; at most {max_items} are allowed")


def _check_text(text: str, where: str, max_chars: int) -> None:
    if not text.strip():
        raise InvalidRequest(f"{where} is empty")
    if len(text) > max_chars:
        raise InputTooLong(f"{where} has {len(text)} characters; at most {max_chars} are allowed")
