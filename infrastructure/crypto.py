"""Content encryption (AES-256-GCM), key exchange (RSA-OAEP-256) and the service keyring."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from application.ports import (
    InvalidPublicKey,
    KeyUnwrapError,
    PublicKeyInfo,
    SealedContent,
    WrapFormat,
)
from domain.ids import random_bytes
from infrastructure.settings import SettingsError

MIN_RSA_BITS = 4096
MAX_PEM_CHARS = 20_000
IV_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
WRAP_V2 = b"\x02"  # a wrap bound to its context, made with the master key itself (read only)
WRAP_V3 = b"\x03"  # a wrap bound to its context, made with the master key's wrapping subkey
LEGACY_WRAP_BYTES = IV_BYTES + KEY_BYTES + TAG_BYTES  # an unbound wrap of a 32-byte key
# HKDF-SHA256 ``info`` of the subkeys derived from each master key, one per purpose: a
# master key is never used itself, only as the input of these derivations.
WRAP_PURPOSE = b"courier:wrap:v3"
DIGEST_PURPOSE = b"courier:digest"

_PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
_PEM_END = "-----END PUBLIC KEY-----"
_NOT_PEM = "publicKeyPem is not a PEM-encoded public key"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SPEC = "ENCRYPTION_MASTER_KEYS"


def _oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


@functools.lru_cache(maxsize=4096)
def _wrapping_key(pem: str) -> rsa.RSAPublicKey:
    """A parsed public key, kept: a group's encryption wraps for the same keys again and
    again, and parsing a 4096-bit PEM costs more than the wrap itself."""
    return _load_rsa_public_key(pem)


def _load_rsa_public_key(pem: str) -> rsa.RSAPublicKey:
    """The RSA key of a SubjectPublicKeyInfo PEM, or InvalidPublicKey saying what is wrong."""
    if not isinstance(pem, str) or len(pem) > MAX_PEM_CHARS:
        raise InvalidPublicKey(_NOT_PEM)
    text = pem.strip()
    if "PRIVATE KEY-----" in text:
        raise InvalidPublicKey("publicKeyPem holds a private key: send only the public key")
    if "-----BEGIN RSA PUBLIC KEY-----" in text:
        raise InvalidPublicKey(
            f"publicKeyPem must be a SubjectPublicKeyInfo PEM ({_PEM_BEGIN}), not PKCS#1"
        )
    if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)) or text.count("-----") != 4:
        raise InvalidPublicKey(_NOT_PEM)
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnsupportedAlgorithm):  # UnicodeError is a ValueError
        raise InvalidPublicKey(_NOT_PEM) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidPublicKey(
            f"publicKeyPem must be an RSA public key of at least {MIN_RSA_BITS} bits; "
            f"got a key of type {type(key).__name__.removesuffix('PublicKey')}"
        )
    if key.key_size < MIN_RSA_BITS:
        raise InvalidPublicKey(
            f"publicKeyPem must be an RSA public key of at least {MIN_RSA_BITS} bits; "
            f"got {key.key_size}"
        )
    return key


class AesGcmCipher:
    """Implements ``application.ports.ContentCipher``."""

    def seal(self, plaintext: bytes, aad: bytes) -> SealedContent:
        """Seal under a fresh data key and IV; the tag is returned apart from the ciphertext."""
        # From the process's pool of CSPRNG bytes: no system call (and GIL hand-off) each.
        data_key = random_bytes(KEY_BYTES)
        iv = random_bytes(IV_BYTES)
        sealed = AESGCM(data_key).encrypt(iv, plaintext, aad)
        return SealedContent(
            ciphertext=sealed[:-TAG_BYTES],
            iv=iv,
            auth_tag=sealed[-TAG_BYTES:],
            aad=aad,
            data_key=data_key,
        )

    def open(self, data_key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        """The plaintext; ``cryptography.exceptions.InvalidTag`` if anything was altered."""
        if len(tag) != TAG_BYTES:
            # Otherwise bytes of the ciphertext would silently be read as part of the tag.
            raise InvalidTag
        return AESGCM(data_key).decrypt(iv, ciphertext + tag, aad)

    def inspect_public_key(self, pem: str) -> PublicKeyInfo:
        """Accept only an RSA SubjectPublicKeyInfo PEM of at least 4096 bits.

        Raises ``InvalidPublicKey`` (and nothing else) for any other input.
        """
        key = _load_rsa_public_key(pem)
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fingerprint = hashlib.sha256(der).hexdigest()
        return PublicKeyInfo(
            key_id="k_" + fingerprint[:24], fingerprint=fingerprint, bits=key.key_size
        )

    def wrap_for(self, public_key_pem: str, data_key: bytes) -> bytes:
        """RSA-OAEP with SHA-256 and MGF1-SHA-256, no label: what WebCrypto's RSA-OAEP unwraps."""
        return _wrapping_key(public_key_pem).encrypt(data_key, _oaep())


class UnknownMasterKey(KeyError):
    """A data key was wrapped under a master key this keyring does not hold."""

    safe_to_show = True  # a key id is not a secret, and says what to fix

    def __str__(self) -> str:
        return (
            f"the data key is wrapped under master key {self.args[0]!r}, which "
            f"{_SPEC} does not hold (was it retired before `courier keys rotate`?)"
        )


