"""One configuration format for every geogate service: frozen dataclasses built from
defaults < YAML file < ``GEOGATE_*`` environment < command-line flags.

A config class is a frozen dataclass whose fields carry their help text (``setting``);
a field made with ``section`` groups settings under one YAML key. Every setting has one
name, unique across its sections, from which its flag (``--probe-interval-s``) and its
environment variable (``GEOGATE_PROBE_INTERVAL_S``) are derived, so a setting cannot
exist in one place and be missing in another. ``os.environ`` is read here and nowhere
else. Each service defines its own class; this module knows neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "Setting",
    "add_arguments",
    "build_config",
    "check",
    "flatten",
    "nested",
    "read_yaml",
    "reference",
    "section",
    "setting",
    "settings",
]

ENV_PREFIX = "GEOGATE_"

# Request limits and timings both services default to alike (docs/design.md).
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_CHARS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_DEADLINE_MS = 10_000
DEFAULT_DRAIN_TIMEOUT_S = 30.0
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


def setting(default: Any, help: str, *, hidden: bool = False) -> Any:
    """A field that is one setting. ``hidden``: accepted everywhere, left out of ``--help``
    (fault injection for tests and drills)."""
    return field(default=default, metadata={"help": help, "hidden": hidden})


def section(cls: type[Any], help: str) -> Any:
    """A field that groups the settings of ``cls`` under one YAML key."""
    return field(default_factory=cls, metadata={"help": help, "section": True})


def check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a config class, where it lives and how it is spelled."""

    name: str  # the field's name: also its flag and environment variable
    section: str | None  # the YAML key it sits under (None: the service's own level)
    hint: Any  # its type
    default: Any
    help: str
    hidden: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name


