"""Synthetic Chinese addresses and address pairs for the demo model; deterministic per seed.

Every generator takes a ``random.Random`` so that a seed fixes the whole data set.

**Places and granularity.** A place is a door on a road (road + number, optionally a POI
at that number) in a district of a city, with building parts below it (building, unit,
floor, room). A written address names the place down to some *granularity*, coarse to
fine: district, town (街道/镇), road, door (road + number and/or POI), then each building
part in order. Admin levels above the finest one may be full (浙江省), short (浙江) or
left out, since the road implies them.

**Pair labels** (what the similarity model learns):

- ``exact_match``: the same place at the same granularity, written differently: province,
  city, district and town full, short or left out; the community left out; the POI given
  with the road number, instead of it (its position in parentheses) or not at all (a POI
  stands for its road number, so ``文一西路969号`` and ``阿里巴巴西溪园区`` are the same door,
  but a pair always shares the road number or the POI, never one against the other);
  other notation for building parts (3号楼/3幢/3栋, 5层/5楼/5F, 501室/501房/501,
  3幢2单元501室 = 3-2-501); the floor left out where the room is given (501 is on floor 5);
  附近/旁边/对面 after the door.
- ``partial_match``: one address contains the other: every element both give agrees,
  and one stops at a coarser granularity (文一西路 vs 文一西路969号; 969号 vs 969号3号楼;
  3号楼 vs 3号楼501室; 余杭区 vs a full address in 余杭区).
- ``not_match``: an element both give disagrees (another city, district, town, road,
  road number, POI, building, unit, floor or room), or the places are unrelated.

The differing element of a negative and the coarse side's finest element of a partial
pair are always written on both sides, so every label can be read off the text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, overload

from geogate.node.demo.gazetteer import (
    COMMUNITY_STEMS,
    GENERIC_ROADS,
    POI_STEMS,
    POI_SUFFIXES,
    PROVINCES,
    SUBPOIS,
    City,
    District,
    Province,
)
from geogate.shared.schemas import EXACT_MATCH, LABELS, NOT_MATCH, PARTIAL_MATCH

__all__ = [
    "LABELS",
    "LITERALS",
    "TYPES",
    "AnnotatedPair",
    "Element",
    "Place",
    "Span",
    "address_dataset",
    "annotated_pair_dataset",
    "dataset",
    "make_address",
    "make_annotated_pair",
    "make_pair",
    "pair_dataset",
]

# MGeo element types the demo parser tags (its label set is tags.tag_set(TYPES)).
TYPES: tuple[str, ...] = (
    "prov", "city", "district", "town", "community", "road", "roadno", "poi", "subpoi",
    "houseno", "cellno", "floorno", "roomno", "assist", "distance",
)
Span = tuple[str, int, int]
Pair = tuple[str, str, str]
Element = tuple[str, int, int, str | None]  # (type, start, end, canonical value)
AnnotatedPair = tuple[str, str, str, list[Element], list[Element]]

DISTRICT, TOWN, ROAD, DOOR = 0, 1, 2, 3  # granularity; DOOR + k adds k building parts
MAX_CHARS = 58  # two addresses and the special tokens fit the node's default 128 tokens

_PAIR_ASSISTS = ("附近", "旁边", "对面")
_ASSISTS = (*_PAIR_ASSISTS, "东侧", "西侧", "南侧", "北侧", "斜对面", "隔壁")
_HEADINGS = ("往东", "往西", "往南", "往北", "向东", "向北")  # assist followed by a distance
_GATES = ("东门", "南门", "西门", "北门")
_PARENS = (("(", ")"), ("（", "）"))
_HOUSE_DIGIT = ("号楼", "幢", "栋", "号楼", "座")
_HOUSE_LETTER = ("座", "栋", "幢")
_FLOOR = ("层", "楼", "F")
_ROOM = ("室", "室", "房", "")
# Every literal the renderer writes, so that the tokenizer's vocabulary covers them.
LITERALS: tuple[str, ...] = (
    *_ASSISTS, *_HEADINGS, *_GATES, *(p for pair in _PARENS for p in pair), *_HOUSE_DIGIT,
    *_HOUSE_LETTER, *_FLOOR, *_ROOM, "号", "单元", "米", "社区", "-",
)

_STRUCTURES: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 1.0),
    (("houseno",), 1.0),
    (("houseno", "roomno"), 1.5),
    (("houseno", "cellno", "roomno"), 2.0),
    (("houseno", "floorno"), 0.7),
    (("houseno", "floorno", "roomno"), 2.0),
    (("floorno", "roomno"), 1.2),
    (("floorno",), 0.4),
)


@dataclass(frozen=True)
class Place:
    prov: Province
    city: City
    district: District
    town: str
    community: str
    road: str
    roadno: int
    poi: str | None
    subpoi: str | None
    detail: tuple[tuple[str, str], ...]  # building parts in order, e.g. (("houseno", "3"), ("roomno", "501"))

    @property
    def finest(self) -> int:
        return DOOR + len(self.detail)


# ---------------------------------------------------------------------------- places


def _roadno(rng: random.Random) -> int:
    return rng.randint(1, 999) if rng.random() < 0.9 else rng.randint(1000, 2999)


def _poi(rng: random.Random, district: District) -> tuple[str | None, str | None]:
    r = rng.random()
    if r < 0.35:
        return None, None
    if r < 0.55 and district.pois:
        return rng.choice(district.pois), None
    poi = rng.choice(POI_STEMS) + rng.choice(POI_SUFFIXES)
    return poi, rng.choice(SUBPOIS) if rng.random() < 0.2 else None


def _room(rng: random.Random, floor: int) -> str:
    return f"{floor}{rng.randint(1, 12):02d}"


def _floor(rng: random.Random) -> int:
    return rng.randint(1, 9) if rng.random() < 0.7 else rng.randint(10, 32)


def _detail(rng: random.Random) -> tuple[tuple[str, str], ...]:
    structures, weights = zip(*_STRUCTURES)
    structure: tuple[str, ...] = rng.choices(structures, weights)[0]
    floor = _floor(rng)  # also fixes the room number when the floor is not a part
    parts: list[tuple[str, str]] = []
    for kind in structure:
        if kind == "houseno":
            value = str(rng.randint(1, 30)) if rng.random() < 0.85 else rng.choice("ABCDEF")
        elif kind == "cellno":
            value = str(rng.randint(1, 6))
        elif kind == "floorno":
            value = str(floor)
        else:
            value = _room(rng, floor)
        parts.append((kind, value))
    return tuple(parts)


def _new_poi(rng: random.Random, district: District, old: str | None) -> tuple[str | None, str | None]:
    while True:
        poi, subpoi = _poi(rng, district)
        if poi is None or poi != old:
            return poi, subpoi


def _place(rng: random.Random) -> Place:
    prov = rng.choice(PROVINCES)
    city = rng.choice(prov.cities)
    district = rng.choice(city.districts)
    road = rng.choice(GENERIC_ROADS) if rng.random() < 0.25 else rng.choice(district.roads)
    poi, subpoi = _poi(rng, district)
    return Place(
        prov, city, district, rng.choice(district.towns), rng.choice(COMMUNITY_STEMS) + "社区",
        road, _roadno(rng), poi, subpoi, _detail(rng),
    )


def _other(rng: random.Random, options: Sequence[str], old: str) -> str:
    return rng.choice([o for o in options if o != old])


def _other_number(rng: random.Random, old: int) -> int:
    while True:
        new = old + rng.choice((-1, 1)) * rng.randint(1, 20) if rng.random() < 0.6 else _roadno(rng)
        if new > 0 and new != old:
            return new


def _mutate(rng: random.Random, p: Place, kind: str) -> Place:
    """A different place that differs from ``p`` in ``kind`` (and what that drags along)."""
    if kind.startswith("detail"):
        i = int(kind.removeprefix("detail"))
        parts = list(p.detail)
        part, value = parts[i]
        if part == "houseno":
            new = _other(rng, [str(n) for n in range(1, 31)] if value.isdigit() else "ABCDEF", value)
        elif part == "cellno":
            new = _other(rng, "123456", value)
        elif part == "floorno":
            new = _other(rng, [str(n) for n in range(1, 33)], value)
            # the room stays on its floor
            parts = [(k, _room(rng, int(new)) if k == "roomno" else v) for k, v in parts]
        else:
            new = value
            while new == value:
                new = _room(rng, int(value[:-2]))
        parts[i] = (part, new)
        return replace(p, detail=tuple(parts))
    if kind == "roadno":
        poi, subpoi = _new_poi(rng, p.district, p.poi)
        return replace(p, roadno=_other_number(rng, p.roadno), poi=poi, subpoi=subpoi)
    if kind == "poi":
        while True:
            poi, subpoi = _new_poi(rng, p.district, p.poi)
            if poi is not None:
                return replace(p, poi=poi, subpoi=subpoi, roadno=_other_number(rng, p.roadno))
    if kind == "road":
        poi, subpoi = _new_poi(rng, p.district, p.poi)
        road = _other(rng, [*p.district.roads, *GENERIC_ROADS], p.road)
        return replace(p, road=road, roadno=_roadno(rng), poi=poi, subpoi=subpoi)
    if kind == "town":
        community = rng.choice(COMMUNITY_STEMS) + "社区"
        return replace(p, town=_other(rng, p.district.towns, p.town), community=community)
    if kind == "district":
        district = rng.choice([d for d in p.city.districts if d is not p.district])
        return replace(p, district=district, town=rng.choice(district.towns))
    if kind == "city":  # a road of the same name and number (and a chain's POI) elsewhere
        prov, city = rng.choice([(pv, c) for pv in PROVINCES for c in pv.cities if c is not p.city])
        district = rng.choice(city.districts)
        return replace(p, prov=prov, city=city, district=district, town=rng.choice(district.towns))
    raise ValueError(f"unknown mutation {kind!r}")


# ---------------------------------------------------------------------------- rendering


class _Text:
    """An address under construction: text, the spans of its typed pieces and, for each
    span, the canonical value it writes (浙江 and 浙江省 are both 浙江省; 3幢 and 3号楼 are 3)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.keys: list[str | None] = []  # None: decoration (assist), not part of the place
        self.length = 0

    def add(self, kind: str | None, text: str, key: str | None = None) -> None:
        if kind is not None:
            self.spans.append((kind, self.length, self.length + len(text)))
            self.keys.append(key)
        self.parts.append(text)
        self.length += len(text)

    @property
    def elements(self) -> list[Element]:
        return [(kind, s, e, key) for (kind, s, e), key in zip(self.spans, self.keys)]

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _shows_road(mode: str) -> bool:
    return mode != "poi"


