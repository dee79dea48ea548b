"""Log lines: one record is one line in both formats, whatever a client put in a path."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from geogate.shared.logs import setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_smuggled_newline_cannot_forge_a_line(json_lines: bool, restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("info", json_lines=json_lines, stream=out, region="eu-central")
    logging.getLogger("geogate.gateway.access").info("GET %s 404", "/admin/v1/drills/\nFAKE level=error",
                                                     extra={"request_id": "r\r\n2"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    if json_lines:
        assert json.loads(lines[0])["msg"] == "GET /admin/v1/drills/\nFAKE level=error 404"  # escaped by JSON
    else:
        assert "drills/\\nFAKE" in lines[0] and "request_id=r\\r\\n2" in lines[0]
