"""The manual stays true: docs/configuration.md is generated from the config classes
(this test writes it with GEOGATE_WRITE_DOCS=1, which `make docs` sets) and fails when
it falls out of date; every GEOGATE_* variable the code reads is in it; the README is a
front door that links the manual; nothing cites a design document outside the
repository; relative links in the docs lead somewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import REPO

from geogate.gateway.config import GatewayConfig
from geogate.node.config import NodeConfig
from geogate.shared.config import reference

CONFIGURATION = REPO / "docs" / "configuration.md"
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md", REPO / "CHANGELOG.md"]

HEAD = """\
# Configuration reference

*Generated from the config classes (`gateway/config.py`, `node/config.py`) by `make docs`;
`tests/test_docs.py` fails when this file falls out of date. Do not edit it by hand.*

Every setting of a service comes, in increasing precedence, from its default, the YAML
file given with `--config FILE`, a `GEOGATE_<NAME>` environment variable, and a
`--<name>` flag. One name per setting, unique across sections: the YAML key (in its
section), the flag and the variable are all spelled from it. A boolean flag is a
switch: `--warmup` or `--no-warmup`; in the environment and the file it is `true` or
`false`.

A gateway's file holds its settings under `gateway:`, grouped in the sections below, and
the topology at the top level (`regions:`, `countries:`, `nodes:`); a node's file holds
its settings under `node:`. One file may hold both. A setting written outside its
section is refused with an error naming where it belongs, for example
`'probe_interval_s' belongs to the health section: write it as 'health: {probe_interval_s: ...}'`.

```yaml
gateway:
  region: eu-central
  store: {registry_url: "redis://redis:6379/0"}
  geo: {geoip_db: /var/lib/geogate/country.mmdb, trusted_proxies: "10.0.0.0/8"}
  health: {probe_interval_s: 1.0}
  admin: {admin_tokens_file: /etc/geogate/admin-tokens.yaml}
regions:
  eu-central: {failover: [us-east], min_healthy: 1}
  us-east:    {failover: [eu-central]}
countries: {DE: eu-central, US: us-east}
nodes:
  - {region: eu-central, color: blue, url: "http://10.0.0.5:8081"}
```

## The gateway (`geogate gateway`)

"""

TOPOLOGY = """

### The topology (top level of the gateway's file)

| key | meaning |
|---|---|
| `regions.<name>.failover` | the regions that serve this region's clients when it cannot, in order |
| `regions.<name>.residency` | glob patterns of the regions allowed to serve its clients (empty: any); a region outside them is skipped even when it is on the failover list |
| `regions.<name>.min_healthy` | below this many healthy nodes, that share of calls spills to the next region (default 1) |
| `countries.<ISO code>` | the home region of clients in that country; unknown countries and private addresses go to `default_region` |
| `nodes[]` | `{region, color, url}` of nodes the gateway probes whether or not they register by heartbeat |

## The node (`geogate node`)

"""

TAIL = """

## `geogate up` (the topology file's `launcher:` section)

`geogate up --config FILE` reads a gateway file (by default the shipped
`gateway/launcher/topology.yaml`) with one more section:

| key | meaning | default |
|---|---|---|
| `launcher.colors` | the model of each color: `demo`, `demo-v2`, a model directory or a hub id | `{blue: demo, green: demo-v2}` |
| `launcher.active` | the color the registry starts with | `blue` |
| `launcher.nodes_per_color` | nodes of each color in each region (`--nodes-per-color`) | `1` |
| `launcher.node` | settings for every node, as in a node's own file (`cpu_threads: 1`); written to `RUN_DIR/node.yaml`, which every node reads with `--config` | none |

## Environment of the command-line tools

| variable | used by | meaning |
|---|---|---|
| `GEOGATE_ADMIN_URL` | `geogate admin` | the gateway to talk to (`--url`) |
| `GEOGATE_ADMIN_TOKEN_FILE` | `geogate admin` | the file holding the admin token (`--token-file`) |
| `GEOGATE_ADMIN_TOKEN` | `geogate admin` | the admin token itself, when no token file is named |
| `XDG_CACHE_HOME` | `geogate up`, `down`, `admin`, `geoip build`, gateways | where `geogate/up` (the default run directory) and `geogate/country.mmdb` (the database `geogate geoip build` writes, which gateways use when `geoip_db` is unset) live; default `~/.cache` |
"""


def generated() -> str:
    return (HEAD + reference(GatewayConfig, "gateway", "geogate gateway") + TOPOLOGY
            + reference(NodeConfig, "node", "geogate node") + TAIL)


def test_the_configuration_reference_is_current() -> None:
    text = generated()
    if os.environ.get("GEOGATE_WRITE_DOCS") == "1":
        CONFIGURATION.write_text(text, encoding="utf-8")
    assert CONFIGURATION.read_text(encoding="utf-8") == text, "docs/configuration.md is out of date: run make docs"


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    named = set()
    for package in ("gateway", "node", "shared"):
        for path in (REPO / package).rglob("*.py"):
            named |= set(re.findall(r"GEOGATE_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    named -= {"GEOGATE_FLAG"}  # GEOGATE_<FLAG> in help texts
    assert named, "the scan found nothing"
    missing = sorted(n for n in named if f"`{n}`" not in text)
    assert not missing, missing
    assert "`GEOGATE_PROBE_INTERVAL_S`" in text and "`health.probe_interval_s`" in text


def test_the_readme_is_a_front_door() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for page in ("docs/design.md", "docs/api.md", "docs/configuration.md", "docs/operations.md",
                 "docs/deploy-kubernetes.md", "docs/observability.md", "docs/security.md",
                 "tests/bench/BENCHMARKS.md", "tests/chaos/RELIABILITY.md", "CHANGELOG.md", "LICENSE"):
        assert f"]({page})" in readme, f"the README does not link {page}"
    for command in ("make test", "make demo", "geogate up", "geogate admin switch", "geogate admin rollback"):
        assert command in readme, command


@pytest.mark.parametrize("path", [p for p in DOCS if p.is_file()], ids=lambda p: p.name)
def test_relative_links_lead_somewhere(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.relative_to(REPO)} links {target}, which is not there"


def test_nothing_cites_a_design_document_outside_the_repository() -> None:
    for package in ("gateway", "node", "shared", "tests", "deploy", "docs"):
        for path in (REPO / package).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".yml", ".html") and path != Path(__file__):
                text = path.read_text(encoding="utf-8", errors="replace")
                assert "DESIGN.md" not in text.replace("docs/design.md", ""), path.relative_to(REPO)