def _shows_poi(mode: str) -> bool:
    return mode != "rn"


def _render(
    p: Place,
    grain: int,
    rng: random.Random,
    *,
    show: frozenset[str] = frozenset(),
    mode: str = "rn",
    drop_floor: bool = False,
    pair: bool = True,
) -> tuple[str, list[Span]]:
    """``p`` written down to ``grain``. ``show``: admin levels that must be written;
    ``mode``: how the door is written (rn, rn_poi, poi_rn, poi); ``pair`` limits the
    decorations to those that keep the pair labels true (no gates, no distances)."""
    out = _render_text(p, grain, rng, show=show, mode=mode, drop_floor=drop_floor, pair=pair)
    return out.text, out.spans


def _render_text(
    p: Place, grain: int, rng: random.Random, *, show: frozenset[str] = frozenset(), mode: str = "rn",
    drop_floor: bool = False, pair: bool = True,
) -> _Text:
    for _ in range(20):  # a few tries for one that fits MAX_CHARS
        out = _render_once(p, grain, rng, show, mode, drop_floor, pair)
        if out.length <= MAX_CHARS:
            break
    return out


def _render_once(
    p: Place, grain: int, rng: random.Random, show: frozenset[str], mode: str, drop_floor: bool, pair: bool
) -> _Text:
    out = _Text()
    muni = p.prov.municipality
    # admin levels: start at province, city, district or none, then every level down to district
    top = rng.choices((0, 1, 2, 3), (0.35, 0.3, 0.2, 0.15))[0]
    if grain <= TOWN or "district" in show:
        top = min(top, 2)
    if "city" in show:
        top = min(top, 1)
    if "prov" in show:
        top = 0
    if top == 0 or (muni and top == 1):
        out.add("prov", p.prov.short if rng.random() < 0.4 else p.prov.name, p.prov.name)
    if top <= 1 and not muni:
        out.add("city", p.city.short if rng.random() < 0.4 else p.city.name, p.city.name)
    if top <= 2:
        short = top < 2 and rng.random() < 0.1
        out.add("district", p.district.short if short else p.district.name, p.district.name)
    if grain == TOWN or "town" in show or (grain >= ROAD and rng.random() < 0.3):
        out.add("town", p.town, p.town)
    if grain >= ROAD and rng.random() < 0.1:
        out.add("community", p.community, p.community)
    if grain == ROAD:
        out.add("road", p.road, p.road)
    if grain < DOOR:
        return out

    poi_first = mode == "poi_rn"
    if poi_first or mode == "poi":
        _add_poi(out, p)
    if _shows_road(mode):
        opening, closing = rng.choice(_PARENS) if poi_first else ("", "")
        if opening:
            out.add(None, opening)
        out.add("road", p.road, p.road)
        out.add("roadno", f"{p.roadno}号", str(p.roadno))
        if closing:
            out.add(None, closing)
    if mode == "rn_poi":
        _add_poi(out, p)

    parts = list(p.detail[: grain - DOOR])
    kinds = [k for k, _ in parts]
    if drop_floor and "floorno" in kinds and "roomno" in kinds:
        parts = [(k, v) for k, v in parts if k != "floorno"]
        kinds.remove("floorno")
    dash = (
        kinds in (["houseno", "roomno"], ["houseno", "cellno", "roomno"])
        and parts[0][1].isdigit()
        and rng.random() < 0.25
    )
    for i, (kind, value) in enumerate(parts):
        if dash:
            if i:
                out.add(None, "-")
            out.add(kind, value + ("室" if kind == "roomno" and rng.random() < 0.3 else ""), value)
        elif kind == "houseno":
            out.add(kind, value + rng.choice(_HOUSE_DIGIT if value.isdigit() else _HOUSE_LETTER), value)
        elif kind == "cellno":
            out.add(kind, value + "单元", value)
        elif kind == "floorno":
            out.add(kind, value + rng.choice(_FLOOR), value)
        else:
            # a bare room number reads as one only after another building part
            out.add(kind, value + rng.choice(_ROOM if i else _ROOM[:3]), value)

    if not parts and rng.random() < (0.12 if pair else 0.25):
        if pair:
            out.add("assist", rng.choice(_PAIR_ASSISTS))
        else:
            if _shows_poi(mode) and p.subpoi is None and rng.random() < 0.4:
                out.add("subpoi", rng.choice(_GATES))
            if rng.random() < 0.3:
                out.add("assist", rng.choice(_HEADINGS))
                out.add("distance", f"{rng.choice((20, 30, 50, 100, 150, 200, 300, 500))}米")
            else:
                out.add("assist", rng.choice(_ASSISTS))
    return out


