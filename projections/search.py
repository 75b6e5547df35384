"""The `search` view: what each message can be found by, and who may find it.

A plain message is indexed by the database's full-text search over its normalised
words (PostgreSQL: a tsvector with a GIN index; SQLite: the FTS5 table
``search_fts``). An encrypted message is indexed by the blind-index tokens its
``Created`` event carries: HMACs of its distinct words under the tenant's index key,
so that an exact word can be matched and the words themselves are never stored.
A message becomes findable when it is ``Indexed``; ``Shredded`` removes it.
"""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    cast,
    column,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import REGCONFIG

from application.search import words
from domain.message import Message
from projections.tables import message_recipients, search_documents, search_tokens

# Stemmed English on both backends ("clinics" finds "clinic"); the blind index has
# no stemmer, so an encrypted message is found by its exact (normalised) words only.
PG_CONFIG = "english"
# The FTS5 table, made by migration 0004 on SQLite only (no place in the metadata).
FTS_TABLE = "search_fts"
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
search_fts = table(FTS_TABLE, column("rowid"), column("message_id"), column("document"))


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _tsvector(document: str) -> Any:
    return func.to_tsvector(cast(literal(PG_CONFIG), REGCONFIG), document)


class SearchView:
    """Applies message events to the search tables."""

    name = "search"

    @singledispatchmethod
    def apply(self, event: Any, conn: Connection, position: int) -> None:
        """Events that change nothing findable are skipped."""

    @apply.register
    def _(self, event: Message.Created, conn: Connection, position: int) -> None:
        if not event.index:
            return
        mid = str(event.originator_id)
        tenant = event.meta.get("tenant_id", event.tenant_id)
        document = " ".join(words(event.content)) if event.content and not event.encrypted else ""
        postgres = conn.dialect.name == "postgresql"
        inserted = conn.execute(
            _insert(conn)(search_documents)
            .values(
                message_id=mid,
                tenant_id=tenant,
                conversation_id=str(event.conversation_id),
                sender_id=event.sender_id,
                is_encrypted=bool(event.encrypted),
                searchable=False,
                document=_tsvector(document) if postgres and document else None,
                created_at=event.timestamp,
                position=position,
            )
            .on_conflict_do_nothing()
        ).rowcount
        if not inserted:
            return
        if document and not postgres:
            # A replay empties the view's tables but not this virtual one: replace.
            conn.execute(
                search_fts.insert()
                .prefix_with("OR REPLACE")
                .values(rowid=position, message_id=mid, document=document)
            )
        tokens = sorted(set(getattr(event, "search_tokens", None) or ()))
        if tokens:
            rows = [{"tenant_id": tenant, "token": t, "message_id": mid} for t in tokens]
            conn.execute(_insert(conn)(search_tokens).on_conflict_do_nothing(), rows)

    @apply.register
    def _(self, event: Message.Indexed, conn: Connection, position: int) -> None:
        conn.execute(
            update(search_documents)
            .where(search_documents.c.message_id == str(event.originator_id))
            .values(searchable=True)
        )

    @apply.register
    def _(self, event: Message.Shredded, conn: Connection, position: int) -> None:
        mid = str(event.originator_id)
        forget(conn, [mid])


def forget(conn: Connection, message_ids: list[str]) -> None:
    """Make messages unfindable: their document, words and tokens go."""
    documents = search_documents.c
    if conn.dialect.name == "sqlite":
        rowids = select(documents.position).where(documents.message_id.in_(message_ids))
        conn.execute(delete(search_fts).where(search_fts.c.rowid.in_(rowids)))
    conn.execute(delete(search_tokens).where(search_tokens.c.message_id.in_(message_ids)))
    conn.execute(delete(search_documents).where(documents.message_id.in_(message_ids)))


def matching_ids(
    dialect: str,
    tenant_id: str,
    user_id: str,
    terms: list[str],
    tokens: list[str],
    conversation_id: UUID | None,
) -> Select[Any]:
    """Ids of the findable messages of ``tenant_id`` that ``user_id`` sent or received
    and that hold every term: plain ones by full text, encrypted ones by ``tokens``."""
    d = search_documents
    plain: ColumnElement[bool]
    if dialect == "postgresql":
        query = func.plainto_tsquery(cast(literal(PG_CONFIG), REGCONFIG), " ".join(terms))
        plain = d.c.document.op("@@")(query)
    else:
        phrase = " ".join(f'"{term}"' for term in terms)
        hits = select(search_fts.c.rowid).where(
            text(f"{FTS_TABLE} MATCH :phrase").bindparams(phrase=phrase)
        )
        plain = d.c.position.in_(hits)
    kinds = [and_(d.c.is_encrypted.is_(False), plain)]
    wanted = sorted(set(tokens))
    if wanted:
        holding_all = (
            select(search_tokens.c.message_id)
            .where(search_tokens.c.tenant_id == tenant_id, search_tokens.c.token.in_(wanted))
            .group_by(search_tokens.c.message_id)
            .having(func.count() == len(wanted))
        )
        kinds.append(and_(d.c.is_encrypted.is_(True), d.c.message_id.in_(holding_all)))
    received = exists().where(
        message_recipients.c.message_id == d.c.message_id,
        message_recipients.c.recipient_id == user_id,
    )
    query_ids = select(d.c.message_id).where(
        d.c.tenant_id == tenant_id,
        d.c.searchable.is_(True),
        or_(d.c.sender_id == user_id, received),
        or_(*kinds),
    )
    if conversation_id is not None:
        query_ids = query_ids.where(d.c.conversation_id == str(conversation_id))
    return query_ids
