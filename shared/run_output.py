"""What a run keeps of its handler: the return value as ``output`` and the lines the
handler logged through ``ctx.logger`` as ``log`` (README, "Run output and log").

``output``
    The handler's return value, if it is JSON (objects with string keys, arrays,
    strings, finite numbers, booleans, null; tuples count as arrays). Its compact
    JSON form is kept up to `MAX_OUTPUT_BYTES`: a larger value has its longest
    strings shortened until it fits (so it stays the same shape) and
    ``output_truncated`` is true; a value that cannot fit that way (huge arrays of
    numbers) becomes the first `MAX_OUTPUT_BYTES` of its JSON text, as a string.
    A value that is *not* JSON (a datetime, a set, an object...) does not fail the
    run: ``output`` is ``{"unserializable": "<type name>", "repr": "<repr(), at most
    2000 characters>"}``.
``log``
    Every record logged through ``ctx.logger`` during the attempt (at or above
    ``LOG_LEVEL``), one line each ``<UTC time> <LEVEL> <message>``; the last
    `MAX_LOG_BYTES` are kept (older lines are dropped whole).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from cronhive.domain import MAX_LOG_BYTES, MAX_OUTPUT_BYTES, RunOutput

MAX_REPR_CHARS = 2000
#: Lone surrogates are not Unicode text (MongoDB refuses them): stored as U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value)
#: Rounds of shortening the longest string before giving up on keeping the shape.
MAX_SHRINK_ROUNDS = 32


class NotJson(ValueError):
    pass


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data (tuples → lists), or `NotJson`."""
    if depth > 64:
        raise NotJson("nests deeper than 64 levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJson("a number is not finite")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise NotJson("an object key is not a string")
        return {_text(key): _plain(item, depth + 1) for key, item in value.items()}
    raise NotJson(f"a {type(value).__name__} is not JSON")


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _longest_string(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    best: tuple[tuple[Any, ...], str] | None = None
    stack: list[tuple[tuple[Any, ...], Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if best is None or len(item) > len(best[1]):
                best = (where, item)
        elif isinstance(item, dict):
            stack.extend(((*where, key), child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend(((*where, index), child) for index, child in enumerate(item))
    return best


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _fit(value: Any, limit: int) -> tuple[Any, bool]:
    """``value`` within ``limit`` bytes of JSON, and whether it had to be cut."""
    size = _size(value)
    if size <= limit:
        return value, False
    for _ in range(MAX_SHRINK_ROUNDS):
        found = _longest_string(value)
        if found is None or not found[1]:
            break
        path, text = found
        # removing n bytes of the text removes at least n bytes of its JSON (escapes only add)
        raw = text.encode("utf-8", "surrogatepass")
        keep = max(0, len(raw) - (size - limit) - 16)
        value = _replace(value, path, raw[:keep].decode("utf-8", "ignore") + "…" if keep else "")
        size = _size(value)
        if size <= limit:
            return value, True
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    cut = text.encode("utf-8", "surrogatepass")[: limit - 16].decode("utf-8", "ignore")
    return cut, True


def bounded_output(value: Any, limit: int = MAX_OUTPUT_BYTES) -> tuple[Any, bool]:
    """The ``output`` a return value is stored as, and ``output_truncated`` (module docstring)."""
    if value is None:
        return None, False
    try:
        return _fit(_plain(value), limit)
    except (NotJson, RecursionError):
        text = _text(repr(value))
        if len(text) > MAX_REPR_CHARS:
            text = text[: MAX_REPR_CHARS - 1] + "…"
        return {"unserializable": type(value).__name__, "repr": text}, False


class LogCapture(logging.Handler):
    """Keeps the last `MAX_LOG_BYTES` of the lines logged to one attempt's logger."""

    def __init__(self, limit: int = MAX_LOG_BYTES) -> None:
        super().__init__(logging.NOTSET)
        self.limit = limit
        self._lines: deque[str] = deque()
        self._bytes = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what was given
            message = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        at = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = _text(f"{at} {record.levelname} {message}")
        size = len(line.encode("utf-8", "replace")) + 1
        if size > self.limit:
            line = line.encode("utf-8", "replace")[-(self.limit - 1):].decode("utf-8", "ignore")
            size = len(line.encode("utf-8", "replace")) + 1
        with self._guard:
            self._lines.append(line)
            self._bytes += size
            while self._bytes > self.limit and self._lines:
                self._bytes -= len(self._lines.popleft().encode("utf-8", "replace")) + 1

    def text(self) -> str | None:
        """The kept lines (None when nothing was logged)."""
        with self._guard:
            return "\n".join(self._lines) if self._lines else None


def attempt_logger(parent: logging.Logger, capture: LogCapture) -> logging.Logger:
    """A logger for one attempt's handler: what it logs is kept by ``capture`` and goes on
    to ``parent``'s handlers (the process's log) as before."""
    logger = logging.Logger(parent.name)
    logger.parent = parent
    logger.propagate = True
    logger.setLevel(parent.getEffectiveLevel())
    logger.addHandler(capture)
    return logger


def run_output(value: Any, capture: LogCapture | None) -> RunOutput:
    """The `RunOutput` an attempt that returned ``value`` leaves."""
    output, truncated = bounded_output(value)
    return RunOutput(output=output, truncated=truncated, log=capture.text() if capture else None)


__all__ = ["LogCapture", "attempt_logger", "bounded_output", "run_output"]
