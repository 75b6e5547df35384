"""Signed checkpoints of the audit chain: the signing key, signing, checking a signature.

A checkpoint is the chain's hash at a position, signed with Ed25519
(``AUDIT_SIGNING_KEY``). Kept outside the database (a WORM bucket, a ticket, a
printout), it shows that the log up to that position is the one that was signed:
somebody who rewrote events *and* recomputed the chain still cannot match it.
``CheckpointSchedule`` signs the head at an interval.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from domain.timestamps import iso
from infrastructure.secretfiles import secret_file
from infrastructure.settings import Settings, SettingsError

log = logging.getLogger("courier.audit")

FORMAT = "courier-audit-checkpoint/v1"
SIGNING_KEY = "AUDIT_SIGNING_KEY"


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
        "signedAt": iso(at),
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


class Keeper(Protocol):
    """What the schedule asks of the chain's keeper (``infrastructure.chain.ChainKeeper``)."""

    def checkpoint(self) -> dict[str, Any]: ...


class CheckpointSchedule(threading.Thread):
    """Signs the chain's head every ``every`` seconds (``AUDIT_CHECKPOINT_SECONDS``).

    Runs in the projections process (or the embedded one). A head already signed is
    not signed again; two processes signing the same head keep one checkpoint.
    """

    def __init__(self, keeper: Keeper, every: float) -> None:
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
