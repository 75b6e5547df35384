"""Jobs of one message take turns and start from the newest copy at hand."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from application.turns import Turns
from tests.e2e.harness import wait_for


@dataclass
class Copy:
    id: UUID
    version: int


def test_one_holder_at_a_time_per_message_and_others_go_on() -> None:
    turns = Turns()
    first, other = uuid4(), uuid4()
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def hold() -> None:
        with turns.turn(first):
            inside.set()
            release.wait(10)
            order.append("first")

    def follow() -> None:
        with turns.turn(first):
            order.append("second")

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(10)
    follower = threading.Thread(target=follow)
    follower.start()
    with turns.turn(other):  # another message does not wait
        order.append("other")
    assert order == ["other"]
    release.set()
    holder.join(10)
    follower.join(10)
    wait_for(lambda: order == ["other", "first", "second"], 5, "both turns taken in order")
    assert turns._turns == {}  # nothing left behind


def test_take_gives_the_newest_copy_once_and_keep_is_bounded() -> None:
    turns = Turns(kept=2)
    mid = uuid4()
    kept: Any = Copy(mid, 5)
    turns.keep(kept)
    older: Any = Copy(mid, 3)
    assert turns.take(mid, older) is kept
    assert turns.take(mid, None) is None  # taken: the next one loads or brings its own
    newer: Any = Copy(mid, 7)
    turns.keep(kept)
    assert turns.take(mid, newer) is newer
    for _ in range(3):
        copy: Any = Copy(uuid4(), 1)
        turns.keep(copy)
    assert len(turns._kept) == 2