def _add_poi(out: _Text, p: Place) -> None:
    assert p.poi is not None
    out.add("poi", p.poi, p.poi)
    if p.subpoi:
        out.add("subpoi", p.subpoi, p.subpoi)


# ---------------------------------------------------------------------------- generators


def _grain(rng: random.Random, p: Place, exclude: int | None = None) -> int:
    grains = [g for g in range(p.finest + 1) if g != exclude]
    weights = [(0.4, 0.4, 0.7)[g] if g < DOOR else 1.5 for g in grains]
    return rng.choices(grains, weights)[0]


def _modes(rng: random.Random, a: Place, b: Place, ga: int, gb: int, need: str | None) -> tuple[str, str]:
    """Door modes for both sides that share the road number or the POI (``need``: which)."""

    def options(p: Place, g: int) -> list[str]:
        if g < DOOR:
            return ["rn"]  # unused below the door
        found = ["rn", "rn"] + (["rn_poi", "poi_rn", "poi"] if p.poi else [])
        if need == "road" or min(ga, gb) == ROAD:
            found = [m for m in found if _shows_road(m)]
        if need == "poi":
            found = [m for m in found if _shows_poi(m)]
        return found

    ma = rng.choice(options(a, ga))
    candidates = [
        m for m in options(b, gb)
        if min(ga, gb) < DOOR or (_shows_road(m) and _shows_road(ma)) or (_shows_poi(m) and _shows_poi(ma))
    ]
    return ma, rng.choice(candidates)


