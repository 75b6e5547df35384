"""Encryption through the application: sealing, envelopes, end-to-end mode, shredding
and rotation, with the real cipher and keyring on the in-memory event store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from application.errors import ContentShredded, Invalid, MissingKeys, NotFound, NotReady
from application.jobs import MESSAGE_ENCRYPTION, Job
from application.messaging import Messaging
from application.outgoing import Outgoing
from application.policies import pending_jobs
from application.ports import (
    SERVICE_KEY,
    USER_KEY,
    Crypto,
    HolderType,
    KeyUnwrapError,
    VaultEntry,
    WrapFormat,
    holds_key,
    message_key_context,
)
from application.processing import ForeignWrappedKey, Processor
from application.rotation import KeyRotation
from application.sealing import SERVICE_HOLDER
from domain.events import Context
from infrastructure.crypto import AesGcmCipher, MasterKeyring, UnknownMasterKey
from infrastructure.worker.runner import describe
from interfaces.http.wire import envelope_dict, public_key_dict, shredded_dict
from tests.recipient import b64, open_envelope, public_pem, seal, unb64

TENANT = "clinic"
MARKER = "diagnosis-7f3a9c"
KEY_A = "ka:" + b64(b"A" * 32)
KEY_B = "kb:" + b64(b"B" * 32)


class MemoryVault:
    """``application.ports.KeyVault`` in a dict, as the SQL vault behaves."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], VaultEntry] = {}

    def put(self, entries: list[VaultEntry]) -> None:
        for e in entries:
            self.rows[(str(e.message_id), e.holder_type, e.holder)] = e

    def get(self, message_id: UUID, holder_type: HolderType, holder: str) -> VaultEntry | None:
        return self.rows.get((str(message_id), holder_type, holder))

    def shred(self, message_id: UUID) -> int:
        doomed = [k for k in self.rows if k[0] == str(message_id)]
        for k in doomed:
            del self.rows[k]
        return sum(1 for _, holder_type, _ in doomed if holds_key(holder_type))

    def entries_to_rewrap(
        self,
        holder_type: HolderType,
        key_id: str,
        current: WrapFormat,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[VaultEntry]:
        keys = sorted(
            (k[0], k[2])
            for k, e in self.rows.items()
            if k[1] == holder_type
            and (e.key_id != key_id or not current.is_current(e.wrapped_key))
            and (after is None or (k[0], k[2]) > after)
        )
        return [self.rows[(m, holder_type, h)] for m, h in keys[:limit]]

    def count_to_rewrap(self, holder_type: HolderType, key_id: str, current: WrapFormat) -> int:
        return len(self.entries_to_rewrap(holder_type, key_id, current, None, 1 << 30))

    def count_outdated(self, holder_type: HolderType, current: WrapFormat) -> int:
        return sum(
            1
            for (_, kind, _), e in self.rows.items()
            if kind == holder_type and not current.is_current(e.wrapped_key)
        )

    def count_by_key_id(self, holder_type: HolderType) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (_, kind, _), e in self.rows.items():
            if kind == holder_type:
                counts[e.key_id] = counts.get(e.key_id, 0) + 1
        return counts

    def rewrap(self, entry: VaultEntry, key_id: str, wrapped_key: bytes) -> bool:
        key = (str(entry.message_id), entry.holder_type, entry.holder)
        if self.rows.get(key) != entry:
            return False
        self.rows[key] = replace(entry, key_id=key_id, wrapped_key=wrapped_key)
        return True


class Nobody:
    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]:
        return set()

    def notify(
        self, tenant_id: str, message_id: UUID, user_ids: list[str], encrypted: bool
    ) -> dict[str, dict[str, str]]:
        return {}

    def index(self, message: Any) -> None:
        return None


def make_app(vault: MemoryVault, spec: str = KEY_A) -> Messaging:
    crypto = Crypto(AesGcmCipher(), MasterKeyring.from_spec(spec), vault)
    return Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def ctx(user: str) -> Context:
    return Context(actor_id=user, tenant_id=TENANT)


@pytest.fixture
def vault() -> MemoryVault:
    return MemoryVault()


@pytest.fixture
def app(vault: MemoryVault) -> Iterator[Messaging]:
    messaging = make_app(vault)
    for user in ("alice", "bob"):
        messaging.register_key(ctx(user), public_pem(user))
    yield messaging
    messaging.close()


