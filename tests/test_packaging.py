"""The wheel, as a user gets it: built quietly, one import namespace, everything
``geogate up`` needs inside it, and working from a fresh virtual environment outside the
checkout: `geogate up --detach` there serves a scored pair.

The fresh environment gets torch 2.13.0 (the CPU build these machines hold on disk) and
the wheel with its ``node`` extra from the package index; nothing of the checkout is on
its path.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow

VERSION = configparser.ConfigParser()
VERSION.read(REPO / "setup.cfg")
WHEEL_NAME = f"geogate-{VERSION['metadata']['version']}-py3-none-any.whl"
PAIR = ["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO)],
                           cwd=out, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    return out / WHEEL_NAME, built.stdout + built.stderr


def test_the_wheel_builds_without_a_warning(wheel: tuple[Path, str]) -> None:
    path, output = wheel
    assert path.is_file()
    noisy = [line for line in output.splitlines() if "warn" in line.lower() or "!!" in line]
    assert not noisy, output


def test_the_wheel_installs_one_namespace_and_its_data(wheel: tuple[Path, str]) -> None:
    with zipfile.ZipFile(wheel[0]) as archive:
        names = archive.namelist()
        top_level = {n.split("/", 1)[0] for n in names}
        assert top_level == {"geogate", f"geogate-{VERSION['metadata']['version']}.dist-info"}
        assert "geogate/__init__.py" not in names  # a namespace package: another distribution may add to it
        entry_points = archive.read(f"geogate-{VERSION['metadata']['version']}.dist-info/entry_points.txt").decode()
    for needed in ("geogate/gateway/launcher/topology.yaml", "geogate/gateway/launcher/geoip/GeoIP2-Country-Test.mmdb",
                   "geogate/gateway/launcher/geoip/LICENSE-APACHE", "geogate/gateway/launcher/geoip/LICENSE-MIT",
                   "geogate/gateway/control/dashboard.html", "geogate/gateway/control/golden.json",
                   "geogate/node/demo/model/similarity/model.safetensors",
                   "geogate/node/demo/model-v2/parse/model.safetensors", "geogate/node/demo/model-v2/parse/vocab.txt"):
        assert needed in names, needed
    for package in ("gateway", "node", "shared"):  # every source file of the three folders ships
        for source in (REPO / package).rglob("*.py"):
            assert f"geogate/{source.relative_to(REPO)}" in names, source
    for command in ("up", "down", "admin", "gateway", "node", "registry", "geoip", "mgeo"):
        assert f"\n{command} = geogate." in entry_points, command


@pytest.fixture(scope="module")
def fresh(wheel: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment outside the checkout with the wheel installed."""
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    for args in (["torch==2.13.0"], [f"{wheel[0]}[node]"]):  # torch first: the CPU build on disk
        done = subprocess.run(pip + args, cwd=home, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    yield home


def run(home: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_nothing_of_the_checkout_is_imported(fresh: Path) -> None:
    python = str(fresh / "venv" / "bin" / "python")
    where = run(fresh, python, "-c", "import geogate.gateway.server, geogate.node.app, geogate.shared.cli as c; "
                "print(c.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(fresh / "venv") in where.stdout and str(REPO) not in where.stdout
    for generic in ("gateway", "node", "shared"):
        assert run(fresh, python, "-c", f"import {generic}").returncode != 0, f"`import {generic}` works"
    version = run(fresh, str(fresh / "venv" / "bin" / "geogate"), "--version")
    assert version.stdout.strip() == f"geogate {VERSION['metadata']['version']}"


def test_geogate_up_from_the_wheel_scores_a_pair(fresh: Path) -> None:
    geogate = str(fresh / "venv" / "bin" / "geogate")
    run_dir = fresh / "run"
    up = run(fresh, geogate, "up", "--detach", "--regions", "eu-central", "--port-base", "0",
             "--run-dir", str(run_dir), timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "geogate is up: 1 regions, 2 nodes (DEMO models)" in up.stdout
        endpoints = json.loads((run_dir / "endpoints.json").read_text())
        request = urllib.request.Request(endpoints["gateways"]["eu-central"] + "/v1/similarity",
                                         data=json.dumps({"pairs": [PAIR]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
            assert answer.status == 200 and answer.headers["X-Region"] == "eu-central"
        assert body["results"][0]["label"] in ("exact_match", "partial_match", "not_match")
        blue = json.loads((REPO / "node" / "demo" / "model" / "geogate.json").read_text())["model_version"]
        assert 0.0 <= body["results"][0]["score"] <= 1.0 and body["model_version"] == blue  # the shipped demo
        status = run(fresh, geogate, "admin", "status", "--run-dir", str(run_dir))
        assert status.returncode == 0 and "eu-central" in status.stdout, status.stdout + status.stderr
    finally:
        down = run(fresh, geogate, "down", "--run-dir", str(run_dir), timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
