"""Per-event dispatch without the cost of ``functools.singledispatchmethod`` lookups.

Looking a ``singledispatchmethod`` up on an instance builds a new wrapper each time
(Python 3.11), which a projection pays once per event: noticeable in a replay of
millions. ``handler_of`` returns the registered function for an event's type, unbound.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import singledispatchmethod
from typing import Any


def handler_of(owner: type, name: str) -> Callable[[Any], Callable[..., Any]]:
    """For ``owner.name`` (a singledispatchmethod): event -> the function to call."""
    method = owner.__dict__[name]
    assert isinstance(method, singledispatchmethod)
    dispatch = method.dispatcher.dispatch
    return lambda event: dispatch(type(event))


def registered(owner: type, name: str) -> tuple[type, ...]:
    """The event classes ``owner.name`` (a singledispatchmethod) has a handler for."""
    method = owner.__dict__[name]
    assert isinstance(method, singledispatchmethod)
    return tuple(cls for cls in method.dispatcher.registry if cls is not object)