def encrypt(app: Messaging, message_id: UUID) -> None:
    processor = Processor(app, app.crypto, Nobody(), Nobody(), Nobody())
    processor.run(Job(MESSAGE_ENCRYPTION, message_id, "seal", TENANT))


def send_sealed_by_service(app: Messaging, text: str = f"BP 140/90 {MARKER}") -> UUID:
    sent = app.send_direct(ctx("alice"), "bob", Outgoing(content=text, encrypted=True))
    return sent.message.id


def stored_events(app: Messaging, message_id: UUID) -> str:
    """Every event of the message as the store keeps it."""
    return "".join(
        item.state.decode("utf-8", "replace")
        for item in app.recorder.select_events(message_id)  # type: ignore[attr-defined]
    )


# ---- server-sealed -------------------------------------------------------------------


def test_a_recipient_opens_what_the_service_sealed(app: Messaging) -> None:
    mid = send_sealed_by_service(app)
    assert MARKER not in stored_events(app, mid)
    with pytest.raises(NotReady):
        app.envelope(ctx("bob"), mid)

    encrypt(app, mid)
    envelope = envelope_dict(app.envelope(ctx("bob"), mid))
    assert open_envelope("bob", envelope).decode() == f"BP 140/90 {MARKER}"
    assert unb64(envelope["aad"]) == f"courier:message:{mid}:v1".encode()
    assert len(unb64(envelope["iv"])) == 12 and len(unb64(envelope["authTag"])) == 16
    assert envelope["encryptionVersion"] == "v1"
    assert envelope["recipientKeyId"] == app.public_key(ctx("bob"), "bob").key_id
    # The sender holds a wrapped key of their own, to read what they sent.
    assert (
        open_envelope("alice", envelope_dict(app.envelope(ctx("alice"), mid)))
        .decode()
        .endswith(MARKER)
    )
    assert MARKER not in stored_events(app, mid)

    message = app.get_message(TENANT, mid)
    assert message.encryption is not None
    assert message.encryption["keyId"] == "ka"
    assert message.encryption["iv"] == envelope["iv"]


@pytest.mark.parametrize("part", ["aad", "iv", "authTag", "ciphertext"])
def test_any_altered_part_of_the_envelope_fails_to_decrypt(app: Messaging, part: str) -> None:
    mid = send_sealed_by_service(app)
    encrypt(app, mid)
    envelope = envelope_dict(app.envelope(ctx("bob"), mid))
    original = unb64(envelope[part])
    altered = bytes([original[0] ^ 1]) + original[1:]
    with pytest.raises(InvalidTag):
        open_envelope("bob", envelope, **{part: altered})


def test_the_aad_binds_the_message_id(app: Messaging) -> None:
    first, second = send_sealed_by_service(app), send_sealed_by_service(app)
    encrypt(app, first)
    encrypt(app, second)
    one = envelope_dict(app.envelope(ctx("bob"), first))
    other = envelope_dict(app.envelope(ctx("bob"), second))
    # Content moved under another message's id does not open.
    with pytest.raises(InvalidTag):
        open_envelope("bob", one, aad=unb64(other["aad"]))


def test_an_encrypted_send_names_everyone_without_a_key(app: Messaging) -> None:
    with pytest.raises(MissingKeys) as refused:
        app.send_direct(ctx("carol"), "dave", Outgoing(content="x", encrypted=True))
    assert "carol" in refused.value.message and "dave" in refused.value.message
    with pytest.raises(MissingKeys) as refused:
        app.send_direct(ctx("alice"), "dave", Outgoing(content="x", encrypted=True))
    assert [d["issue"] for d in refused.value.details] == ["no public key registered for dave"]


def test_only_participants_get_an_envelope(app: Messaging) -> None:
    mid = send_sealed_by_service(app)
    encrypt(app, mid)
    with pytest.raises(NotFound):
        app.envelope(ctx("mallory"), mid)
    with pytest.raises(NotFound):
        app.envelope(Context(actor_id="bob", tenant_id="other"), mid)
    plain = app.send_direct(ctx("alice"), "bob", Outgoing(content="hi")).message.id
    with pytest.raises(NotFound):
        app.envelope(ctx("bob"), plain)


