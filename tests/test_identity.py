"""Model identity: checksum over the weights, version naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from geogate.node.identity import resolve_version, weights_checksum


def test_checksum_covers_every_weight_file_and_its_name(tmp_path: Path) -> None:
    a, b = tmp_path / "similarity", tmp_path / "parse"
    a.mkdir(), b.mkdir()
    (a / "model.safetensors").write_bytes(b"one")
    (b / "model.safetensors").write_bytes(b"two")
    (a / "config.json").write_text("{}")  # not a weight file: ignored
    first = weights_checksum([a, b])
    assert first == weights_checksum([b, a])  # order of roots does not matter
    (a / "config.json").write_text('{"changed": 1}')
    assert weights_checksum([a, b]) == first
    (b / "model.safetensors").write_bytes(b"tw0")
    assert weights_checksum([a, b]) != first
    with pytest.raises(FileNotFoundError):
        weights_checksum([tmp_path / "empty"])


def test_version_from_flag_metadata_or_weights() -> None:
    meta = {"model_version": "mgeo_base-geoalign-20260101"}
    assert resolve_version(None, meta, "dir", "ab" * 32) == "mgeo_base-geoalign-20260101"
    assert resolve_version("x-y-20261123T1200Z", meta, "dir", "ab" * 32) == "x-y-20261123T1200Z"
    assert resolve_version(None, {}, "my model", "cd" * 32) == "my_model-local-cdcdcdcdcdcd"
    with pytest.raises(ValueError, match="<base>-<finetune>-<timestamp>"):
        resolve_version("no dashes", {}, "d", "00" * 32)
