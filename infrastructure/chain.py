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
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, Engine, select

from infrastructure.secretfiles import secret_file
from infrastructure.settings import Settings, SettingsError
from projections import audit_check
from projections.audit import NAME as AUDIT
from projections.chain import GENESIS, StoredNotification, Verdict, head, verify
from projections.chain import NAME as CHAIN
from projections.runner import read_position
from projections.tables import audit_chain, audit_checkpoints

log = logging.getLogger("courier.audit")

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
    secret = settings.audit_signing_key
    text = secret.get_secret_value() if secret else ""
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


class ChainBroken(Exception):
    """The chain no longer extends the last signed checkpoint: nothing is signed."""


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


@dataclass(frozen=True)
class Verified:
    """How far a walk found the log, the chain and the audit tables in agreement."""

    position: int = 0  # chained position verified, and its hash
    digest: bytes = GENESIS
    audited: int = 0  # audit tables compared up to here
    checked: int = 0
    full_at: float = 0.0  # time.monotonic() of the last walk from the start


@dataclass(frozen=True)
class Anchor:
    """A signed checkpoint whose signature checked out."""

    position: int
    digest: bytes
    signed_at: str


@dataclass
class ChainKeeper:
    """Verifies the chain and the audit tables against the stored events; signs checkpoints.

    ``check`` (GET /api/audit/verify) walks everything once, then only what was
    chained since, until ``full_every`` seconds have passed; ``verify`` (the command
    line) always walks everything.
    """

    recorder: Any  # eventsourcing ApplicationRecorder
    engine: Engine
    key: Ed25519PrivateKey | None = None
    mapper: Any = None  # eventsourcing Mapper: decodes events for the audit tables' check
    trusted: Ed25519PublicKey | None = None  # AUDIT_PUBLIC_KEY (else the signing key's)
    full_every: float = 900.0
    _verified: Verified | None = field(default=None, init=False, repr=False)
    _anchor: Anchor | None = field(default=None, init=False, repr=False)
    _remembered: tuple[int, bytes] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def chained_through(self) -> int:
        with self.engine.connect() as conn:
            return head(conn)[0]

    def trusted_key(self) -> Ed25519PublicKey | None:
        if self.trusted is not None:
            return self.trusted
        return self.key.public_key() if self.key is not None else None

    def check(self) -> Verdict:
        """Verify against the latest signed checkpoint, walking only what is new when fresh."""
        with self._lock:
            anchor, problem = self._latest_anchor()
            if problem is not None:
                self._verified = None
                return problem
            anchors = {anchor.position: anchor.digest} if anchor else {}
            since = self._verified
            if since is not None and time.monotonic() - since.full_at >= self.full_every:
                since = None
            verdict, reached = self._walk(anchors, None, since, self._remembered)
            self._verified = reached
            if reached is not None and reached.position:
                # Kept after a failure too: a cut tail stays reported on every later call.
                self._remembered = (reached.position, reached.digest)
            if anchor is not None:
                shown = {"position": anchor.position, "signedAt": anchor.signed_at}
                verdict = replace(verdict, checkpoint=shown)
            return verdict

    def verify(
        self,
        anchors: dict[int, bytes] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Verdict:
        """Recompute the chain from the stored events to its head; name the first bad position."""
        return self._walk(anchors or {}, progress, None, None)[0]

    def _walk(
        self,
        anchors: dict[int, bytes],
        progress: Callable[[int], None] | None,
        since: Verified | None,
        remembered: tuple[int, bytes] | None,
    ) -> tuple[Verdict, Verified | None]:
        """Walk from ``since`` (else from the start); ``remembered`` is the last position
        this process verified and its hash, which must still be there."""
        begin = since or Verified(full_at=time.monotonic())
        with self.engine.connect() as conn:
            # Read in this order, each committed before the next is read: a position the
            # chain's projection reached is chained, an audit entry's event is stored.
            reached = read_position(conn, CHAIN)
            audit_reached = read_position(conn, AUDIT)
            stop, _ = head(conn)
            last_entry = audit_check.last_entry(conn)
        log_head = int(self.recorder.max_notification_id() or 0)

        audited = min(stop, audit_reached)

        def verdict(ok: bool, checked: int, bad: int | None, reason: str | None) -> Verdict:
            return Verdict(
                ok,
                checked,
                bad,
                stop,
                reason,
                log_head=log_head,
                audited_through=audited if ok else begin.audited,
                incremental=since is not None,
            )

        cut = self._cut(stop, reached, remembered, anchors, last_entry, log_head)
        if cut is not None:
            return verdict(False, begin.checked, stop + 1, cut), None
        if remembered is not None and self._link(remembered[0]) != remembered[1]:
            reason = "the chain's link at a position verified before was changed or removed"
            return verdict(False, begin.checked, remembered[0], reason), None
        early = self._anchored_before(begin.position, anchors)
        if early is not None:
            return verdict(
                False, begin.checked, early, "the chain differs from a signed checkpoint"
            ), None
        later = {p: d for p, d in anchors.items() if p > begin.position}
        log: Iterable[StoredNotification] = self._notifications(begin.position, stop)
        if progress is not None:
            log = _reporting(log, progress)
        chained = verify(
            log, self._links(begin.position, stop), stop, later, (begin.position, begin.digest)
        )
        checked = begin.checked + chained.checked
        if not chained.ok:
            return verdict(False, checked, chained.first_bad_position, chained.reason), None
        mismatch = self._compare_audit(begin.audited, audited)
        if mismatch is not None:
            return verdict(False, checked, mismatch[0], mismatch[1]), None
        digest = (self._link(stop) if stop > begin.position else None) or begin.digest
        kept = Verified(stop, digest, max(audited, begin.audited), checked, begin.full_at)
        return verdict(True, checked, None, None), kept

    def _cut(
        self,
        stop: int,
        reached: int,
        remembered: tuple[int, bytes] | None,
        anchors: dict[int, bytes],
        last_entry: int,
        log_head: int,
    ) -> str | None:
        """Why events must have been cut from the end of the log and the chain, if so."""
        if reached > stop:
            return f"the chain's projection had reached position {reached}: links were removed"
        beyond = [p for p in anchors if p > stop]
        if beyond:
            return f"a signed checkpoint at position {min(beyond)} lies beyond the chain"
        if remembered is not None and remembered[0] > stop:
            return f"position {remembered[0]} was verified before and is gone from the chain"
        if last_entry > log_head:
            return f"the audit entry at position {last_entry} has no event in the log"
        return None

    def _anchored_before(self, position: int, anchors: dict[int, bytes]) -> int | None:
        """The first anchor at or before ``position`` that the stored chain does not match."""
        for at in sorted(p for p in anchors if p <= position):
            if self._link(at) != anchors[at]:
                return at
        return None

    def _link(self, position: int) -> bytes | None:
        query = select(audit_chain.c.hash).where(audit_chain.c.position == position)
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return bytes(found) if found is not None else None

    def _compare_audit(self, after: int, stop: int) -> audit_check.Mismatch | None:
        """Compare the audit tables with the (just verified) log in (after, stop]."""
        if self.mapper is None or stop <= after:
            return None
        check = audit_check.AuditCheck()
        done = after
        batch: list[tuple[int, Any]] = []
        for notification in self._notifications(after, stop):
            try:
                batch.append((notification.id, self.mapper.to_domain_event(notification)))
            except Exception:
                return notification.id, "the event cannot be decoded"
            if len(batch) == BATCH:
                found = self._compare_page(check, done, batch[-1][0], batch)
                if found is not None:
                    return found
                done, batch = batch[-1][0], []
        return self._compare_page(check, done, stop, batch)

    def _compare_page(
        self,
        check: audit_check.AuditCheck,
        after: int,
        stop: int,
        batch: list[tuple[int, Any]],
    ) -> audit_check.Mismatch | None:
        with self.engine.connect() as conn:
            return check.compare(conn, after, stop, batch)

    def _latest_anchor(self) -> tuple[Anchor | None, Verdict | None]:
        """The latest stored checkpoint of the trusted key, or the latest seen before.

        A stored checkpoint that claims the trusted key but whose signature fails is
        itself a sign of tampering (the second value).
        """
        trusted = self.trusted_key()
        if trusted is None:
            return None, None
        wanted = key_id(trusted)
        query = (
            select(audit_checkpoints.c.body)
            .where(audit_checkpoints.c.key_id == wanted)
            .order_by(audit_checkpoints.c.position.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            body = conn.execute(query).scalar()
        if body is not None:
            stored = json.loads(body)
            try:
                position, digest = check_signature(stored, trusted)
            except BadCheckpoint as error:
                where = stored.get("position") if isinstance(stored.get("position"), int) else None
                return None, Verdict(
                    False, 0, where, self.chained_through(), f"a stored checkpoint: {error}"
                )
            if self._anchor is None or position > self._anchor.position:
                self._anchor = Anchor(position, digest, str(stored.get("signedAt")))
        return self._anchor, None

    def _notifications(self, after: int, stop: int) -> Iterator[StoredNotification]:
        while after < stop:
            batch = self.recorder.select_notifications(
                start=after, limit=BATCH, stop=stop, inclusive_of_start=False
            )
            if not batch:
                return
            yield from batch
            after = batch[-1].id

    def _links(self, after: int, stop: int) -> Iterator[tuple[int, bytes]]:
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
            self._extends_last(conn, position)
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

    def _extends_last(self, conn: Connection, position: int) -> None:
        """Refuse to sign a chain that no longer holds the last signed checkpoint's hash."""
        assert self.key is not None
        query = (
            select(audit_checkpoints.c.position, audit_checkpoints.c.body)
            .where(audit_checkpoints.c.key_id == key_id(self.key.public_key()))
            .order_by(audit_checkpoints.c.position.desc())
            .limit(1)
        )
        last = conn.execute(query).first()
        if last is None:
            return
        signed = bytes.fromhex(json.loads(last.body)["hash"])
        link = conn.execute(
            select(audit_chain.c.hash).where(audit_chain.c.position == last.position)
        ).scalar()
        if int(last.position) > position or link is None or bytes(link) != signed:
            raise ChainBroken(
                f"the chain no longer holds the checkpoint signed at position {last.position}: "
                "not signing it (run `courier audit verify`)"
            )

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


class CheckpointSchedule(threading.Thread):
    """Signs the chain's head every ``every`` seconds (``AUDIT_CHECKPOINT_SECONDS``).

    Runs in the projections process (or the embedded one). A head already signed is
    not signed again; two processes signing the same head keep one checkpoint.
    """

    def __init__(self, keeper: ChainKeeper, every: float) -> None:
        super().__init__(name="audit-checkpoints", daemon=True)
        self.keeper = keeper
        self.every = every
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.every):
            self.sign_once()

    def sign_once(self) -> dict[str, Any] | None:
        try:
            return self.keeper.checkpoint()
        except SettingsError:  # nothing chained yet
            return None
        except ChainBroken:
            log.error("audit chain: not signing", exc_info=True)
            return None
        except Exception:  # the database is away, or another process signed this head
            log.warning("could not sign an audit checkpoint; trying again", exc_info=True)
            return None

    def stop(self) -> None:
        self._stopped.set()