def test_old_keys_stay_resolvable_and_new_messages_use_the_new_key(app: Messaging) -> None:
    first = public_key_dict(app.public_key(ctx("alice"), "bob"))
    before = send_sealed_by_service(app)
    encrypt(app, before)
    app.register_key(ctx("bob"), public_pem("bob-laptop"))
    current = public_key_dict(app.public_key(ctx("alice"), "bob"))
    assert current["keyId"] != first["keyId"]
    assert public_key_dict(app.public_key(ctx("alice"), "bob", first["keyId"])) == first
    with pytest.raises(NotFound):
        app.public_key(ctx("alice"), "bob", "k_nope")

    after = send_sealed_by_service(app)
    encrypt(app, after)
    old_envelope = envelope_dict(app.envelope(ctx("bob"), before))
    assert old_envelope["recipientKeyId"] == first["keyId"]
    assert open_envelope("bob", old_envelope).decode().endswith(MARKER)
    new_envelope = envelope_dict(app.envelope(ctx("bob"), after))
    assert new_envelope["recipientKeyId"] == current["keyId"]
    assert open_envelope("bob-laptop", new_envelope).decode().endswith(MARKER)


# ---- end-to-end ------------------------------------------------------------------------


def e2e(app: Messaging, holders: list[str], aad: bytes = b"courier:e2e:c-1") -> dict[str, Any]:
    return seal(f"sealed by alice {MARKER}".encode(), aad, {u: public_pem(u) for u in holders})


def test_an_end_to_end_message_is_stored_and_returned_unchanged(app: Messaging) -> None:
    sealed = e2e(app, ["alice", "bob"])
    sent = app.send_direct(ctx("alice"), "bob", Outgoing(sealed=sealed, encrypted=True))
    mid = sent.message.id
    assert sent.message.encryption is not None
    envelope = envelope_dict(app.envelope(ctx("bob"), mid))
    for field in ("ciphertext", "iv", "authTag", "aad"):
        assert envelope[field] == sealed[field]
    assert envelope["wrappedKey"] == sealed["wrappedKeys"]["bob"]
    assert open_envelope("bob", envelope).decode() == f"sealed by alice {MARKER}"
    assert MARKER not in stored_events(app, mid)
    assert sealed["wrappedKeys"]["bob"] not in stored_events(app, mid)


def test_end_to_end_keys_must_cover_every_participant_and_nobody_else(app: Messaging) -> None:
    with pytest.raises(Invalid) as refused:
        app.send_direct(ctx("alice"), "bob", Outgoing(sealed=e2e(app, ["alice"])))
    assert refused.value.details == [{"field": "sealed.wrappedKeys", "issue": "missing for bob"}]
    with pytest.raises(Invalid) as refused:
        app.send_direct(ctx("alice"), "bob", Outgoing(sealed=e2e(app, ["alice", "bob", "eve"])))
    assert refused.value.details == [
        {"field": "sealed.wrappedKeys", "issue": "eve is not a participant"}
    ]


# ---- shredding -------------------------------------------------------------------------


def test_shredding_destroys_the_keys_and_keeps_the_events(
    app: Messaging, vault: MemoryVault
) -> None:
    mid = send_sealed_by_service(app)
    encrypt(app, mid)
    assert len([k for k in vault.rows if k[0] == str(mid)]) == 3  # service, alice, bob
    admin = Context(actor_id="dpo", tenant_id=TENANT, actor_role="admin")
    result = shredded_dict(app.shred(admin, mid, "erasure"))
    assert result == {
        "messageId": str(mid),
        "shredded": True,
        "reason": "erasure",
        "keysDestroyed": 3,
    }
    assert not [k for k in vault.rows if k[0] == str(mid)]
    with pytest.raises(ContentShredded) as gone:
        app.envelope(ctx("bob"), mid)
    assert "destroyed" in gone.value.message
    kinds = [type(e).__name__ for e in app.events.get(mid)]
    assert kinds[:3] == ["Created", "EncryptionQueued", "Encrypted"] and kinds[-1] == "Shredded"
    # Repeating it destroys nothing more and records nothing more.
    assert app.shred(admin, mid, "erasure").keys_destroyed == 0
    assert [type(e).__name__ for e in app.events.get(mid)].count("Shredded") == 1


