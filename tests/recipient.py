"""A Python recipient: RSA-4096 key pairs and an envelope opener written against
docs/API.md §4/§9 with ``cryptography`` alone, independently of Courier's own code.

RSA-4096 keys take up to seconds to make, so each name's key is made once per
test session and shared by every tier.
"""

from __future__ import annotations

import base64
import os
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


@cache
def private_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


def public_pem(name: str) -> str:
    return (
        private_key(name)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def private_pkcs8_pem(name: str) -> str:
    return (
        private_key(name)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def open_envelope(name: str, envelope: dict[str, Any], **changes: bytes) -> bytes:
    """Unwrap the data key with ``name``'s private key and decrypt the content.

    ``changes`` replace ``aad``, ``iv``, ``authTag`` or ``ciphertext`` (raw bytes) to
    show that any alteration fails with ``cryptography.exceptions.InvalidTag``.
    """
    assert envelope["algorithm"] == "AES-256-GCM"
    assert envelope["keyAlgorithm"] == "RSA-OAEP-256"
    data_key = private_key(name).decrypt(unb64(envelope["wrappedKey"]), OAEP)
    parts = {k: unb64(envelope[k]) for k in ("ciphertext", "iv", "authTag")}
    parts["aad"] = unb64(envelope["aad"]) if envelope.get("aad") else b""
    parts.update(changes)
    sealed = parts["ciphertext"] + parts["authTag"]
    return AESGCM(data_key).decrypt(parts["iv"], sealed, parts["aad"] or None)


def seal(plaintext: bytes, aad: bytes, holders: dict[str, str]) -> dict[str, Any]:
    """End-to-end sealing as a client does it: ``holders`` maps user id to public PEM."""
    data_key = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    sealed = AESGCM(data_key).encrypt(iv, plaintext, aad)
    wrapped = {}
    for user, pem in holders.items():
        key = serialization.load_pem_public_key(pem.encode("ascii"))
        assert isinstance(key, rsa.RSAPublicKey)
        wrapped[user] = b64(key.encrypt(data_key, OAEP))
    return {
        "ciphertext": b64(sealed[:-16]),
        "iv": b64(iv),
        "authTag": b64(sealed[-16:]),
        "aad": b64(aad),
        "wrappedKeys": wrapped,
    }
