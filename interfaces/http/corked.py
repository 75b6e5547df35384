"""A transport that sends what one turn of the event loop writes in one system call.

uvicorn writes an answer's status line and headers, then its body, each straight to the
socket: two ``send`` calls and two TCP segments per answer, which the client reads
twice. Writes through ``CorkedTransport`` are gathered and handed to the socket once the
current callback is done (``loop.call_soon``), so an answer leaves in one piece. Closing
or aborting flushes or drops what is gathered first; order is always kept.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CorkedTransport:
    """Wraps ``raw``; everything but ``write`` (and what depends on it) is ``raw``'s."""

    def __init__(self, raw: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.raw = raw
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what was gathered to the socket now (nothing if it is closing)."""
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.raw.is_closing():
            self.raw.write(data)

    def close(self) -> None:
        self.flush()
        self.raw.close()

    def abort(self) -> None:
        self._pending.clear()
        self.raw.abort()

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, get_protocol,
        # set_protocol, ...: the socket's own.
        return getattr(self.raw, name)
