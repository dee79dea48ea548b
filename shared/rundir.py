"""Where ``geogate up`` leaves what scripts and the ``geogate admin`` CLI need to find
a local deployment: ``endpoints.json`` (gateway URLs, the admin token file, the CA of a
TLS run) in a run directory, by default in the user's cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ADMIN_TOKEN", "ENDPOINTS", "default_run_dir", "read_endpoints"]

ENDPOINTS = "endpoints.json"
ADMIN_TOKEN = "admin-token"


def default_run_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "geogate" / "up"


def read_endpoints(run_dir: Path) -> dict[str, Any] | None:
    """The deployment's endpoints, or None where no deployment wrote any."""
    try:
        data = json.loads((run_dir / ENDPOINTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
