"""BIO/BIES tags <-> element spans."""

from __future__ import annotations

from geogate.node.backends.tags import decode_tags, encode_tags, tag_set
from geogate.shared.schemas import Element

TEXT = "浙江省杭州市文一西路969号"
# One token per character, plus [CLS] and [SEP] without offsets.
OFFSETS = [(0, 0)] + [(i, i + 1) for i in range(len(TEXT))] + [(0, 0)]
SPANS = [("prov", 0, 3), ("city", 3, 6), ("road", 6, 10), ("roadno", 10, 14)]


def test_round_trip_through_tokens() -> None:
    tags = encode_tags(OFFSETS, SPANS)
    assert tags[0] is None and tags[-1] is None
    assert tags[1:4] == ["B-prov", "I-prov", "E-prov"]
    decoded = decode_tags([t or "O" for t in tags], OFFSETS, TEXT)
    assert [(e.type, e.start, e.end) for e in decoded] == SPANS
    assert decoded[0] == Element(type="prov", text="浙江省", start=0, end=3)


def test_multi_char_tokens_and_single_token_spans() -> None:
    text = "969号"
    offsets = [(0, 3), (3, 4)]  # "969" as one token
    tags = encode_tags(offsets, [("roadno", 0, 4)])
    assert tags == ["B-roadno", "E-roadno"]
    assert encode_tags([(0, 3)], [("roadno", 0, 3)]) == ["S-roadno"]
    assert decode_tags(["B-roadno", "E-roadno"], offsets, text) == [Element("roadno", "969号", 0, 4)]


def test_plain_bio_and_ill_formed_sequences_decode_leniently() -> None:
    text = "abcdef"
    offsets = [(i, i + 1) for i in range(6)]
    # BIO: B I O B I I
    bio = ["B-road", "I-road", "O", "B-poi", "I-poi", "I-poi"]
    assert [(e.type, e.start, e.end) for e in decode_tags(bio, offsets, text)] == [("road", 0, 2), ("poi", 3, 6)]
    # An I of another type starts a new span; an E without a B is a span of its own.
    odd = ["I-road", "I-poi", "E-poi", "E-city", "S-town", "O"]
    assert [(e.type, e.start, e.end) for e in decode_tags(odd, offsets, text)] == [
        ("road", 0, 1), ("poi", 1, 3), ("city", 3, 4), ("town", 4, 5)
    ]


def test_tag_set_is_stable() -> None:
    tags = tag_set(["prov", "city"])
    assert tags[0] == "O" and len(tags) == 9 and tags[1:5] == ["B-prov", "I-prov", "E-prov", "S-prov"]


def test_word_pieces_take_the_first_piece_tag() -> None:
    """MGeo labels first pieces only: "969" (9 ##6 ##9) is one word and one roadno span,
    whatever the model said about ##6 and ##9."""
    text = "路969号"
    offsets = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 0)]
    words = [None, 0, 1, 1, 1, 2, None]
    tags = ["O", "S-road", "B-roadno", "O", "S-poi", "E-roadno", "O"]
    decoded = decode_tags(tags, offsets, text, words)
    assert [(e.type, e.text) for e in decoded] == [("road", "路"), ("roadno", "969号")]
    assert [(e.type, e.text) for e in decode_tags(tags, offsets, text)][1] == ("roadno", "9")  # per piece