def test_only_encrypted_messages_of_the_tenant_can_be_shredded(app: Messaging) -> None:
    plain = app.send_direct(ctx("alice"), "bob", Outgoing(content="hi")).message.id
    with pytest.raises(Invalid):
        app.shred(ctx("alice"), plain, "erasure")
    mid = send_sealed_by_service(app)
    with pytest.raises(NotFound):
        app.shred(Context(actor_id="dpo", tenant_id="other"), mid, "erasure")
    with pytest.raises(Invalid):
        app.shred(ctx("alice"), mid, "because")


def test_a_message_shredded_before_encryption_is_never_sealed_for_anyone(
    app: Messaging, vault: MemoryVault
) -> None:
    mid = send_sealed_by_service(app)
    app.shred(ctx("dpo"), mid, "retention")
    encrypt(app, mid)  # the job arrives late: nothing to do, nothing written
    assert not [k for k in vault.rows if k[0] == str(mid)]
    assert app.get_message(TENANT, mid).encryption is None
    queues = [job.queue for job in pending_jobs(app.get_message(TENANT, mid))]
    assert MESSAGE_ENCRYPTION not in queues  # the reconciler does not keep asking either


def test_keys_wrapped_while_shredding_do_not_survive_it(app: Messaging, vault: MemoryVault) -> None:
    mid = send_sealed_by_service(app)
    processor = Processor(app, app.crypto, Nobody(), Nobody(), Nobody())
    real_put = vault.put

    def put_then_shred(entries: list[VaultEntry]) -> None:
        # The job has read the service key and wraps for recipients; meanwhile the
        # message is shredded, before the job writes what it wrapped.
        app.shred(ctx("dpo"), mid, "erasure")
        real_put(entries)

    vault.put = put_then_shred  # type: ignore[method-assign]
    processor.run(Job(MESSAGE_ENCRYPTION, mid, "seal", TENANT))
    assert not [k for k in vault.rows if k[0] == str(mid)]
    assert app.get_message(TENANT, mid).encryption is None


# ---- rotation --------------------------------------------------------------------------


def test_rotation_rewraps_service_keys_and_never_touches_content(vault: MemoryVault) -> None:
    old = make_app(vault, KEY_A)
    for user in ("alice", "bob"):
        old.register_key(ctx(user), public_pem(user))
    delivered = send_sealed_by_service(old)
    encrypt(old, delivered)
    waiting = send_sealed_by_service(old)  # its encryption job has not run yet
    ciphertexts = {m: old.get_message(TENANT, m).sealed for m in (delivered, waiting)}
    bob_keys = {m: vault.get(m, USER_KEY, "bob") for m in (delivered,)}

    rotating = MasterKeyring.from_spec(f"{KEY_B},{KEY_A}")
    rotation = KeyRotation(rotating, vault)
    assert rotation.counts() == {"ka": 2} and rotation.pending() == 2
    progress: list[int] = []
    report = rotation.run(batch_size=1, progress=progress.append)
    assert (report.rewrapped, report.complete, progress) == (2, True, [1, 1])
    assert rotation.counts() == {"kb": 2}
    assert rotation.run().rewrapped == 0  # nothing left to do

    # Old key retired (the processes restart with kb alone): the waiting message is
    # still sealed for its recipients...
    new = old
    new.crypto.keyring = MasterKeyring.from_spec(KEY_B)
    encrypt(new, waiting)
    assert (
        open_envelope("bob", envelope_dict(new.envelope(ctx("bob"), waiting)))
        .decode()
        .endswith(MARKER)
    )
    # ...and what was delivered before reads as it did; no content changed.
    assert vault.get(delivered, USER_KEY, "bob") == bob_keys[delivered]
    assert (
        open_envelope("bob", envelope_dict(new.envelope(ctx("bob"), delivered)))
        .decode()
        .endswith(MARKER)
    )
    assert {m: new.get_message(TENANT, m).sealed for m in ciphertexts} == ciphertexts
    old.close()


def test_a_service_wrap_copied_from_another_message_is_refused(
    app: Messaging, vault: MemoryVault
) -> None:
    theirs = send_sealed_by_service(app)
    mine = send_sealed_by_service(app, "nothing secret")
    # Someone who can write the database (not the master keys) puts the other message's
    # wrapped data key where the encryption job of theirs looks for the service's copy.
    copied = vault.get(theirs, SERVICE_KEY, f"{SERVICE_HOLDER}:{_dek(app, theirs)}")
    assert copied is not None
    holder = f"{SERVICE_HOLDER}:{_dek(app, mine)}"
    vault.put([VaultEntry(mine, holder, copied.key_id, copied.wrapped_key, SERVICE_KEY)])

    with pytest.raises(ForeignWrappedKey, match="not bound to it") as refused:
        encrypt(app, mine)
    assert describe(refused.value).startswith(
        f"ForeignWrappedKey: the service's wrapped data key of message {mine}"
    )
    assert sorted(k[2] for k in vault.rows if k[0] == str(mine)) == [holder]  # nothing wrapped
    assert app.get_message(TENANT, mine).encryption is None


