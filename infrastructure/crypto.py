"""Content encryption (AES-256-GCM), key exchange (RSA-OAEP-256) and the service keyring."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from application.ports import InvalidPublicKey, PublicKeyInfo, SealedContent
from infrastructure.settings import SettingsError

MIN_RSA_BITS = 4096
MAX_PEM_CHARS = 20_000
TAG_BYTES = 16
IV_BYTES = 12
KEY_BYTES = 32


def _oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


class AesGcmCipher:
    """Implements ``application.ports.Cipher``."""

    def seal(self, plaintext: bytes, aad: bytes) -> SealedContent:
        """Seal with a fresh data key and IV; the tag is returned apart from the ciphertext."""
        data_key = AESGCM.generate_key(bit_length=256)
        iv = os.urandom(IV_BYTES)
        sealed = AESGCM(data_key).encrypt(iv, plaintext, aad)
        return SealedContent(sealed[:-TAG_BYTES], iv, sealed[-TAG_BYTES:], aad, data_key)

    def open(self, data_key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        return AESGCM(data_key).decrypt(iv, ciphertext + tag, aad)

    def inspect_public_key(self, pem: str) -> PublicKeyInfo:
        """Accept only an RSA SubjectPublicKeyInfo PEM of at least 4096 bits."""
        if not isinstance(pem, str) or len(pem) > MAX_PEM_CHARS or "PUBLIC KEY-----" not in pem:
            raise InvalidPublicKey("publicKeyPem is not a PEM-encoded public key")
        try:
            key = serialization.load_pem_public_key(pem.encode("utf-8"))
        except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeError):
            raise InvalidPublicKey("publicKeyPem is not a PEM-encoded public key") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidPublicKey("publicKeyPem must be an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise InvalidPublicKey(
                f"publicKeyPem must be an RSA public key of at least {MIN_RSA_BITS} bits; "
                f"got {key.key_size}"
            )
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fingerprint = hashlib.sha256(der).hexdigest()
        return PublicKeyInfo(
            key_id="k_" + fingerprint[:24], fingerprint=fingerprint, bits=key.key_size
        )

    def wrap_for(self, public_key_pem: str, data_key: bytes) -> bytes:
        """RSA-OAEP with SHA-256 and MGF1-SHA-256: what WebCrypto's RSA-OAEP unwraps."""
        key = serialization.load_pem_public_key(public_key_pem.encode("utf-8"))
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidPublicKey("not an RSA public key")
        return key.encrypt(data_key, _oaep())


class UnknownMasterKey(KeyError):
    """A data key was wrapped under a master key this keyring does not hold."""


class MasterKeyring:
    """Implements ``application.ports.Keyring`` from ``ENCRYPTION_MASTER_KEYS``."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        self._keys = dict(keys)
        self._order = [key_id for key_id, _ in keys]
        # Digests (for idempotent sends) must not change when a key is prepended
        # by rotation, so they derive from the oldest key of the ring.
        self._digest_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"courier:digest"
        ).derive(keys[-1][1])

    @classmethod
    def from_spec(cls, spec: str) -> MasterKeyring:
        """Parse ``"kid1:BASE64,kid2:BASE64"``: 32-byte keys, the first one active."""
        keys: list[tuple[str, bytes]] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key_id, sep, encoded = part.partition(":")
            if not sep or not key_id:
                raise SettingsError("ENCRYPTION_MASTER_KEYS entries look like KEY_ID:BASE64")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise SettingsError(f"ENCRYPTION_MASTER_KEYS: key {key_id} is not base64") from None
            if len(key) != KEY_BYTES:
                raise SettingsError(
                    f"ENCRYPTION_MASTER_KEYS: key {key_id} must be {KEY_BYTES} bytes, "
                    f"got {len(key)}"
                )
            if any(existing == key_id for existing, _ in keys):
                raise SettingsError(f"ENCRYPTION_MASTER_KEYS: key id {key_id} appears twice")
            keys.append((key_id, key))
        if not keys:
            raise SettingsError(
                "ENCRYPTION_MASTER_KEYS is empty: run `courier keys generate` for a value"
            )
        return cls(keys)

    @property
    def active_key_id(self) -> str:
        return self._order[0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._order)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        key_id = self.active_key_id
        nonce = os.urandom(IV_BYTES)
        wrapped = AESGCM(self._keys[key_id]).encrypt(
            nonce, data_key, b"courier:dek:" + key_id.encode()
        )
        return key_id, nonce + wrapped

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownMasterKey(key_id)
        nonce, body = wrapped[:IV_BYTES], wrapped[IV_BYTES:]
        return AESGCM(key).decrypt(nonce, body, b"courier:dek:" + key_id.encode())

    def digest(self, data: bytes) -> str:
        return hmac.new(self._digest_key, data, hashlib.sha256).hexdigest()


def generate_master_key_spec(key_id: str | None = None) -> str:
    """A new ``KEY_ID:BASE64`` entry for ENCRYPTION_MASTER_KEYS."""
    key_id = key_id or f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