def subkey(master_key: bytes, purpose: bytes) -> bytes:
    """The key of one purpose derived from a master key: HKDF-SHA256, no salt (the master
    key is uniformly random), ``info`` the purpose's label."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(
        master_key
    )


class MasterKeyring:
    """Implements ``application.ports.Keyring`` from ``ENCRYPTION_MASTER_KEYS``.

    The first key wraps new data keys; every key listed still unwraps. A master key is
    never used itself: each one yields a subkey per purpose (``subkey``), the wrapping
    key (``WRAP_PURPOSE``) and, from the oldest, the digest key (``DIGEST_PURPOSE``).
    The master keys are kept only to read wraps made before subkeys (format v2, and the
    unbound format), until ``courier keys rotate`` rewrites them.
    """

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise SettingsError(f"{_SPEC} holds no key: run `courier keys generate` for one")
        self._keys = dict(keys)
        self._wrapping = {key_id: subkey(key, WRAP_PURPOSE) for key_id, key in keys}
        self._active = keys[0][0]
        # Digests identify repeated sends (clientMessageId) and are stored in events,
        # so they must not change when rotation prepends a new key: derive them from
        # the last, oldest, key of the ring, which stays until it is retired.
        self._digest_key = subkey(keys[-1][1], DIGEST_PURPOSE)

    @classmethod
    def from_spec(cls, spec: str) -> MasterKeyring:
        """Parse ``"kid1:BASE64,kid2:BASE64"`` (32-byte keys, the first one active).

        Raises ``SettingsError`` naming what is wrong with a malformed spec.
        """
        keys: list[tuple[str, bytes]] = []
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            key_id, colon, encoded = (text.strip() for text in entry.partition(":"))
            if not colon or not _KEY_ID.fullmatch(key_id):
                raise SettingsError(
                    f"{_SPEC} entries look like KEY_ID:BASE64 with a key id of letters, "
                    "digits, '.', '_' or '-' (comma-separated; `courier keys generate` prints one)"
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise SettingsError(f"{_SPEC}: key {key_id} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise SettingsError(
                    f"{_SPEC}: key {key_id} must be {KEY_BYTES} bytes, got {len(key)}"
                )
            if any(existing == key_id for existing, _ in keys):
                raise SettingsError(f"{_SPEC}: key id {key_id} appears more than once")
            keys.append((key_id, key))
        return cls(keys)

    @property
    def active_key_id(self) -> str:
        return self._active

    def holds(self, key_id: str) -> bool:
        return key_id in self._keys

    @property
    def wrap_format(self) -> WrapFormat:
        """What ``wrap`` makes now (v3), and the size of the oldest, unbound format."""
        return WrapFormat(WRAP_V3, LEGACY_WRAP_BYTES)

    def wrap(self, data_key: bytes, context: str) -> tuple[str, bytes]:
        """Wrap under the active key's wrapping subkey, bound to ``context`` (what the key
        protects): ``(key_id, version byte + 12-byte nonce + ciphertext + tag)``."""
        nonce = random_bytes(IV_BYTES)
        aad = _bound_aad(WRAP_V3, self._active, context)
        wrapped = AESGCM(self._wrapping[self._active]).encrypt(nonce, data_key, aad)
        return self._active, WRAP_V3 + nonce + wrapped

    def unwrap(self, key_id: str, wrapped: bytes, context: str) -> bytes:
        """The data key; ``UnknownMasterKey``, or ``KeyUnwrapError`` if it cannot be
        recovered or was wrapped for another context (a wrap copied from another row).

        Wraps of older formats still unwrap until ``courier keys rotate`` rewrites them:
        the unbound one (exactly ``LEGACY_WRAP_BYTES``) and v2 (bound, but made with the
        master key itself rather than its wrapping subkey)."""
        if key_id not in self._keys:
            raise UnknownMasterKey(key_id)
        try:
            return self._unwrap(key_id, wrapped, context)
        except InvalidTag:
            raise KeyUnwrapError(key_id) from None

    def _unwrap(self, key_id: str, wrapped: bytes, context: str) -> bytes:
        if len(wrapped) == LEGACY_WRAP_BYTES:
            key = self._keys[key_id]
            return AESGCM(key).decrypt(wrapped[:IV_BYTES], wrapped[IV_BYTES:], _aad(key_id))
        version, body = wrapped[:1], wrapped[1:]
        if len(body) < IV_BYTES + TAG_BYTES or version not in (WRAP_V2, WRAP_V3):
            raise InvalidTag
        key = self._wrapping[key_id] if version == WRAP_V3 else self._keys[key_id]
        aad = _bound_aad(version, key_id, context)
        return AESGCM(key).decrypt(body[:IV_BYTES], body[IV_BYTES:], aad)

    def digest(self, data: bytes) -> str:
        """Hex HMAC-SHA256 of ``data``, stable across key rotation."""
        return hmac.new(self._digest_key, data, hashlib.sha256).hexdigest()


def _aad(key_id: str) -> bytes:
    """The AAD of legacy (unbound) wraps: only the master key id."""
    return b"courier:dek:" + key_id.encode()


def _bound_aad(version: bytes, key_id: str, context: str) -> bytes:
    """The AAD of a bound wrap: format version, master key id and the encryption context
    (purpose and the id of what the key protects, ``application.ports.*_context``)."""
    label = b"courier:wrap:v%d|" % version[0]
    return label + key_id.encode() + b"|" + context.encode("utf-8")


def generate_master_key_spec(key_id: str | None = None) -> str:
    """A new ``KEY_ID:BASE64`` entry for ENCRYPTION_MASTER_KEYS (prepend it to rotate)."""
    if key_id is None:
        key_id = f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"
    elif not _KEY_ID.fullmatch(key_id):
        raise SettingsError(f"key id {key_id!r} must be letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode('ascii')}"


def generate_event_store_key() -> str:
    """A new EVENT_STORE_CIPHER_KEY: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