def _pair(
    rng: random.Random, a: Place, b: Place, ga: int, gb: int, show: frozenset[str], need: str | None,
    keep_floor: bool = False,
) -> tuple[_Text, _Text]:
    ma, mb = _modes(rng, a, b, ga, gb, need)
    rooms = all(
        "roomno" in [k for k, _ in p.detail[: max(0, g - DOOR)]] for p, g in ((a, ga), (b, gb))
    )
    drop_a = rooms and not keep_floor and rng.random() < 0.3
    drop_b = rooms and not keep_floor and rng.random() < 0.3
    lo = min(ga, gb)
    show = show | ({"district"} if lo == DISTRICT else {"town"} if lo == TOWN else set())
    text_a = _render_text(a, ga, rng, show=show, mode=ma, drop_floor=drop_a)
    text_b = _render_text(b, gb, rng, show=show, mode=mb, drop_floor=drop_b)
    return text_a, text_b


_MUTATION_WEIGHTS = {"detail": 2.5, "roadno": 3.0, "road": 1.5, "poi": 1.5, "town": 0.6, "district": 0.8, "city": 0.8}


def make_pair(rng: random.Random, label: str | None = None) -> Pair:
    """One address pair and its label (see the module docstring for the definitions)."""
    a, b, label, _, _ = make_annotated_pair(rng, label)
    return a, b, label


