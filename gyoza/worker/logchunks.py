"""Live log lines cut into the pieces one report may carry (``MAX_LOG_CHUNK_CHARS``)."""

from __future__ import annotations

from gyoza.schema import MAX_LOG_CHUNK_CHARS


def log_chunks(lines: list[bytes], marker: bytes) -> list[tuple[str, int]]:
    """(text, lines it completes) pieces of at most ``MAX_LOG_CHUNK_CHARS``; a longer line spans several pieces,
    the last of which counts it. The truncation marker rides on the last piece."""
    pieces: list[tuple[str, int]] = []
    text, count = "", 0
    for raw in lines:
        line = raw.decode(errors="replace")
        while len(text) + len(line) > MAX_LOG_CHUNK_CHARS:
            room = MAX_LOG_CHUNK_CHARS - len(text)
            pieces.append((text + line[:room], count))
            text, count, line = "", 0, line[room:]
        text, count = text + line, count + 1
    text += marker.decode()
    if text:
        pieces.append((text, count))
    return pieces
