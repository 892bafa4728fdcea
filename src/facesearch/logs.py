"""Logs: standard :mod:`logging`, as text for a terminal or one JSON object per line for a collector.

:func:`configure_logging` is called once by the CLI (and again by ``serve`` with the server's
settings); library modules only do ``logging.getLogger(__name__)``. What may be logged is
decided where a line is written: the access log (:mod:`facesearch.api.observability`) writes
the route *template*, never the path, query, file names or any pixel.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

#: Attributes every LogRecord has: everything else on a record came from ``extra=`` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName",
                                                                           "color_message"}  # uvicorn's ANSI copy
_HANDLER_MARK = "_facesearch_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and the ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``: the extra fields stay visible in text too."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")]
        return f"{line} {' '.join(extra)}" if extra else line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each line (test runners and daemons swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send facesearch's (and uvicorn's) logs to ``stream`` (stderr) in ``fmt``; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()  # uvicorn's own handlers would print a second copy
        logging.getLogger(name).propagate = True
    # Chatty third-party loggers stay at warning unless debugging.
    for name in ("multipart", "httpx", "PIL", "matplotlib", "sqlalchemy", "alembic", "milvus_lite", "pymilvus"):
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


def configure_from_settings(settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
