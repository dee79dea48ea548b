"""Logging set-up: JSON lines by default (one object per line, for log shippers), plain
text for humans. Loggers are named per subsystem (``geogate.<service>.<subsystem>``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

__all__ = ["setup_logging"]

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _JSONFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = fields

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._fields,
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    """For people: the same fields as the JSON lines, as key=value after the message."""

    def __init__(self, fields: dict[str, str]) -> None:
        tag = " ".join(f"{k}={v}" for k, v in fields.items())
        super().__init__(f"%(asctime)s %(levelname)s %(name)s [{tag}] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # one record, one line: a newline a client smuggled in (a path with %0a) cannot forge another
        extra = " ".join(f"{k}={_one_line(v)}" for k, v in vars(record).items() if k not in _STANDARD and v is not None)
        record = logging.makeLogRecord({**vars(record), "msg": _one_line(record.getMessage()), "args": None})
        line = super().format(record)
        return f"{line} {extra}" if extra else line


def _one_line(value: object) -> str:
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(level: str = "info", *, json_lines: bool = True, stream: TextIO | None = None,
                  **fields: str) -> None:
    """``fields`` (region, color, ...) are added to every JSON line; lines go to stderr
    unless ``stream`` says otherwise."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(_JSONFormatter(fields))
    else:
        handler.setFormatter(_TextFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "transformers", "modelscope", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