def test_rotation_rewrites_unbound_wraps_under_the_active_key_bound(
    app: Messaging, vault: MemoryVault
) -> None:
    mid = send_sealed_by_service(app)
    holder = f"{SERVICE_HOLDER}:{_dek(app, mid)}"
    service = vault.get(mid, SERVICE_KEY, holder)
    assert service is not None
    data_key = app.crypto.keyring.unwrap(
        "ka", service.wrapped_key, message_key_context(mid, holder)
    )
    # The same data key as a wrap of the old format (bound to no message) would hold it.
    nonce = b"\x05" * 12
    legacy = nonce + AESGCM(b"A" * 32).encrypt(nonce, data_key, b"courier:dek:ka")
    vault.put([VaultEntry(mid, holder, "ka", legacy, SERVICE_KEY)])

    rotation = KeyRotation(app.crypto.keyring, vault)  # the active key does not change
    assert (rotation.pending(), rotation.outdated()) == (1, 1)
    report = rotation.run()
    assert report.rewrapped == 1 and report.complete
    assert (rotation.pending(), rotation.outdated()) == (0, 0)
    rewritten = vault.get(mid, SERVICE_KEY, holder)
    assert rewritten is not None and rewritten.key_id == "ka" and rewritten.wrapped_key != legacy
    with pytest.raises(KeyUnwrapError):  # now bound: it opens for this message alone
        app.crypto.keyring.unwrap(
            "ka", rewritten.wrapped_key, message_key_context(UUID(int=9), holder)
        )
    encrypt(app, mid)
    assert (
        open_envelope("bob", envelope_dict(app.envelope(ctx("bob"), mid))).decode().endswith(MARKER)
    )


def test_rotation_reports_what_it_cannot_unwrap_and_spares_shredded_keys(
    vault: MemoryVault,
) -> None:
    app = make_app(vault, KEY_A)
    for user in ("alice", "bob"):
        app.register_key(ctx(user), public_pem(user))
    mid = send_sealed_by_service(app)
    gone = send_sealed_by_service(app)
    vault.put([VaultEntry(UUID(int=7), f"{SERVICE_HOLDER}:x", "retired", b"\0" * 60, SERVICE_KEY)])

    ring = MasterKeyring.from_spec(f"{KEY_B},{KEY_A}")
    real_rewrap = vault.rewrap

    def shred_first(entry: VaultEntry, key_id: str, wrapped: bytes) -> bool:
        if entry.message_id == gone:
            app.shred(ctx("dpo"), gone, "erasure")
        return real_rewrap(entry, key_id, wrapped)

    vault.rewrap = shred_first  # type: ignore[method-assign]
    report = KeyRotation(ring, vault).run()
    assert report.rewrapped == 1 and report.changed_meanwhile == 1
    assert dict(report.not_held) == {"retired": 1} and not report.complete
    assert vault.get(gone, SERVICE_KEY, f"{SERVICE_HOLDER}:{_dek(app, gone)}") is None
    service = vault.get(mid, SERVICE_KEY, f"{SERVICE_HOLDER}:{_dek(app, mid)}")
    assert service is not None and service.key_id == "kb"
    app.close()


def _dek(app: Messaging, mid: UUID) -> str:
    sealed = app.get_message(TENANT, mid).sealed
    assert sealed is not None
    return str(sealed["dekId"])


def test_a_data_key_under_a_retired_master_key_fails_with_a_clear_error(
    app: Messaging, vault: MemoryVault
) -> None:
    mid = send_sealed_by_service(app)
    app.crypto.keyring = MasterKeyring.from_spec(KEY_B)  # ka retired without a rotation
    with pytest.raises(UnknownMasterKey) as error:
        encrypt(app, mid)
    assert "'ka'" in str(error.value) and "courier keys rotate" in str(error.value)
    assert describe(error.value).startswith("UnknownMasterKey: ")  # stored as it is shown
