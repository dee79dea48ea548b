"""The command line is consistent: every subcommand has an example, every option help
and (where it has one) its default, boolean options are switches, a region is named one
way, a CA file one way, and test-only options stay out of --help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version

import pytest
from helpers import REPO

from geogate.gateway.config import GatewayConfig
from geogate.node.config import NodeConfig
from geogate.shared.cli import build_parser
from geogate.shared.config import build_config, settings

GEOGATE = [sys.executable, "-m", "geogate.shared.cli"]


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command that runs something, by its words (``admin switch``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from commands(child, (*path, name))


COMMANDS = dict(commands(build_parser()))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_every_side_registers_its_commands() -> None:
    assert {name.split()[0] for name in COMMANDS} == {"up", "down", "admin", "gateway", "node", "registry", "geoip",
                                                       "mgeo"}
    assert {"admin switch", "admin drill", "registry init", "geoip build", "mgeo convert"} <= set(COMMANDS)


def test_version() -> None:
    done = subprocess.run([*GEOGATE, "--version"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"geogate {version('geogate')}" == "geogate 0.2.0"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_an_example_and_every_option_its_help(name: str) -> None:
    parser = COMMANDS[name]
    assert parser.epilog and "example" in parser.epilog, f"geogate {name}: no example in --help"
    for action in options(parser):
        if action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"geogate {name} {action.option_strings[0]}: no help"
        has_default = action.default not in (None, False, argparse.SUPPRESS) and not action.required
        if has_default and not isinstance(action, argparse._StoreTrueAction):
            assert "default" in action.help, f"geogate {name} {action.option_strings[0]}: the default is not said"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_boolean_options_are_switches(name: str) -> None:
    booleans = {s.name for cls in (GatewayConfig, NodeConfig) for s in settings(cls) if s.hint is bool}
    for action in options(COMMANDS[name]):
        assert not (action.choices and set(action.choices) == {"true", "false"}), action.option_strings
        if action.dest in booleans:
            assert isinstance(action, argparse.BooleanOptionalAction), action.option_strings
            assert f"--no-{action.option_strings[0][2:]}" in action.option_strings


def test_a_switch_takes_no_value() -> None:
    args = COMMANDS["node"].parse_args(["--no-warmup", "--access-log"])
    config = build_config(NodeConfig, section="node", env={}, overrides={"warmup": args.warmup,
                                                                         "access_log": args.access_log})
    assert (config.warmup, config.access_log) == (False, True)
    with pytest.raises(SystemExit):
        COMMANDS["gateway"].parse_args(["--allow-anonymous", "true"])


def test_a_region_is_named_one_way_and_a_ca_file_too() -> None:
    for name in ("admin drain", "admin fail", "admin restore", "admin drill"):
        positional = [a.dest for a in COMMANDS[name]._actions if not a.option_strings]
        assert positional == ["region"], name
        assert "--region" not in COMMANDS[name]._option_string_actions
    for name, parser in COMMANDS.items():
        flags = set(parser._option_string_actions)
        assert "--ca" not in flags and "--ca-file" not in flags, name
    assert "--cacert" in COMMANDS["admin status"]._option_string_actions
    assert "--cacert" in COMMANDS["registry init"]._option_string_actions


def test_fault_injection_is_accepted_but_not_shown() -> None:
    shown = COMMANDS["node"].format_help()
    assert "--fault-" not in shown and "GEOGATE_FAULT" not in shown
    args = COMMANDS["node"].parse_args(["--fault-delay-ms", "5"])
    assert args.fault_delay_ms == "5"