def _sections(cls: type[Any]) -> Iterator[tuple[dataclasses.Field[Any], type[Any]]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            yield f, hints[f.name]


def settings(cls: type[Any]) -> list[Setting]:
    """The service's own settings, then each section's, in declaration order."""
    out: list[Setting] = []
    for owner, where in [(cls, None), *((kind, f.name) for f, kind in _sections(cls))]:
        hints = typing.get_type_hints(owner)
        for f in dataclasses.fields(owner):
            if not f.metadata.get("section"):
                out.append(Setting(f.name, where, hints[f.name], f.default, f.metadata.get("help", ""),
                                   bool(f.metadata.get("hidden"))))
    names = [s.name for s in out]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:  # a flag and a variable name one setting only
        raise TypeError(f"{cls.__name__}: settings named twice: {doubled}")
    return out


def nested(cls: type[Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given by name, each placed in its section as a YAML file holds them."""
    where = {s.name: s.section for s in settings(cls)}
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name not in where:
            raise ConfigError(f"unknown setting {name!r}")
        section = where[name]
        if section is None:
            out[name] = value
        else:
            out.setdefault(section, {})[name] = value
    return out


def flatten(config: Any) -> dict[str, Any]:
    """Every setting of a built config by name (the inverse of ``nested``)."""
    out = {}
    for s in settings(type(config)):
        owner = config if s.section is None else getattr(config, s.section)
        out[s.name] = getattr(owner, s.name)
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One ``--flag`` per setting, grouped by section; defaults stay None so that only the
    flags given override the file and the environment."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="YAML config file")
    groups: dict[str | None, Any] = {None: parser}
    for f, _ in _sections(cls):
        groups[f.name] = parser.add_argument_group(f"{f.name} (YAML section {f.name}:)", f.metadata["help"])
    for s in settings(cls):
        group = groups[s.section]
        help_text = argparse.SUPPRESS if s.hidden else f"{s.help} [env {s.env}; default {_show(s.default)}]"
        if s.hint is bool:
            group.add_argument(s.flag, dest=s.name, default=None, action=argparse.BooleanOptionalAction,
                               help=help_text)
        else:
            group.add_argument(s.flag, dest=s.name, default=None, metavar=_metavar(s.hint), help=help_text)


def _metavar(hint: Any) -> str:
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    return {int: "N", float: "X", str: "TEXT"}.get(base, "VALUE")


def _show(value: Any) -> str:
    return "none" if value is None else "''" if value == "" else str(value).lower() if isinstance(value, bool) \
        else str(value)


C = TypeVar("C")


def build_config(
    cls: type[C],
    *,
    section: str,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Merge the layers and coerce strings to the settings' types; unknown keys are errors.

    In the file, the service's settings sit under ``section`` (or at the top of a file
    with no such key), each section's under its own key."""
    env = os.environ if env is None else env
    known = {s.name: s for s in settings(cls)}
    values: dict[str, Any] = {}

    if file is not None:
        data = read_yaml(file)
        layer = data[section] if isinstance(data.get(section), dict) else data
        values.update(_file_values(layer, known, cls, f"{file}: "))
    for s in known.values():
        raw = env.get(s.env)
        if raw is not None:
            values[s.name] = _coerce(s.env, raw, s.hint)
    for name, raw in (overrides or {}).items():
        if raw is not None:
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce(known[name].flag, raw, known[name].hint)
    try:
        parts = {f.name: kind(**{k: v for k, v in values.items() if known[k].section == f.name})
                 for f, kind in _sections(cls)}
        return cls(**{k: v for k, v in values.items() if known[k].section is None}, **parts)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _file_values(layer: Mapping[str, Any], known: dict[str, Setting], cls: type[Any], where: str) -> dict[str, Any]:
    sections = {f.name for f, _ in _sections(cls)}
    values: dict[str, Any] = {}
    for key, raw in layer.items():
        if key in sections:
            if not isinstance(raw, dict):
                raise ConfigError(f"{where}{key} must be a mapping of settings")
            for name, value in raw.items():
                s = known.get(name)
                if s is None or s.section != key:
                    inside = sorted(n for n, k in known.items() if k.section == key)
                    moved = "" if s is None else f"; it is {s.path}"
                    raise ConfigError(f"{where}unknown setting {name!r} in {key}{moved} (known in {key}: "
                                      f"{', '.join(inside)})")
                values[name] = _coerce(f"{where}{s.path}", value, s.hint)
            continue
        s = known.get(key)
        if s is None:
            if isinstance(raw, dict):
                continue  # another service's section of a shared file
            raise ConfigError(f"{where}unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if s.section is not None:
            raise ConfigError(f"{where}{key!r} belongs to the {s.section} section: write it as "
                              f"'{s.section}: {{{key}: ...}}'")
        values[key] = _coerce(f"{where}{key}", raw, s.hint)
    return values


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping, or a ConfigError that names the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            return None
        hint = args[0]
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if hint is int:
            if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
                raise ValueError(f"not an integer: {raw!r}")
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return str(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    return raw


def reference(cls: type[Any], section: str, command: str) -> str:
    """Markdown: every setting of ``cls`` with its YAML key, flag, variable and default."""
    lines = []
    sections = {f.name: f.metadata["help"] for f, _ in _sections(cls)}
    current: str | None = "-"
    for s in settings(cls):
        if s.section != current:
            current = s.section
            title = f"`{section}:`" if s.section is None else f"`{section}:` → `{s.section}:`"
            about = "The service's own settings." if s.section is None else \
                sections[s.section][:1].upper() + sections[s.section][1:] + "."
            lines += ["", f"### {title}", "", about, "",
                      "| YAML key | flag of `" + command + "` | environment | default | meaning |",
                      "|---|---|---|---|---|"]
        meaning = s.help.replace("|", "\\|") + (" *(tests and drills only; hidden from --help)*" if s.hidden else "")
        flag = f"`{s.flag}`" if s.hint is not bool else f"`{s.flag}` / `--no-{s.flag[2:]}`"
        lines.append(f"| `{s.path}` | {flag} | `{s.env}` | `{_show(s.default)}` | {meaning} |")
    return "\n".join(lines).strip() + "\n"
