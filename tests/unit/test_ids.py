"""Random bytes and ids from the process's pool of CSPRNG bytes."""

from __future__ import annotations

import os

import pytest

from domain.ids import new_id, random_bytes


def test_random_bytes_are_never_handed_out_twice() -> None:
    # 2,000 draws cross several refills of the 4 KiB pool.
    draws = [random_bytes(12) for _ in range(2000)]
    assert all(len(d) == 12 for d in draws)
    assert len(set(draws)) == len(draws)
    assert len({random_bytes(4096) for _ in range(3)}) == 3


def test_sizes_outside_the_pool_are_refused() -> None:
    for n in (0, -1, 4097):
        with pytest.raises(ValueError):
            random_bytes(n)


def test_ids_are_version_4() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert {i.version for i in ids} == {4}


def test_a_forked_child_does_not_reuse_its_parents_bytes() -> None:
    random_bytes(16)  # the parent's pool now holds bytes it has not handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write what it draws first, and leave
        os.close(read)
        os.write(write, random_bytes(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_bytes(32)
