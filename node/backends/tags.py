"""BIO/BIES token tags <-> MGeo element spans, through a fast tokenizer's offset mapping.

Training (the demo model) encodes character spans into per-token tags with
``encode_tags``; serving decodes predicted tags back into spans with ``decode_tags``.
Keeping both here means the round trip is tested in one place. Tags are ``O`` or
``<P>-<type>`` with P in B, I, E, S; plain BIO is the special case without E and S.
"""

from __future__ import annotations

from collections.abc import Sequence

from geogate.shared.schemas import Element

__all__ = ["OUTSIDE", "Span", "decode_tags", "encode_tags", "tag_set"]

OUTSIDE = "O"
Span = tuple[str, int, int]  # (type, start, end): character offsets, end exclusive
Offsets = Sequence[tuple[int, int]]


def tag_set(types: Sequence[str]) -> list[str]:
    """All BIES tags for ``types``, ``O`` first, in a stable order (the label ids)."""
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in "BIES"]


def encode_tags(offsets: Offsets, spans: Sequence[Span]) -> list[str | None]:
    """Per-token tags for character ``spans``; ``None`` for special tokens (no offsets)."""
    tags: list[str | None] = []
    for start, end in offsets:
        if end <= start:
            tags.append(None)
            continue
        tag = OUTSIDE
        for kind, s, e in spans:
            if s <= start and end <= e:
                first, last = start == s, end == e
                prefix = "S" if first and last else "B" if first else "E" if last else "I"
                tag = f"{prefix}-{kind}"
                break
        tags.append(tag)
    return tags


def decode_tags(
    tags: Sequence[str], offsets: Offsets, text: str, word_ids: Sequence[int | None] | None = None
) -> list[Element]:
    """Spans from per-token tags. Lenient, as a model's output may be ill-formed:
    an I/E that does not continue a span of its type starts one.

    With ``word_ids`` (the fast tokenizer's), a word split into pieces ("969" -> 9 ##6
    ##9) takes the tag of its first piece and covers all of them: MGeo labels only first
    pieces, so its predictions for the others mean nothing.
    """
    if word_ids is not None:
        tags, offsets = _by_word(tags, offsets, word_ids)
    elements: list[Element] = []
    current: list[int | str] | None = None  # [type, start, end]

    def close() -> None:
        nonlocal current
        if current is not None:
            kind, s, e = current
            elements.append(Element(type=str(kind), text=text[int(s) : int(e)], start=int(s), end=int(e)))
            current = None

    for tag, (start, end) in zip(tags, offsets):
        if end <= start:  # special or padding token
            continue
        if tag == OUTSIDE or "-" not in tag:
            close()
            continue
        prefix, kind = tag.split("-", 1)
        continues = current is not None and current[0] == kind and prefix in ("I", "E")
        if continues:
            assert current is not None
            current[2] = end
        else:
            close()
            current = [kind, start, end]
        if prefix in ("E", "S"):
            close()
    close()
    return elements


def _by_word(
    tags: Sequence[str], offsets: Offsets, word_ids: Sequence[int | None]
) -> tuple[list[str], list[tuple[int, int]]]:
    word_tags: list[str] = []
    word_offsets: list[tuple[int, int]] = []
    previous: int | None = None
    for tag, (start, end), word in zip(tags, offsets, word_ids):
        if word is None or end <= start:
            previous = None
            continue
        if word == previous and word_offsets:
            word_offsets[-1] = (word_offsets[-1][0], end)
        else:
            word_tags.append(tag)
            word_offsets.append((start, end))
        previous = word
    return word_tags, word_offsets
