"""A reduced chaos run in every test run (``make chaos`` runs all scenarios, longer):
a node answering 500s, a node killed, Redis killed and restarted during traffic and in
the middle of a switch, under steady load from another process, with zero failed calls
and zero wrong-version answers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "chaos"))

from admin_world import World, two_region_world
from run import SCENARIOS, run_scenario


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with two_region_world(tmp_path_factory.mktemp("chaos-world"), attempt_timeout_ms=1000, watch_window_s=0) as w:
        yield w


@pytest.mark.parametrize("name", ["node-500s", "redis-restart", "node-killed", "redis-mid-switch"])
def test_scenario_loses_nothing(world: World, name: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    result = run_scenario(world, scenario, pre_s=1.5, fault_s=3.0, post_s=3.0)
    assert result.requests > 100
    assert (result.failed, result.wrong_version) == (0, 0), result
    if name == "redis-mid-switch":  # the gateways agreed on one record again without an operator
        assert any(note.startswith("both gateways at epoch") for note in result.notes), result
    elif name != "redis-restart":  # its clients moved to us-east while eu-central was broken, and came back
        assert result.reroute_ms is not None and result.recover_ms is not None, result
