"""Before a switch: is the target color ready everywhere, and does it answer like the
active one?

1. Readiness: every region that is not drained or failed has at least
   ``switch_min_ready`` healthy nodes of the target color serving exactly the version and
   checksum registered for it (as this gateway's probes see them).
2. Golden set: the shipped pairs and addresses (``golden.json`` beside this module, plus an
   operator's ``golden_file``) are scored by one node of each color; labels and parse
   elements must agree on all but ``golden_max_disagreement`` of the items, and no pair's
   score may move by more than ``golden_max_drift``.

The report says what was checked and, when it fails, exactly what to fix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from geogate.gateway.config import AdminSettings
from geogate.gateway.routing.nodes import NodeSet, NodeState
from geogate.shared.config import ConfigError
from geogate.shared.registry import RegistryRecord
from geogate.shared.schemas import ParseResponse, SimilarityResponse

__all__ = ["GoldenSet", "SwitchReport", "load_golden", "precheck"]

SHIPPED_GOLDEN = Path(__file__).parent / "golden.json"
CHUNK = 32  # items per golden request: well under any node's max_batch


class GoldenSet(msgspec.Struct, frozen=True):
    pairs: list[tuple[str, str]]
    addresses: list[str]


def load_golden(extra: str | None = None) -> GoldenSet:
    pairs: list[tuple[str, str]] = []
    addresses: list[str] = []
    for path in [SHIPPED_GOLDEN, *([Path(extra)] if extra else [])]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read golden set {path}: {exc}") from exc
        pairs += [(str(p[0]), str(p[1])) for p in data.get("pairs", [])]  # a third item (expected label) is a note
        addresses += [str(a) for a in data.get("addresses", [])]
    return GoldenSet(pairs, addresses)


class RegionCheck(msgspec.Struct, frozen=True):
    region: str
    state: str
    ready: int
    needed: int
    ok: bool
    problems: list[str]


class GoldenCheck(msgspec.Struct, frozen=True):
    ok: bool
    from_node: str
    to_node: str
    pairs: int = 0
    label_agreement: float = 0.0
    max_drift: float = 0.0
    mean_drift: float = 0.0
    addresses: int = 0
    parse_agreement: float = 0.0
    seconds: float = 0.0
    examples: list[dict[str, Any]] = []  # the first disagreements
    error: str = ""


class SwitchReport(msgspec.Struct, frozen=True):
    ok: bool
    from_color: str
    to_color: str
    from_version: str
    to_version: str
    regions: list[RegionCheck]
    golden: GoldenCheck | None
    problems: list[str]


def _serving(node: NodeState, version: str, sha256: str) -> str:
    """Why this node cannot serve the target, or ''."""
    if not node.available(time.monotonic()):
        return f"{node.url}: not healthy ({node.last_error or 'probing'})"
    if node.model_version != version:
        return f"{node.url}: serves {node.model_version}, registered {version}"
    if sha256 and node.checksum != sha256:
        return f"{node.url}: checksum {str(node.checksum)[:12]} != registered {sha256[:12]}"
    return ""


def check_regions(snapshot: RegistryRecord, nodes: NodeSet, to: str, min_ready: int) -> list[RegionCheck]:
    info = snapshot.colors[to]
    regions = sorted(set(snapshot.regions) | nodes.regions())
    out = []
    for region in regions:
        state = snapshot.region_state(region)
        targets = [n for n in nodes.in_region(region) if n.spec.color == to]
        problems = [p for p in (_serving(n, info.model_version, info.sha256) for n in targets) if p]
        ready = len(targets) - len(problems)
        if state != "active":  # drained or failed: not serving, so not required
            out.append(RegionCheck(region, state, ready, 0, True, problems))
            continue
        if not targets:
            problems.append(f"no {to} node known in {region}")
        ok = ready >= min_ready
        out.append(RegionCheck(region, state, ready, min_ready, ok, problems if not ok else []))
    return out


def _pick(nodes: NodeSet, color: str, version: str, sha256: str, prefer: str) -> NodeState | None:
    ready = [n for n in nodes if n.spec.color == color and not _serving(n, version, sha256)]
    ready.sort(key=lambda n: (n.spec.region != prefer, n.outstanding, n.url))
    return ready[0] if ready else None


async def _post(session: aiohttp.ClientSession, node: NodeState, path: str, body: dict[str, Any],
                response: type[Any]) -> Any:
    async with session.post(node.url + path, json=body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{node.url}{path} answered {resp.status}: {raw[:200]!r}")
        return msgspec.json.decode(raw, type=response)


async def compare_golden(session: aiohttp.ClientSession, old: NodeState, new: NodeState, golden: GoldenSet,
                         settings: AdminSettings) -> GoldenCheck:
    started = time.monotonic()
    agree = 0
    drifts: list[float] = []
    examples: list[dict[str, Any]] = []
    try:
        for i in range(0, len(golden.pairs), CHUNK):
            chunk = golden.pairs[i:i + CHUNK]
            a = await _post(session, old, "/v1/similarity", {"pairs": chunk}, SimilarityResponse)
            b = await _post(session, new, "/v1/similarity", {"pairs": chunk}, SimilarityResponse)
            for pair, x, y in zip(chunk, a.results, b.results):
                drifts.append(abs(x.score - y.score))
                agree += x.label == y.label
                if (x.label != y.label or drifts[-1] > settings.golden_max_drift) and len(examples) < 5:
                    examples.append({"pair": list(pair), "from": [x.label, x.score], "to": [y.label, y.score]})
        parsed_same = 0
        for i in range(0, len(golden.addresses), CHUNK):
            batch = golden.addresses[i:i + CHUNK]
            a = await _post(session, old, "/v1/parse", {"addresses": batch}, ParseResponse)
            b = await _post(session, new, "/v1/parse", {"addresses": batch}, ParseResponse)
            for address, x, y in zip(batch, a.results, b.results):
                same = [(e.type, e.start, e.end) for e in x.elements] == [(e.type, e.start, e.end) for e in y.elements]
                parsed_same += same
                if not same and len(examples) < 5:
                    examples.append({"address": address, "from": [e.type for e in x.elements],
                                     "to": [e.type for e in y.elements]})
    except (aiohttp.ClientError, TimeoutError, RuntimeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return GoldenCheck(False, old.url, new.url, error=f"golden set could not be scored: {exc}",
                           seconds=round(time.monotonic() - started, 2))
    n_pairs, n_addr = len(golden.pairs), len(golden.addresses)
    label_agreement = agree / n_pairs if n_pairs else 1.0
    parse_agreement = parsed_same / n_addr if n_addr else 1.0
    max_drift = max(drifts, default=0.0)
    floor = 1.0 - settings.golden_max_disagreement
    ok = label_agreement >= floor and parse_agreement >= floor and max_drift <= settings.golden_max_drift
    return GoldenCheck(ok, old.url, new.url, n_pairs, round(label_agreement, 4), round(max_drift, 4),
                       round(sum(drifts) / len(drifts), 4) if drifts else 0.0, n_addr, round(parse_agreement, 4),
                       round(time.monotonic() - started, 2), examples)


async def precheck(snapshot: RegistryRecord, to: str, nodes: NodeSet, session: aiohttp.ClientSession,
                   settings: AdminSettings, golden: GoldenSet, *, prefer: str) -> SwitchReport:
    """``prefer``: the region whose nodes score the golden set when they can (this gateway's)."""
    old, new = snapshot.colors[snapshot.active_color], snapshot.colors[to]
    regions = check_regions(snapshot, nodes, to, settings.switch_min_ready)
    problems = [f"{r.region}: {r.ready} of {r.needed} needed {to} nodes ready" + (f" ({'; '.join(r.problems)})"
                if r.problems else "") for r in regions if not r.ok]
    golden_check = None
    old_node = _pick(nodes, snapshot.active_color, old.model_version, old.sha256, prefer)
    new_node = _pick(nodes, to, new.model_version, new.sha256, prefer)
    if old_node is None or new_node is None:
        missing = snapshot.active_color if old_node is None else to
        problems.append(f"golden set not run: no ready {missing} node to score it")
    else:
        golden_check = await compare_golden(session, old_node, new_node, golden, settings)
        if golden_check.error:
            problems.append(golden_check.error)
        elif not golden_check.ok:
            problems.append(
                f"golden set: labels agree on {golden_check.label_agreement:.1%} of pairs, parses on "
                f"{golden_check.parse_agreement:.1%} of addresses (need {1 - settings.golden_max_disagreement:.1%}), "
                f"largest score drift {golden_check.max_drift:.3f} (allowed {settings.golden_max_drift})")
    return SwitchReport(not problems, snapshot.active_color, to, old.model_version, new.model_version, regions,
                        golden_check, problems)
