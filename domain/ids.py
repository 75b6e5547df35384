"""Random (version 4) UUIDs without a system call each.

``uuid.uuid4()`` asks the kernel for 16 random bytes every time, and ``os.urandom``
lets go of the GIL to do so: under load each new id can wait its turn for the GIL
behind every other thread. These come from the same source, 4 KiB at a time.
"""

from __future__ import annotations

import os
import threading
from uuid import UUID

_CHUNK = 4096
_lock = threading.Lock()
_buffer = b""
_offset = _CHUNK


def new_id() -> UUID:
    """A random UUID, as ``uuid.uuid4()`` makes, from the operating system's CSPRNG."""
    global _buffer, _offset
    with _lock:
        if _offset >= len(_buffer):
            _buffer, _offset = os.urandom(_CHUNK), 0
        raw = _buffer[_offset : _offset + 16]
        _offset += 16
    return UUID(bytes=raw, version=4)


def _forget() -> None:
    # A child process must never hand out the ids its parent still has in store.
    global _buffer, _offset
    _buffer, _offset = b"", _CHUNK


os.register_at_fork(after_in_child=_forget)
