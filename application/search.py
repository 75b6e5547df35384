"""The words a message is found by: one normalisation for indexing and for queries.

Plain messages are indexed by the database's full-text search over these words;
encrypted ones by a blind index, an HMAC token per distinct word (see
``application.ports.BlindIndex``), so that the service can match an exact word
without keeping it.
"""

from __future__ import annotations

import re
import unicodedata

WORD = re.compile(r"\w+")
MAX_WORD_CHARS = 64
# Distinct words of one encrypted message kept as tokens (they travel in its Created
# event): plenty for a clinical note, bounded for a 64 KiB paste.
MAX_BLIND_WORDS = 2048
# Words of one query: a query matches messages holding every one of them.
MAX_QUERY_WORDS = 16


def _fold(text: str) -> str:
    """Case-folded, without diacritics, compatibility forms unified ("Café" → "cafe")."""
    if text.isascii():  # most text: no diacritics or compatibility forms to take off
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", bare)


def words(text: str) -> list[str]:
    """Every word of ``text`` in order, normalised; overlong runs are not words."""
    return [w for w in WORD.findall(_fold(text)) if len(w) <= MAX_WORD_CHARS]


def distinct_words(text: str, limit: int) -> list[str]:
    """The first ``limit`` distinct normalised words of ``text``."""
    return list(dict.fromkeys(words(text)))[:limit]


def query_words(query: str) -> list[str]:
    return distinct_words(query, MAX_QUERY_WORDS)


def blind_words(content: str) -> list[str]:
    """The words of an encrypted message that its blind-index tokens stand for."""
    return distinct_words(content, MAX_BLIND_WORDS)
