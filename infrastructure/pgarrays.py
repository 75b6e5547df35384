"""PostgreSQL array literals, made in one join instead of element by element.

psycopg adapts a list parameter in Python, one element at a time (``ListDumper``): for
the event store's insert that was a third of the group commit's CPU. An array's text
form passed as one string parameter and cast by the statement (``%s::bytea[]``) costs a
``join``; the server parses it. The parameter still travels apart from the statement
(nothing is spliced into SQL): quoting here only has to follow the array syntax.
"""

from __future__ import annotations

from collections.abc import Sequence


def quoted(values: Sequence[str]) -> str:
    """``{"a","b"}``: each element double-quoted, its backslashes and quotes escaped."""
    return (
        '{"' + '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values) + '"}'
        if values
        else "{}"
    )


def bare(values: Sequence[int]) -> str:
    """``{1,2}``: for integers, whose text needs no quoting."""
    return "{" + ",".join(map(str, values)) + "}"


def hex_bytes(values: Sequence[bytes]) -> str:
    """``{"\\\\x0a…"}``: byte strings in bytea's hex form."""
    return '{"\\\\x' + '","\\\\x'.join(v.hex() for v in values) + '"}' if values else "{}"
