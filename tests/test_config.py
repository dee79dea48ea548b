"""Configuration: defaults < file < environment < flags, typed and validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from geogate.node.config import NodeConfig
from geogate.shared.config import ConfigError, build_config


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