def make_annotated_pair(rng: random.Random, label: str | None = None) -> AnnotatedPair:
    """``make_pair`` (same draws) plus each side's elements with their canonical values,
    from which the trainer derives which elements agree, conflict or are extra."""
    label = label or rng.choice(LABELS)
    place = _place(rng)
    if label == EXACT_MATCH:
        g = _grain(rng, place)
        a, b = _pair(rng, place, place, g, g, frozenset(), None)
    elif label == PARTIAL_MATCH:
        ga = _grain(rng, place)
        gb = _grain(rng, place, exclude=ga)
        a, b = _pair(rng, place, place, ga, gb, frozenset(), None)
    else:
        if rng.random() < 0.1:  # unrelated places
            other = _place(rng)
            a = _render_text(place, _grain(rng, place), rng, mode="rn")
            b = _render_text(other, _grain(rng, other), rng, mode="rn")
            return a.text, b.text, NOT_MATCH, a.elements, b.elements
        ga = _grain(rng, place)
        gb = ga if rng.random() < 0.5 else _grain(rng, place, exclude=ga)
        lo = min(ga, gb)
        kinds = [f"detail{i}" for i in range(max(0, lo - DOOR))]
        if lo >= DOOR:
            kinds += ["roadno", "road"] + (["poi"] if place.poi else [])
        elif lo == ROAD:
            kinds.append("road")
        if lo >= TOWN and len(place.district.towns) > 1:
            kinds.append("town")
        if len(place.city.districts) > 1:
            kinds.append("district")
        kinds.append("city")
        weights = [_MUTATION_WEIGHTS["detail" if k.startswith("detail") else k] for k in kinds]
        kind = rng.choices(kinds, weights)[0]
        other = _mutate(rng, place, kind)
        show = frozenset({kind} & {"town", "district", "city"})
        need = "road" if kind in ("roadno", "road") else "poi" if kind == "poi" else None
        floor_changed = kind.startswith("detail") and place.detail[int(kind[6:])][0] == "floorno"
        a, b = _pair(rng, place, other, ga, gb, show, need, keep_floor=floor_changed)
    if rng.random() < 0.5:
        a, b = b, a
    return a.text, b.text, label, a.elements, b.elements


def make_address(rng: random.Random) -> tuple[str, list[Span]]:
    """One address and its element spans ``(type, start, end)``; mostly full addresses."""
    place = _place(rng)
    grains = list(range(place.finest + 1))
    grain = rng.choices(grains, [0.3, 0.3, 0.5, 1.5] + [1.5] * len(place.detail))[0]
    modes = ["rn", "rn"] + (["rn_poi", "rn_poi", "poi_rn", "poi"] if place.poi else [])
    return _render(place, grain, rng, mode=rng.choice(modes), drop_floor=rng.random() < 0.2, pair=False)


def pair_dataset(n: int, seed: int) -> list[Pair]:
    """``n`` pairs, the three labels in turn (so balanced), for ``seed``."""
    rng = random.Random(seed)
    return [make_pair(rng, LABELS[i % len(LABELS)]) for i in range(n)]


def annotated_pair_dataset(n: int, seed: int) -> list[AnnotatedPair]:
    """``pair_dataset(n, seed)`` with the elements of both sides."""
    rng = random.Random(seed)
    return [make_annotated_pair(rng, LABELS[i % len(LABELS)]) for i in range(n)]


def address_dataset(n: int, seed: int) -> list[tuple[str, list[Span]]]:
    rng = random.Random(seed)
    return [make_address(rng) for _ in range(n)]


@overload
def dataset(task: Literal["similarity"], n: int, seed: int) -> list[Pair]: ...
@overload
def dataset(task: Literal["parse"], n: int, seed: int) -> list[tuple[str, list[Span]]]: ...
def dataset(task: str, n: int, seed: int) -> list[Pair] | list[tuple[str, list[Span]]]:
    """The data set of ``task`` (similarity: pairs; parse: addresses with spans)."""
    if task == "similarity":
        return pair_dataset(n, seed)
    if task == "parse":
        return address_dataset(n, seed)
    raise ValueError(f"unknown task {task!r}")
