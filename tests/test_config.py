"""Configuration: defaults < file < environment < flags, typed and validated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geogate.gateway.config import GatewayConfig
from geogate.node.config import NodeConfig
from geogate.shared.config import ConfigError, build_config, flatten, nested, settings


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "geogate.yaml"
    cfg_file.write_text("node:\n  region: eu-central\n  port: 9000\n  max_wait_ms: 7\ngateway:\n  port: 1\n")
    env = {"GEOGATE_PORT": "9100", "GEOGATE_WARMUP": "false", "UNRELATED": "x"}
    cfg = build_config(NodeConfig, section="node", file=cfg_file, env=env, overrides={"color": "green", "port": None})
    assert (cfg.region, cfg.port, cfg.color, cfg.max_wait_ms, cfg.warmup) == ("eu-central", 9100, "green", 7.0, False)
    assert cfg.model == "demo" and cfg.dtype == "fp32"


def test_flat_file_and_optional_values(tmp_path: Path) -> None:
    cfg_file = tmp_path / "node.yaml"
    cfg_file.write_text("model_version: null\nexpect_sha256: abc\n")
    cfg = build_config(NodeConfig, section="node", file=cfg_file, env={})
    assert cfg.model_version is None and cfg.expect_sha256 == "abc"


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"GEOGATE_PORT": "eighty"}, "GEOGATE_PORT"),
        ({"GEOGATE_COLOR": "red"}, "color"),
        ({"GEOGATE_DTYPE": "int4"}, "dtype"),
        ({"GEOGATE_MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"GEOGATE_WARMUP": "maybe"}, "GEOGATE_WARMUP"),
        ({"GEOGATE_DEVICE": "tpu"}, "device"),
    ],
)
def test_bad_values_name_the_setting(layer: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(NodeConfig, section="node", env=layer)


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("node:\n  max_batchsize: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_batchsize'"):
        build_config(NodeConfig, section="node", file=cfg_file, env={})


def test_gateway_settings_live_in_sections(tmp_path: Path) -> None:
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text("gateway:\n  region: eu-central\n  health: {probe_interval_s: 0.2, eject_after: 5}\n"
                        "  access: {allow_anonymous: true}\nregions: {eu-central: {}}\n")
    env = {"GEOGATE_CACHE_TTL_S": "0"}
    cfg = build_config(GatewayConfig, section="gateway", file=cfg_file, env=env, overrides={"max_attempts": "2"})
    assert (cfg.region, cfg.health.probe_interval_s, cfg.health.eject_after) == ("eu-central", 0.2, 5)
    assert cfg.access.allow_anonymous and cfg.cache.cache_ttl_s == 0 and cfg.upstream.max_attempts == 2
    assert cfg.health.unhealthy_after == 2  # a section's other settings keep their defaults
    again = tmp_path / "again.yaml"  # flatten and nested are inverses: a config written back reads the same
    again.write_text(yaml.safe_dump({"gateway": nested(GatewayConfig, flatten(cfg))}))
    assert build_config(GatewayConfig, section="gateway", file=again, env={}) == cfg


def test_an_old_flat_key_names_its_new_place(tmp_path: Path) -> None:
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text("gateway:\n  probe_interval_s: 0.2\n")
    with pytest.raises(ConfigError, match=r"'probe_interval_s' belongs to the health section: write it as "
                                          r"'health: \{probe_interval_s: \.\.\.\}'"):
        build_config(GatewayConfig, section="gateway", file=cfg_file, env={})
    cfg_file.write_text("gateway:\n  health: {cache_ttl_s: 0}\n")
    with pytest.raises(ConfigError, match="unknown setting 'cache_ttl_s' in health; it is cache.cache_ttl_s"):
        build_config(GatewayConfig, section="gateway", file=cfg_file, env={})
    cfg_file.write_text("gateway:\n  health: 3\n")
    with pytest.raises(ConfigError, match="health must be a mapping"):
        build_config(GatewayConfig, section="gateway", file=cfg_file, env={})


def test_a_settings_name_is_unique_across_sections() -> None:
    names = [s.name for s in settings(GatewayConfig)]
    assert len(names) == len(set(names)) and {"probe_interval_s", "admin_port", "region"} <= set(names)
