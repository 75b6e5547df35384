"""Processes started together all create the event tables: none of them may fail."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from application.messaging import Messaging
from application.ports import Crypto
from infrastructure.crypto import AesGcmCipher, MasterKeyring, generate_master_key_spec
from infrastructure.runtime.stores import make_engine, open_messaging
from infrastructure.settings import load
from infrastructure.vault import SqlKeyVault

pytestmark = pytest.mark.services

OPENERS = 6


def test_applications_opened_at_the_same_moment_all_open(pg_dsn: str, pg_schema: str) -> None:
    settings = load(
        {
            "DATABASE_URL": pg_dsn,
            "POSTGRES_SCHEMA": pg_schema,
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        }
    )
    engine = make_engine(settings)
    crypto = Crypto(
        cipher=AesGcmCipher(),
        keyring=MasterKeyring.from_spec(settings.master_key_spec()),
        vault=SqlKeyVault(engine),
    )
    start = threading.Barrier(OPENERS)
    opened: list[Messaging] = []
    failures: list[Any] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_messaging(crypto, settings))
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failures == []
        assert len(opened) == OPENERS
    finally:
        for app in opened:
            app.close()
        engine.dispose()
