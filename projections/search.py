"""The `search` view: what each message can be found by, and who may find it.

A plain message is indexed by the database's full-text search over its normalised
words (PostgreSQL: a tsvector with a GIN index; SQLite: the FTS5 table
``search_fts``). An encrypted message is indexed by its blind-index tokens: HMACs of its
distinct words under the tenant's index key, so that an exact word can be matched and the
words themselves are never stored. The send puts them in the key vault, which shredding
empties (older ``Created`` events carry them).
A message becomes findable when it is ``Indexed``; ``Shredded`` removes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import sql
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
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
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import REGCONFIG

from application.ports import SEARCH_HOLDER, SEARCH_ROW, vault_reference
from application.search import words
from domain.message import Message
from infrastructure.storage.bulk import driver, qualified, set_where_in, upsert_rows
from projections.tables import message_recipients, search_documents, search_tokens

# Stemmed English on both backends ("clinics" finds "clinic"); the blind index has
# no stemmer, so an encrypted message is found by its exact (normalised) words only.
PG_CONFIG = "english"
# The FTS5 table, made by migration 0004 on SQLite only (no place in the metadata).
FTS_TABLE = "search_fts"
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
search_fts = table(FTS_TABLE, column("rowid"), column("message_id"), column("document"))


@dataclass
class _Pending:
    """What a run of events adds, written in a few statements."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # message id -> its words
    tokens: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Encrypted messages whose tokens are in the key vault: message id -> (tenant, holder)
    vaulted: dict[str, tuple[str, str]] = field(default_factory=dict)
    indexed: list[str] = field(default_factory=list)


class SearchView:
    """Applies message events to the search tables, a batch at a time."""

    name = "search"
    handles: tuple[type, ...] = (Message.Created, Message.Indexed, Message.Shredded)

    def apply(self, event: Any, conn: Connection, position: int) -> None:
        self.apply_many([(position, event)], conn)

    def apply_many(self, batch: Sequence[tuple[int, Any]], conn: Connection) -> None:
        pending = _Pending()
        for position, event in batch:
            if isinstance(event, Message.Created):
                self._created(event, position, pending)
            elif isinstance(event, Message.Indexed):
                pending.indexed.append(str(event.originator_id))
            elif isinstance(event, Message.Shredded):
                # What came before is written first: a shredded message must not
                # come back findable from rows still pending.
                self._write(conn, pending)
                pending = _Pending()
                forget(conn, [str(event.originator_id)])
        self._write(conn, pending)

    def _created(self, event: Message.Created, position: int, pending: _Pending) -> None:
        if not event.index:
            return
        mid = str(event.originator_id)
        tenant = event.meta.get("tenant_id", event.tenant_id)
        document = " ".join(words(event.content)) if event.content and not event.encrypted else ""
        pending.documents.append(
            {
                "message_id": mid,
                "tenant_id": tenant,
                "conversation_id": str(event.conversation_id),
                "sender_id": event.sender_id,
                "is_encrypted": bool(event.encrypted),
                "searchable": False,
                "text": document or None,
                "created_at": event.timestamp,
                "position": position,
            }
        )
        if document:
            pending.texts[mid] = document
        tokens = sorted(set(getattr(event, "search_tokens", None) or ()))
        if tokens:  # an event recorded before the tokens left the log
            pending.tokens[mid] = [
                {"tenant_id": tenant, "token": t, "message_id": mid} for t in tokens
            ]
        elif event.encrypted and not event.end_to_end:
            holder = SEARCH_HOLDER + vault_reference(event.content_digest)
            pending.vaulted[mid] = (tenant, holder)

    def _write(self, conn: Connection, pending: _Pending) -> None:
        postgres = conn.dialect.name == "postgresql"
        _vaulted_tokens(conn, pending)
        if pending.documents:
            # Only messages new to the view get their words and tokens (a replay from a
            # position meets messages it already holds).
            if postgres:
                inserted = _insert_documents_pg(conn, pending.documents)
            else:
                inserted = _insert_documents(conn, pending.documents)
            fts = [
                {"rowid": row["position"], "message_id": mid, "document": pending.texts[mid]}
                for row in pending.documents
                if (mid := row["message_id"]) in inserted and mid in pending.texts
            ]
            if fts and not postgres:
                # A replay empties the view's tables but not this virtual one: replace.
                conn.execute(search_fts.insert().prefix_with("OR REPLACE"), fts)
            tokens = [t for mid, rows in pending.tokens.items() if mid in inserted for t in rows]
            upsert_rows(conn, search_tokens, (), tokens)
        set_where_in(conn, search_documents, {"searchable": True}, "message_id", pending.indexed)


# The write side's key vault (``infrastructure.tables.key_vault``), read by name.
VAULTED = text(
    "SELECT message_id, holder, wrapped_key FROM key_vault"
    " WHERE message_id IN :ids AND holder_type = :holder_type"
).bindparams(bindparam("ids", expanding=True))


def _vaulted_tokens(conn: Connection, pending: _Pending) -> None:
    """The tokens the send put in the key vault, in one query (none once shredded:
    a rebuild then finds nothing to index a shredded message by)."""
    if not pending.vaulted:
        return
    # Text, not a Table: a rebuild in a shadow schema translates every table's schema,
    # but the vault is read where it lives (the connection's search path).
    rows = conn.execute(VAULTED, {"ids": list(pending.vaulted), "holder_type": SEARCH_ROW})
    for mid, holder, data in rows:
        tenant, wanted = pending.vaulted[mid]
        if holder == wanted:
            tokens = sorted(set(bytes(data).decode("ascii").split("\n")) - {""})
            pending.tokens[mid] = [
                {"tenant_id": tenant, "token": t, "message_id": mid} for t in tokens
            ]
    pending.vaulted.clear()


def _insert_documents(conn: Connection, documents: list[dict[str, Any]]) -> set[str]:
    stmt = (
        sqlite.insert(search_documents)
        .values({name: bindparam(name) for name in _DOCUMENT_COLUMNS})
        .on_conflict_do_nothing()
        .returning(search_documents.c.message_id)
    )
    return set(conn.execute(stmt, documents).scalars())


def _insert_documents_pg(conn: Connection, documents: list[dict[str, Any]]) -> set[str]:
    """One statement whatever the number of documents; the words become a tsvector in it."""
    names = sql.SQL(", ").join(sql.Identifier(name) for name in _DOCUMENT_COLUMNS)
    statement = sql.SQL(
        "INSERT INTO {} ({}, document) SELECT {}, to_tsvector({}::regconfig, d.text) "
        "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[], "
        "%s::boolean[], %s::timestamptz[], %s::bigint[], %s::text[]) "
        "AS d({}, text) ON CONFLICT DO NOTHING RETURNING message_id"
    ).format(qualified(conn, search_documents), names, names, sql.Literal(PG_CONFIG), names)
    columns = [[row[name] for row in documents] for name in (*_DOCUMENT_COLUMNS, "text")]
    with driver(conn).cursor() as cursor:
        return {mid for (mid,) in cursor.execute(statement, columns).fetchall()}


_DOCUMENT_COLUMNS = (
    "message_id",
    "tenant_id",
    "conversation_id",
    "sender_id",
    "is_encrypted",
    "searchable",
    "created_at",
    "position",
)


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
