"""The architecture as the folders show it, checked from every module's imports (read
from the AST, lazy imports inside functions included):

- shared/ imports neither gateway/ nor node/, and node/ no gateway/ (nor the reverse:
  the two services meet only in shared/ and on the command line);
- inside gateway/, imports run one way: dataplane -> routing/access/ops; control ->
  routing/ops (through its read-only view of the gateway); nothing below the process's
  own modules (app, server, cli) imports them, and no plane imports control;
- the balancer, the node set and outlier detection are pure policy: no I/O libraries;
- no module names another side's module in a string (an import moved into a string, or
  into importlib, is still an import).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO

PACKAGES = ("gateway", "node", "shared")
PLANES = {"access", "control", "dataplane", "launcher", "ops", "routing"}
# What each part of gateway/ may import besides itself, shared/ and gateway/config.py (a leaf).
ALLOWED = {
    "ops": set(),
    "routing": {"ops"},
    "access": {"ops"},
    "dataplane": {"routing", "access", "ops"},
    "control": {"routing", "ops"},
    "launcher": {"routing", "access", "ops", "dataplane", "control", "top"},  # geogate up composes the gateway
    "top": {"routing", "access", "ops", "dataplane", "control"},  # app, server, cli assemble the planes
}
PURE = ("gateway/routing/balancer.py", "gateway/routing/nodes.py", "gateway/routing/outliers.py")
IO = {"asyncio", "aiohttp", "socket", "ssl", "redis", "subprocess", "geogate.shared.store", "geogate.shared.http"}


def modules() -> Iterator[tuple[Path, str]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield path, ".".join(("geogate", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def parse(path: Path) -> ast.Module:
    # Every file is parsed once, while the tests are collected: CPython 3.11.7's parser can
    # fail with "AST constructor recursion depth mismatch" (a SystemError) later in a run
    # whose other tests hit deep recursion on purpose (tests/test_fuzz.py).
    found = TREES.get(path)
    if found is None:
        found = TREES[path] = ast.parse(path.read_text(encoding="utf-8"))
    return found


TREES: dict[Path, ast.Module] = {}


def imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, relative imports resolved."""
    return imports_in(parse(path), name if path.name == "__init__.py" else name.rsplit(".", 1)[0])


def imports_in(tree: ast.Module, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return found


def strings(path: Path) -> list[str]:
    return [node.value for node in ast.walk(parse(path))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def side(module: str) -> str:
    return module.split(".")[1]


def part(module: str) -> str:
    """gateway/'s part a module belongs to: a plane, "config", or "top" (app, server, cli)."""
    rest = module.split(".")[2:]
    if not rest:
        return "top"
    return rest[0] if rest[0] in PLANES else "config" if rest[0] == "config" else "top"


OWN = {name for _, name in modules()}


def ours(found: set[str]) -> set[str]:
    return {m for m in found if m in OWN}


ALL = [(path, name, ours(imports(path, name))) for path, name in modules()]
STRINGS = {path: strings(path) for path, _, _ in ALL}


def test_every_module_is_read() -> None:
    assert len(ALL) > 60 and any(name == "geogate.gateway.dataplane.pipeline" for _, name, _ in ALL)


@pytest.mark.parametrize(("path", "name", "found"), ALL, ids=[name for _, name, _ in ALL])
def test_the_sides_import_one_way(path: Path, name: str, found: set[str]) -> None:
    allowed = {"shared": {"shared"}, "node": {"node", "shared"}, "gateway": {"gateway", "shared"}}[side(name)]
    wrong = sorted(m for m in found if side(m) not in allowed)
    assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"
    if side(name) in ("shared", "node"):
        others = [s for s in STRINGS[path] for other in ("geogate.gateway", "geogate.node")
                  if other in s and side(name) != other.split(".")[1]]
        assert not others, f"{path.relative_to(REPO)} names another side in a string: {others}"


@pytest.mark.parametrize(("path", "name", "found"), [a for a in ALL if side(a[1]) == "gateway"],
                         ids=[name for _, name, _ in ALL if side(name) == "gateway"])
def test_gateway_planes_import_one_way(path: Path, name: str, found: set[str]) -> None:
    here = part(name)
    allowed = {here, "config"} | ALLOWED.get(here, set())
    if here == "config":
        allowed = {"config"}
    wrong = sorted(m for m in found if side(m) == "gateway" and part(m) not in allowed)
    assert not wrong, f"{path.relative_to(REPO)} ({here}) imports {wrong}"


@pytest.mark.parametrize("relative", PURE)
def test_policy_does_no_io(relative: str) -> None:
    path = REPO / relative
    found = imports(path, "")
    assert not found & IO, f"{relative} imports {sorted(found & IO)}"


def test_gateway_shows_its_planes() -> None:
    gateway = REPO / "gateway"
    folders = {p.name for p in gateway.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == PLANES
    flat = sorted(p.name for p in gateway.glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= 8, flat
    assert set(flat) == {"app.py", "cli.py", "config.py", "server.py"}


# A data-plane module that imports the control plane and the node, read like the rest.
FORBIDDEN = imports_in(ast.parse("from ..control.drills import Drills\nimport geogate.node.app\n"),
                       "geogate.gateway.dataplane")


def test_the_checker_sees_a_forbidden_import() -> None:
    """The rules above would notice a forbidden import, a relative one included."""
    assert {"geogate.gateway.control.drills", "geogate.node.app"} <= FORBIDDEN
    assert part("geogate.gateway.control.drills") not in {"dataplane", "config"} | ALLOWED["dataplane"]
