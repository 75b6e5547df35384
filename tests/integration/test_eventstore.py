"""The event store's PostgreSQL recorder: eventsourcing's rows, ids and order, cheaper."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import InfrastructureFactory, IntegrityError, StoredEvent

from application.ports import SERVICE_KEY, USER_KEY, VaultEntry
from infrastructure.eventstore import TOPIC, PlainArraysRecorder
from infrastructure.pgarrays import bare, hex_bytes, quoted


def recorder_env(dsn: str, schema: str) -> dict[str, str]:
    p = urlparse(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": p.path.lstrip("/"),
        "POSTGRES_HOST": p.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(p.port or 5432),
        "POSTGRES_USER": p.username or "postgres",
        "POSTGRES_PASSWORD": p.password or "",
        "POSTGRES_SCHEMA": schema,
        "APPLICATION_RECORDER_TOPIC": TOPIC,
    }


def make_recorder(dsn: str, schema: str) -> PlainArraysRecorder:
    factory = InfrastructureFactory.construct(recorder_env(dsn, schema))
    recorder = factory.application_recorder()
    assert isinstance(recorder, PlainArraysRecorder)
    return recorder


@pytest.fixture
def schema(pg_schema: str) -> str:
    return pg_schema


def test_concurrent_writers_get_contiguous_ids_in_commit_order(pg_dsn: str, schema: str) -> None:
    recorder = make_recorder(pg_dsn, schema)
    recorder.datastore.pool.resize(min_size=2, max_size=8)

    def write(_: int) -> list[int]:
        ids: list[int] = []
        for _ in range(25):
            aggregate = uuid4()
            batch = [StoredEvent(aggregate, v, "t:Changed", b"{}") for v in (1, 2, 3)]
            got = recorder.insert_events(batch)
            assert got is not None
            ids.extend(got)
            # One transaction's events are numbered together, with nobody in between.
            assert got == list(range(got[0], got[0] + 3))
        return ids

    with ThreadPoolExecutor(max_workers=4) as pool:
        every = [i for ids in pool.map(write, range(4)) for i in ids]
    assert len(set(every)) == 300
    logged = [n.id for n in recorder.select_notifications(start=None, limit=1000)]
    assert logged == sorted(every)


def test_a_batch_gets_notification_ids_in_order_and_a_conflict_stores_nothing(
    pg_dsn: str, schema: str
) -> None:
    recorder = make_recorder(pg_dsn, schema)
    a, b = uuid4(), uuid4()
    events = [
        StoredEvent(a, 1, "t:Created", b"{}"),
        StoredEvent(b, 1, "t:Created", b"\x00\xff"),
        StoredEvent(a, 2, "t:Changed", b'{"x":1}'),
    ]
    ids = recorder.insert_events(events)
    assert ids is not None and len(ids) == 3 and ids == sorted(ids)
    stored = recorder.select_notifications(start=None, limit=10)
    assert [(n.originator_id, n.originator_version, n.state) for n in stored] == [
        (e.originator_id, e.originator_version, e.state) for e in events
    ]
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(b, 2, "t:Changed", b"{}"), events[0]])
    assert len(recorder.select_events(b)) == 1


def test_vault_rows_ride_in_the_events_transaction_and_fall_with_it(
    pg_dsn: str, schema: str
) -> None:
    from infrastructure import migrate
    from infrastructure.eventstore import with_keys

    url = "postgresql+psycopg://" + pg_dsn.split("://", 1)[1]
    migrate.upgrade(url, schema=schema)
    recorder = make_recorder(pg_dsn, schema)

    def put(events: list[StoredEvent], **kwargs: object) -> list[int]:
        return list(recorder.insert_events(events, **kwargs) or [])

    def vault_rows() -> list[tuple[str, str, str, bytes]]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                f"SELECT message_id, holder_type, holder, wrapped_key FROM {schema}.key_vault "
                "ORDER BY holder, holder_type"
            ).fetchall()
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    store = with_keys(put)
    a, b = uuid4(), uuid4()
    key = VaultEntry(a, "service:d1", "m1", b"wrapped", SERVICE_KEY)
    # A user whose id reads like the service's holder has a row of their own.
    namesake = VaultEntry(a, "service:d1", "k_u", b"user's", USER_KEY)
    answer = store([StoredEvent(a, 1, "t:Created", b"{}"), key, namesake])
    assert answer[1:] == [None, None] and isinstance(answer[0], int)
    stored = [
        (str(a), "service", "service:d1", b"wrapped"),
        (str(a), "user", "service:d1", b"user's"),
    ]
    assert vault_rows() == stored

    # A batch that conflicts stores neither its events nor its keys.
    with pytest.raises(IntegrityError):
        store(
            [
                StoredEvent(b, 1, "t:Created", b"{}"),
                VaultEntry(b, "service:d2", "m1", b"other", SERVICE_KEY),
                StoredEvent(a, 1, "t:Created", b"{}"),
            ]
        )
    assert recorder.select_events(b) == []
    assert vault_rows() == stored


def test_array_literals_carry_any_text_and_bytes_unchanged(pg_dsn: str) -> None:
    texts = ['a"b\\c,{x} ', "NULL", "", "x'y", "ünï\tcode", "\\\\", '"']
    blobs = [b"", b"\x00\xff\\", bytes(range(256)), b'"{}']
    numbers = [0, -1, 2**62]
    with psycopg.connect(pg_dsn) as conn, conn.cursor() as curs:
        curs.execute(
            "SELECT %s::text[], %s::bytea[], %s::bigint[]",
            (quoted(texts), hex_bytes(blobs), bare(numbers)),
        )
        assert curs.fetchone() == (texts, blobs, numbers)
        curs.execute(
            "SELECT %s::text[], %s::bytea[], %s::bigint[]", (quoted([]), hex_bytes([]), bare([]))
        )
        assert curs.fetchone() == ([], [], [])


def test_stored_events_read_back_as_they_were_written(pg_dsn: str, schema: str) -> None:
    recorder = make_recorder(pg_dsn, schema)
    aggregate = uuid4()
    batch = [
        StoredEvent(aggregate, 1, 'odd"topic\\,{}', b""),
        StoredEvent(aggregate, 2, "t:Changed", bytes(range(256))),
    ]
    recorder.insert_events(batch)
    assert recorder.select_events(aggregate) == batch
