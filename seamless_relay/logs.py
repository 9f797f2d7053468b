"""Logging for the relay and the client: one stderr handler, text or JSON lines.

Text is for people (``2026-11-25T10:00:00Z INFO seamless.relay message key=value``);
JSON is one object per line for log shippers. Values passed with ``extra=``
become ``key=value`` pairs or JSON keys, so call sites log facts, not prose.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and key[:1] != "_"}


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch in '"=' for ch in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``TIMESTAMP LEVEL LOGGER message key=value ...``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts.extend(f"{key}={_text_value(value)}" for key, value in _extras(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ``extra`` fields, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)  # the four fixed keys win over a clashing extra
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class _SeamlessHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed, so configuring twice replaces it instead of doubling lines."""


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    """Send every logger's records at ``level`` or above to stderr in ``fmt``.

    Raises:
        ValueError: an unknown level or format (the config layer validates both first).
    """
    if level.lower() not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; choose one of {', '.join(_LEVELS)}")
    formatters: dict[str, logging.Formatter] = {"text": TextFormatter(), "json": JsonFormatter()}
    if fmt not in formatters:
        raise ValueError(f"unknown log format {fmt!r}; choose text or json")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SeamlessHandler)]:
        root.removeHandler(old)
    handler = _SeamlessHandler(sys.stderr)
    handler.setFormatter(formatters[fmt])
    root.addHandler(handler)
    root.setLevel(_LEVELS[level.lower()])
