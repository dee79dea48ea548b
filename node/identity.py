"""Model identity: the version name and the weights checksum a node reports and is fenced on.

A model bundle is a directory holding ``similarity/`` and/or ``parse/`` model directories
and a ``geogate.json`` metadata file; a single model directory is accepted too (its task
is read from its config). ``model_version`` is ``<base>-<finetune>-<timestamp>``, read
from the metadata or given by flag; the checksum is a SHA-256 over the weight files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "METADATA_FILE",
    "WEIGHT_SUFFIXES",
    "ChecksumMismatch",
    "read_metadata",
    "resolve_version",
    "weights_checksum",
]

METADATA_FILE = "geogate.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*(-[A-Za-z0-9._]+){2,}$")


class ChecksumMismatch(RuntimeError):
    """The weights on disk are not the ones the operator said to serve."""


def weights_checksum(roots: list[Path]) -> str:
    """SHA-256 over every weight file under ``roots``, in a stable order.

    Each file contributes its path relative to its root and its bytes, so renaming a
    task directory or swapping two files changes the sum.
    """
    digest = hashlib.sha256()
    files: list[tuple[str, Path]] = []
    for root in roots:
        if root.is_file():
            files.append((root.name, root))
            continue
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
                files.append((f"{root.name}/{path.relative_to(root).as_posix()}", path))
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {roots}")
    for name, path in sorted(files):
        digest.update(name.encode())
        digest.update(b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_metadata(directory: Path) -> dict[str, Any]:
    """``geogate.json`` of a bundle (or of a single model directory), or ``{}``."""
    path = directory / METADATA_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 - a bad file, not a bad argument
    return data


def resolve_version(flag: str | None, metadata: dict[str, Any], name: str, checksum: str) -> str:
    """The version to report: the flag, else the metadata, else one derived from the weights.

    A derived name still follows ``<base>-<finetune>-<timestamp>``, with the checksum's
    prefix standing in for the timestamp, so it changes whenever the weights do.
    """
    version = flag or metadata.get("model_version")
    if version:
        version = str(version)
        if not _VERSION_RE.match(version):
            raise ValueError(f"model_version {version!r} is not of the form <base>-<finetune>-<timestamp>")
        return version
    base = re.sub(r"[^A-Za-z0-9._]+", "_", name).strip("_") or "model"
    return f"{base}-local-{checksum[:12]}"
