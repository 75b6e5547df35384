"""Random bytes and random (version 4) UUIDs without a system call each.

``uuid.uuid4()`` and ``os.urandom`` ask the kernel every time, and let go of the GIL
to do so: under load each call can wait its turn for the GIL behind every other
thread (on the API's event loop, that stalls every request). These come from the
same source, the operating system's CSPRNG, 4 KiB at a time; bytes are handed out
once and never to a forked child.
"""

from __future__ import annotations

import os
import threading
from uuid import UUID

_CHUNK = 4096
_lock = threading.Lock()
_buffer = b""
_offset = _CHUNK


def random_bytes(n: int) -> bytes:
    """``n`` bytes (at most 4 KiB) from the operating system's CSPRNG, as ``os.urandom``."""
    global _buffer, _offset
    if not 0 < n <= _CHUNK:
        raise ValueError(f"random_bytes takes 1 to {_CHUNK} bytes, not {n}")
    with _lock:
        if _offset + n > len(_buffer):
            _buffer, _offset = os.urandom(_CHUNK), 0
        raw = _buffer[_offset : _offset + n]
        _offset += n
    return raw


def new_id() -> UUID:
    """A random UUID, as ``uuid.uuid4()`` makes."""
    return UUID(bytes=random_bytes(16), version=4)


def _forget() -> None:
    # A child process must never hand out the bytes its parent still has in store.
    global _buffer, _offset
    _buffer, _offset = b"", _CHUNK


os.register_at_fork(after_in_child=_forget)
