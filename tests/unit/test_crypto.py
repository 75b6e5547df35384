"""AES-GCM sealing, RSA-OAEP key exchange and the master keyring (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from uuid import UUID

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from application.ports import (
    InvalidPublicKey,
    KeyUnwrapError,
    index_key_context,
    message_key_context,
)
from infrastructure.crypto import (
    AesGcmCipher,
    MasterKeyring,
    UnknownMasterKey,
    generate_master_key_spec,
)
from infrastructure.settings import SettingsError

AAD = b"courier:message:1234:v1"
CTX = message_key_context(UUID(int=1234), "service:d1")


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def entry(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}"


@pytest.fixture(scope="module")
def rsa4096() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def cipher() -> AesGcmCipher:
    return AesGcmCipher()


# ---- sealing -------------------------------------------------------------------------


def test_seal_then_open_round_trips(cipher: AesGcmCipher) -> None:
    sealed = cipher.seal(b"blood results are in", AAD)

    assert len(sealed.data_key) == 32
    assert len(sealed.iv) == 12
    assert len(sealed.auth_tag) == 16
    assert len(sealed.ciphertext) == len(b"blood results are in")  # the tag is kept apart
    assert sealed.aad == AAD
    assert b"blood" not in sealed.ciphertext
    opened = cipher.open(sealed.data_key, sealed.iv, sealed.ciphertext, sealed.auth_tag, AAD)
    assert opened == b"blood results are in"


def test_every_seal_uses_a_fresh_key_and_iv(cipher: AesGcmCipher) -> None:
    first, second = cipher.seal(b"same", AAD), cipher.seal(b"same", AAD)

    assert first.data_key != second.data_key
    assert first.iv != second.iv
    assert first.ciphertext != second.ciphertext


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


@pytest.mark.parametrize("part", ["aad", "iv", "tag", "ciphertext", "short tag"])
def test_altered_sealed_content_does_not_open(cipher: AesGcmCipher, part: str) -> None:
    sealed = cipher.seal(b"do not touch", AAD)
    fields = {
        "data_key": sealed.data_key,
        "iv": sealed.iv,
        "ciphertext": sealed.ciphertext,
        "tag": sealed.auth_tag,
        "aad": AAD,
    }
    if part == "short tag":
        # The first tag byte moved onto the ciphertext: the same bytes, split elsewhere.
        fields["ciphertext"] = sealed.ciphertext + sealed.auth_tag[:1]
        fields["tag"] = sealed.auth_tag[1:]
    else:
        fields[part] = flip(fields[part])

    with pytest.raises(InvalidTag):
        cipher.open(**fields)


# ---- public keys ---------------------------------------------------------------------


def test_an_rsa_4096_public_key_is_accepted(
    cipher: AesGcmCipher, rsa4096: rsa.RSAPrivateKey
) -> None:
    info = cipher.inspect_public_key(public_pem(rsa4096))

    der = rsa4096.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert info.bits == 4096
    assert info.fingerprint == hashlib.sha256(der).hexdigest()
    assert info.key_id == "k_" + info.fingerprint[:24]


def test_key_id_does_not_depend_on_pem_whitespace(
    cipher: AesGcmCipher, rsa4096: rsa.RSAPrivateKey
) -> None:
    pem = public_pem(rsa4096)

    assert cipher.inspect_public_key("\n  " + pem + "\n\n") == cipher.inspect_public_key(pem)


def test_an_rsa_2048_public_key_is_refused_saying_why(
    cipher: AesGcmCipher, rsa2048: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidPublicKey, match="at least 4096 bits; got 2048"):
        cipher.inspect_public_key(public_pem(rsa2048))


def test_an_ec_public_key_is_refused(cipher: AesGcmCipher) -> None:
    pem = public_pem(ec.generate_private_key(ec.SECP256R1()))

    with pytest.raises(InvalidPublicKey, match="must be an RSA public key"):
        cipher.inspect_public_key(pem)


def test_a_private_key_pem_is_refused(cipher: AesGcmCipher, rsa4096: rsa.RSAPrivateKey) -> None:
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        pem = rsa4096.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.NoEncryption()
        ).decode()
        with pytest.raises(InvalidPublicKey, match="private key"):
            cipher.inspect_public_key(pem)


def test_a_pkcs1_public_key_is_refused(cipher: AesGcmCipher, rsa4096: rsa.RSAPrivateKey) -> None:
    pem = (
        rsa4096.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )

    with pytest.raises(InvalidPublicKey, match="SubjectPublicKeyInfo"):
        cipher.inspect_public_key(pem)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a key",
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\nAAAA!!!!\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
        "-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\n\udc80\u00e9\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\n" + "A" * 5_000_000 + "\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    ],
    ids=["empty", "text", "no-body", "bad-base64", "truncated", "non-ascii", "huge", "cert"],
)
def test_garbage_is_refused_with_invalid_public_key(cipher: AesGcmCipher, garbage: str) -> None:
    with pytest.raises(InvalidPublicKey, match="publicKeyPem"):
        cipher.inspect_public_key(garbage)


def test_two_concatenated_keys_are_refused(
    cipher: AesGcmCipher, rsa4096: rsa.RSAPrivateKey, rsa2048: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidPublicKey):
        cipher.inspect_public_key(public_pem(rsa4096) + public_pem(rsa2048))


def test_wrap_for_unwraps_with_the_private_key_using_oaep_sha256(
    cipher: AesGcmCipher, rsa4096: rsa.RSAPrivateKey
) -> None:
    data_key = cipher.seal(b"x", AAD).data_key

    wrapped = cipher.wrap_for(public_pem(rsa4096), data_key)

    assert len(wrapped) == 512
    oaep_sha256 = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    assert rsa4096.decrypt(wrapped, oaep_sha256) == data_key
    oaep_sha1 = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
    )
    with pytest.raises(ValueError):
        rsa4096.decrypt(wrapped, oaep_sha1)


def test_wrap_for_refuses_a_weak_key(cipher: AesGcmCipher, rsa2048: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidPublicKey):
        cipher.wrap_for(public_pem(rsa2048), b"k" * 32)


# ---- the keyring ---------------------------------------------------------------------

OLD, NEW = b"\x01" * 32, b"\x02" * 32


def test_keyring_wraps_under_the_first_key_and_unwraps() -> None:
    ring = MasterKeyring.from_spec(f"{entry('new', NEW)},{entry('old', OLD)}")

    key_id, wrapped = ring.wrap(b"d" * 32, CTX)

    assert ring.active_key_id == "new"
    assert key_id == "new"
    assert b"d" * 32 not in wrapped
    assert len(wrapped) == 1 + 12 + 32 + 16
    assert ring.unwrap(key_id, wrapped, CTX) == b"d" * 32


def test_wrapping_twice_gives_different_bytes() -> None:
    ring = MasterKeyring.from_spec(entry("a", OLD))

    assert ring.wrap(b"d" * 32, CTX)[1] != ring.wrap(b"d" * 32, CTX)[1]


def test_after_rotation_keys_wrapped_under_the_old_key_still_unwrap() -> None:
    before = MasterKeyring.from_spec(entry("old", OLD))
    key_id, wrapped = before.wrap(b"d" * 32, CTX)

    after = MasterKeyring.from_spec(f"{entry('new', NEW)},{entry('old', OLD)}")

    assert key_id == "old"
    assert after.active_key_id == "new"
    assert after.unwrap("old", wrapped, CTX) == b"d" * 32
    assert after.wrap(b"d" * 32, CTX)[0] == "new"


def test_unwrap_under_an_unknown_key_id_raises_unknown_master_key() -> None:
    ring = MasterKeyring.from_spec(entry("new", NEW))
    _, wrapped = MasterKeyring.from_spec(entry("gone", OLD)).wrap(b"d" * 32, CTX)

    with pytest.raises(UnknownMasterKey):
        ring.unwrap("gone", wrapped, CTX)
    assert issubclass(UnknownMasterKey, KeyError)


def test_a_wrapped_key_is_bound_to_its_key_id() -> None:
    # Same key bytes under two ids: the id is in the AAD, so they are not interchangeable.
    ring = MasterKeyring.from_spec(f"{entry('a', OLD)},{entry('b', OLD)}")
    _, wrapped = ring.wrap(b"d" * 32, CTX)

    with pytest.raises(KeyUnwrapError):
        ring.unwrap("b", wrapped, CTX)


@pytest.mark.parametrize(
    "wrapped", [b"", b"short", b"\x00" * 60, b"\x02" * 61, b"\x03" * 61, b"\x04" * 61]
)
def test_a_damaged_wrapped_key_raises_invalid_tag(wrapped: bytes) -> None:
    with pytest.raises(KeyUnwrapError):
        MasterKeyring.from_spec(entry("a", OLD)).unwrap("a", wrapped, CTX)


def test_a_wrapped_key_is_bound_to_its_context() -> None:
    # Another message's key, another holder, a tenant's index key: none unwraps for another.
    ring = MasterKeyring.from_spec(entry("a", OLD))
    m1, m2 = UUID(int=1), UUID(int=2)
    contexts = [
        message_key_context(m1, "service:d1"),
        message_key_context(m2, "service:d1"),
        message_key_context(m1, "service:d2"),
        index_key_context("t1"),
        index_key_context("t2"),
    ]
    for context in contexts:
        key_id, wrapped = ring.wrap(b"d" * 32, context)
        assert ring.unwrap(key_id, wrapped, context) == b"d" * 32
        for other in contexts:
            if other != context:
                with pytest.raises(KeyUnwrapError):
                    ring.unwrap(key_id, wrapped, other)


def test_an_unbound_wrap_of_the_old_format_still_unwraps() -> None:
    # What MasterKeyring.wrap made before wraps were bound: nonce + ciphertext + tag,
    # AAD "courier:dek:<key id>" alone. Readable until `courier keys rotate` rewrites it.
    nonce = b"\x07" * 12
    legacy = nonce + AESGCM(OLD).encrypt(nonce, b"d" * 32, b"courier:dek:a")
    ring = MasterKeyring.from_spec(entry("a", OLD))

    assert len(legacy) == ring.wrap_format.legacy_bytes
    assert not ring.wrap_format.is_current(legacy)
    assert ring.unwrap("a", legacy, CTX) == b"d" * 32


def hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def test_wraps_use_a_subkey_derived_per_purpose_never_the_master_key() -> None:
    ring = MasterKeyring.from_spec(entry("a", OLD))
    _, wrapped = ring.wrap(b"d" * 32, CTX)
    version, nonce, body = wrapped[:1], wrapped[1:13], wrapped[13:]
    aad = b"courier:wrap:v3|a|" + CTX.encode()

    assert version == b"\x03" and ring.wrap_format.is_current(wrapped)
    # Made with HKDF-SHA256(master key, info "courier:wrap:v3"), not the master key itself.
    assert AESGCM(hkdf(OLD, b"courier:wrap:v3")).decrypt(nonce, body, aad) == b"d" * 32
    with pytest.raises(InvalidTag):
        AESGCM(OLD).decrypt(nonce, body, aad)
    # The digest key is another derivation of the (oldest) master key: neither it nor
    # the wrapping subkey is the other.
    expected = hmac.new(hkdf(OLD, b"courier:digest"), b"send", hashlib.sha256).hexdigest()
    assert ring.digest(b"send") == expected
    assert hkdf(OLD, b"courier:digest") != hkdf(OLD, b"courier:wrap:v3")


def test_a_bound_wrap_made_with_the_master_key_itself_still_unwraps() -> None:
    # What MasterKeyring.wrap made before subkeys (format v2): version byte 0x02, nonce,
    # AES-GCM under the master key with the AAD "courier:wrap:v2|<key id>|<context>".
    nonce = b"\x09" * 12
    v2 = (
        b"\x02"
        + nonce
        + AESGCM(OLD).encrypt(nonce, b"d" * 32, b"courier:wrap:v2|a|" + CTX.encode())
    )
    ring = MasterKeyring.from_spec(entry("a", OLD))

    assert not ring.wrap_format.is_current(v2)  # `courier keys rotate` rewrites it
    assert ring.unwrap("a", v2, CTX) == b"d" * 32
    with pytest.raises(KeyUnwrapError):  # still bound to its context
        ring.unwrap("a", v2, message_key_context(UUID(int=1), "service:d1"))
    # A v2 wrap relabelled v3 (or the reverse) opens under neither key.
    with pytest.raises(KeyUnwrapError):
        ring.unwrap("a", b"\x03" + v2[1:], CTX)
    _, v3 = ring.wrap(b"d" * 32, CTX)
    with pytest.raises(KeyUnwrapError):
        ring.unwrap("a", b"\x02" + v3[1:], CTX)


def test_digest_stays_the_same_when_a_new_key_is_prepended() -> None:
    before = MasterKeyring.from_spec(entry("old", OLD))
    after = MasterKeyring.from_spec(f"{entry('new', NEW)},{entry('old', OLD)}")

    assert after.digest(b"send") == before.digest(b"send")
    assert re.fullmatch(r"[0-9a-f]{64}", before.digest(b"send"))
    assert before.digest(b"send") != before.digest(b"other")
    assert MasterKeyring.from_spec(entry("new", NEW)).digest(b"send") != before.digest(b"send")


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("", "no key"),
        (" , ", "no key"),
        ("nocolon", "KEY_ID:BASE64"),
        (":" + base64.b64encode(OLD).decode(), "KEY_ID:BASE64"),
        ("bad id:" + base64.b64encode(OLD).decode(), "KEY_ID:BASE64"),
        ("a:not*base64", "not valid base64"),
        ("a:" + base64.b64encode(b"x" * 16).decode(), "must be 32 bytes, got 16"),
        (f"{entry('a', OLD)},{entry('a', NEW)}", "appears more than once"),
    ],
    ids=["empty", "blank", "no-colon", "no-id", "bad-id", "base64", "length", "duplicate"],
)
def test_malformed_specs_raise_settings_error(spec: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(complaint)):
        MasterKeyring.from_spec(spec)


def test_spec_tolerates_spaces_around_entries() -> None:
    ring = MasterKeyring.from_spec(f" {entry('new', NEW)} , {entry('old', OLD)} ")

    assert ring.active_key_id == "new"


def test_generated_spec_is_a_valid_single_key_spec() -> None:
    spec = generate_master_key_spec()

    key_id, _, encoded = spec.partition(":")
    assert re.fullmatch(r"k\d{8}[0-9a-f]{4}", key_id)
    assert len(base64.b64decode(encoded, validate=True)) == 32
    assert MasterKeyring.from_spec(spec).active_key_id == key_id
    assert generate_master_key_spec("k1").startswith("k1:")
    assert generate_master_key_spec() != spec
    with pytest.raises(SettingsError):
        generate_master_key_spec("bad:id")
