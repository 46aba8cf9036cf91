"""The traceback excerpt a failed attempt records in its run's ``error.traceback``.

Only the handler's side of the stack is kept — the frames from the first one
outside Dramatiq and ``cronhive.worker`` (the actor machinery every run shares)
— and of those the last `MAX_FRAMES`, then the exception line; at most
`MAX_TRACEBACK_CHARS` characters (the end is kept: it says where it failed).
File names are shown relative to the import root they were loaded from.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import dramatiq

MAX_FRAMES = 5
MAX_TRACEBACK_CHARS = 4000
MAX_LINE_CHARS = 300

#: Dramatiq's package and this one (``cronhive.worker``): the frames above the handler
_MACHINERY = tuple(str(path) + os.sep for path in (Path(dramatiq.__file__ or "").resolve().parent,
                                                   Path(__file__).resolve().parent))


def _relative(filename: str) -> str:
    """``filename`` relative to the longest ``sys.path`` entry holding it (else as is)."""
    resolved = str(Path(filename).resolve()) if filename and not filename.startswith("<") else filename
    best = ""
    for entry in sys.path:
        root = str(Path(entry or os.getcwd()).resolve()) + os.sep
        if resolved.startswith(root) and len(root) > len(best):
            best = root
    return resolved[len(best):] if best else resolved


def _is_machinery(filename: str) -> bool:
    return str(Path(filename).resolve()).startswith(_MACHINERY) if not filename.startswith("<") else False


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def traceback_excerpt(exception: BaseException) -> str | None:
    """The last frames of the handler's stack and the exception line; None without a traceback."""
    frames = traceback.extract_tb(exception.__traceback__)
    if not frames:
        return None
    start = next((index for index, frame in enumerate(frames) if not _is_machinery(frame.filename)), len(frames) - 1)
    lines = []
    for frame in frames[start:][-MAX_FRAMES:]:
        lines.append(_cut(f'  File "{_relative(frame.filename)}", line {frame.lineno}, in {frame.name}',
                          MAX_LINE_CHARS))
        if frame.line:
            lines.append(_cut(f"    {frame.line.strip()}", MAX_LINE_CHARS))
    lines.append(_cut("".join(traceback.format_exception_only(type(exception), exception)).strip(), MAX_LINE_CHARS))
    text = "\n".join(lines)
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "…" + text[-(MAX_TRACEBACK_CHARS - 1):]
    return text
