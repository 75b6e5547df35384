"""Key-vault rows are told apart by their holder type, on SQLite and a real PostgreSQL:
a user whose id reads like the service's own row (``service:<data key id>``) can neither
read nor overwrite it, and sealing, envelopes, rotation and shredding still work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.jobs import MESSAGE_ENCRYPTION, Job
from application.outgoing import Outgoing
from application.ports import SERVICE_KEY, USER_KEY, message_key_context
from application.processing import Processor
from application.rotation import KeyRotation
from application.sealing import SERVICE_HOLDER
from domain.events import Context
from infrastructure.crypto import MasterKeyring, generate_master_key_spec
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from interfaces.http.wire import envelope_dict
from tests.conftest import PG_DSN
from tests.recipient import open_envelope, public_pem

TENANT = "t1"
SECRET = "namesake-secret-41c2"
MID = UUID(int=0xA11CE)
DEK = UUID(int=0xDEC)
NAMESAKE = f"{SERVICE_HOLDER}:{DEK.hex}"  # a valid user id (docs/API.md: userId)
FIRST_KEY = generate_master_key_spec("mk1")


class Nobody:
    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]:
        return set()

    def notify(self, *args: Any) -> dict[str, dict[str, str]]:
        return {}

    def index(self, message: Any) -> None:
        return None


def ctx(user: str) -> Context:
    return Context(actor_id=user, tenant_id=TENANT)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    env = {
        "JWT_SECRET": "s" * 40,
        "ENCRYPTION_MASTER_KEYS": FIRST_KEY,
        "COURIER_DATA_DIR": str(tmp_path),
    }
    if request.param == "postgres":
        env |= {"DATABASE_URL": PG_DSN, "POSTGRES_SCHEMA": request.getfixturevalue("pg_schema")}
    built = build(load(env), TOOL)
    for user in ("alice", NAMESAKE):
        built.messaging.register_key(ctx(user), public_pem(user))
    yield built
    built.stop()


def test_a_user_named_like_the_service_row_cannot_read_or_overwrite_it(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = container.messaging
    vault = app.crypto.vault
    group = app.start_conversation(ctx("alice"), "group", [NAMESAKE], "ward")
    # The message's id, then its data key's id: the data key's vault holder is then
    # exactly the namesake's user id.
    ids = iter([MID, DEK])
    monkeypatch.setattr("application.sending.new_id", lambda: next(ids))
    monkeypatch.setattr("application.sealing.new_id", lambda: next(ids))
    sent = app.send_group(ctx("alice"), group.id, Outgoing(content=SECRET, encrypted=True))
    monkeypatch.undo()
    assert sent.message.id == MID and (sent.message.sealed or {})["dekId"] == DEK.hex
    service = vault.get(MID, SERVICE_KEY, NAMESAKE)
    assert service is not None and service.key_id == "mk1"
    # Before the job wraps a key for them, the namesake has none: the service's is not theirs.
    assert vault.get(MID, USER_KEY, NAMESAKE) is None

    Processor(app, app.crypto, Nobody(), Nobody(), Nobody()).run(
        Job(MESSAGE_ENCRYPTION, MID, "seal", TENANT)
    )

    # The job wrote the namesake's key beside the service's, not over it.
    assert vault.get(MID, SERVICE_KEY, NAMESAKE) == service
    mine = envelope_dict(app.envelope(ctx(NAMESAKE), MID))
    assert open_envelope(NAMESAKE, mine).decode() == SECRET
    assert open_envelope("alice", envelope_dict(app.envelope(ctx("alice"), MID))).decode() == SECRET
    keyring = app.crypto.keyring
    context = message_key_context(MID, NAMESAKE)
    assert len(keyring.unwrap("mk1", service.wrapped_key, context)) == 32  # still opens

    # Rotation moves the service's row alone; users' RSA wraps are not the keyring's.
    rotating = MasterKeyring.from_spec(f"{generate_master_key_spec('mk2')},{FIRST_KEY}")
    report = KeyRotation(rotating, vault).run()
    assert (report.rewrapped, report.complete) == (1, True)
    rotated = vault.get(MID, SERVICE_KEY, NAMESAKE)
    assert rotated is not None and rotated.key_id == "mk2"
    assert len(rotating.unwrap("mk2", rotated.wrapped_key, context)) == 32
    assert envelope_dict(app.envelope(ctx(NAMESAKE), MID))["wrappedKey"] == mine["wrappedKey"]

    # Shredding destroys all three keys: the service's and both participants'.
    assert app.shred(ctx("alice"), MID, "erasure").keys_destroyed == 3
    for holder_type, holder in ((SERVICE_KEY, NAMESAKE), (USER_KEY, NAMESAKE), (USER_KEY, "alice")):
        assert vault.get(MID, holder_type, holder) is None
