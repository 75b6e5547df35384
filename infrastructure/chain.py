"""Checking the audit chain against the event store, and signed checkpoints of it.

A checkpoint is the chain's hash at a position, signed with Ed25519
(``AUDIT_SIGNING_KEY``). Kept outside the database (a WORM bucket, a ticket, a
printout), it shows that the log up to that position is the one that was signed:
somebody who rewrote events *and* recomputed the chain still cannot match it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Engine, select

from infrastructure.settings import Settings, SettingsError, secret_file
from projections.chain import StoredNotification, Verdict, head, verify
from projections.tables import audit_chain, audit_checkpoints

FORMAT = "courier-audit-checkpoint/v1"
SIGNING_KEY = "AUDIT_SIGNING_KEY"
BATCH = 5000


def generate_signing_key() -> str:
    """A new ``AUDIT_SIGNING_KEY`` value: base64 of a raw 32-byte Ed25519 private key."""
    return base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key given as base64 of its 32 raw bytes (``courier audit public-key``)."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise SettingsError("the public key must be base64 of 32 raw Ed25519 bytes") from None


def signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The configured key; on the embedded default one is made under ./var/ on first use."""
    text = settings.extra.get(SIGNING_KEY, "")
    if not text and settings.embedded:
        path = settings.data_dir / "audit-signing-key"
        text = _secret_file(path)
    if not text:
        return None
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise SettingsError(
            f"{SIGNING_KEY} must be base64 of a raw 32-byte Ed25519 key "
            "(`courier audit keygen` prints one)"
        ) from None


def _secret_file(path: Path) -> str:
    return secret_file(path, generate_signing_key)


def _payload(checkpoint: dict[str, Any]) -> bytes:
    fields = {k: checkpoint[k] for k in ("format", "position", "hash", "signedAt", "keyId")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign(key: Ed25519PrivateKey, position: int, digest: bytes, at: datetime) -> dict[str, Any]:
    public = key.public_key()
    checkpoint: dict[str, Any] = {
        "format": FORMAT,
        "position": position,
        "hash": digest.hex(),
        "signedAt": at.isoformat().replace("+00:00", "Z"),
        "keyId": key_id(public),
        "publicKey": base64.b64encode(_raw_public(public)).decode(),
    }
    checkpoint["signature"] = base64.b64encode(key.sign(_payload(checkpoint))).decode()
    return checkpoint


class BadCheckpoint(Exception):
    """A checkpoint that is malformed or not signed by the trusted key."""


def check_signature(checkpoint: dict[str, Any], trusted: Ed25519PublicKey) -> tuple[int, bytes]:
    """(position, hash) of a checkpoint signed by ``trusted``; else ``BadCheckpoint``."""
    try:
        if checkpoint.get("format") != FORMAT or checkpoint.get("keyId") != key_id(trusted):
            raise BadCheckpoint("not a checkpoint of this service's signing key")
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        trusted.verify(signature, _payload(checkpoint))
        return int(checkpoint["position"]), bytes.fromhex(checkpoint["hash"])
    except InvalidSignature:
        raise BadCheckpoint("the signature does not match") from None
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise BadCheckpoint(f"malformed checkpoint ({type(error).__name__})") from None


@dataclass
class ChainKeeper:
    """Verifies the chain against the stored events; signs and keeps checkpoints."""

    recorder: Any  # eventsourcing ApplicationRecorder
    engine: Engine
    key: Ed25519PrivateKey | None = None

    def chained_through(self) -> int:
        with self.engine.connect() as conn:
            return head(conn)[0]

    def verify(
        self,
        anchors: dict[int, bytes] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Verdict:
        """Recompute the chain from the stored events to its head; name the first bad position."""
        stop = self.chained_through()
        log: Iterable[StoredNotification] = self._notifications(stop)
        if progress is not None:
            log = _reporting(log, progress)
        return verify(log, self._links(stop), stop, anchors)

    def _notifications(self, stop: int) -> Iterator[StoredNotification]:
        after = 0
        while after < stop:
            batch = self.recorder.select_notifications(
                start=after, limit=BATCH, stop=stop, inclusive_of_start=False
            )
            if not batch:
                return
            yield from batch
            after = batch[-1].id

    def _links(self, stop: int) -> Iterator[tuple[int, bytes]]:
        after = 0
        while True:
            query = (
                select(audit_chain.c.position, audit_chain.c.hash)
                .where(audit_chain.c.position > after, audit_chain.c.position <= stop)
                .order_by(audit_chain.c.position)
                .limit(BATCH)
            )
            with self.engine.connect() as conn:
                rows = [(int(p), bytes(h)) for p, h in conn.execute(query)]
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def checkpoint(self) -> dict[str, Any]:
        """Sign the chain's head, keep the checkpoint, and return it for export."""
        if self.key is None:
            raise SettingsError(
                f"{SIGNING_KEY} is not set: run `courier audit keygen` and configure it"
            )
        with self.engine.begin() as conn:
            position, digest = head(conn)
            if position == 0:
                raise SettingsError("the chain is empty: there is nothing to sign yet")
            kept = conn.execute(
                select(audit_checkpoints.c.body).where(audit_checkpoints.c.position == position)
            ).scalar()
            if kept is not None:  # the chain has not moved since: the same checkpoint
                found: dict[str, Any] = json.loads(kept)
                return found
            at = datetime.now(UTC)
            signed = sign(self.key, position, digest, at)
            conn.execute(
                audit_checkpoints.insert().values(
                    position=position,
                    signed_at=at,
                    key_id=signed["keyId"],
                    body=json.dumps(signed, sort_keys=True),
                )
            )
        return signed

    def stored_checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints kept in the database, as they were exported."""
        query = select(audit_checkpoints.c.body).order_by(audit_checkpoints.c.position)
        with self.engine.connect() as conn:
            return [json.loads(body) for body in conn.execute(query).scalars()]


def _reporting(
    log: Iterable[StoredNotification], progress: Callable[[int], None]
) -> Iterator[StoredNotification]:
    for count, notification in enumerate(log, start=1):
        if count % 1000 == 0:
            progress(notification.id)
        yield notification
