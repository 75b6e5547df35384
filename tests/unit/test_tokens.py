"""Token rules: the lifetime cap, issuer and audience, the HS256 secret's length, and
verification by an identity provider's RS256 or Ed25519 public key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from infrastructure.settings import Settings, SettingsError, load
from interfaces.http.auth import AuthError, decode_token, mint_token

SECRET = "token-rules-test-secret-" + "t" * 24
BASE = {
    "DATABASE_URL": "postgresql://courier@127.0.0.1:5432/unused",
    "ENCRYPTION_MASTER_KEYS": "k1:" + "A" * 43 + "=",
}


def settings(**env: str) -> Settings:
    return load({**BASE, "JWT_SECRET": SECRET, **env})


def signed(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": "alice", "tenant": "t1", "iat": now, "exp": now + 600}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


def refusal(token: str, s: Settings) -> str:
    with pytest.raises(AuthError) as error:
        decode_token(token, s)
    return str(error.value)


# ---- lifetime ----------------------------------------------------------------------------


PRODUCTION = {"COURIER_ENV": "production", "ALLOW_INSECURE_DATABASE": "1"}


def test_in_production_a_token_may_live_an_hour_by_default_and_no_longer() -> None:
    s = settings(**PRODUCTION)
    now = int(time.time())
    assert s.tokens.max_lifetime == 3600
    assert decode_token(signed(iat=now, exp=now + 3600), s).user_id == "alice"
    message = refusal(signed(iat=now, exp=now + 3601), s)
    assert "3601 s" in message and "JWT_MAX_LIFETIME_SECONDS" in message
    # A token of the past that was long-lived is refused the same way.
    assert "longer than" in refusal(signed(iat=now - 86_000, exp=now + 400), s)


def test_elsewhere_a_token_may_live_a_day_by_default_and_no_longer() -> None:
    s = settings()
    now = int(time.time())
    assert s.tokens.max_lifetime == 86400
    assert decode_token(signed(iat=now, exp=now + 86400), s).user_id == "alice"
    assert "longer than" in refusal(signed(iat=now, exp=now + 86401), s)


def test_a_token_without_iat_or_exp_is_refused() -> None:
    s = settings()
    assert "'iat'" in refusal(signed(iat=None), s)
    assert "'exp'" in refusal(signed(exp=None), s)


def test_the_lifetime_cap_is_a_setting() -> None:
    s = settings(JWT_MAX_LIFETIME_SECONDS="7800")
    now = int(time.time())
    assert decode_token(signed(iat=now, exp=now + 7800), s).user_id == "alice"
    assert "longer than" in refusal(signed(iat=now, exp=now + 7801), s)
    with pytest.raises(SettingsError, match="JWT_MAX_LIFETIME_SECONDS"):
        settings(JWT_MAX_LIFETIME_SECONDS="0")


def test_a_bench_driver_token_passes_within_the_cap() -> None:
    # What ../shared/bench/driver.py mints: sub, tenant, roles, iat, exp, HS256.
    issued = int(time.time())
    claims = {"sub": "u1", "tenant": "bench", "roles": ["user"], "iat": issued}
    token = jwt.encode({**claims, "exp": issued + 7800}, SECRET, algorithm="HS256")
    assert decode_token(token, settings()).user_id == "u1"  # the default outside production
    assert decode_token(token, settings(JWT_MAX_LIFETIME_SECONDS="7800")).user_id == "u1"


def test_courier_token_will_not_mint_past_the_cap() -> None:
    s = settings(**PRODUCTION)
    assert decode_token(mint_token(s, "dora", "t1", ["user"], 3600), s).user_id == "dora"
    with pytest.raises(AuthError, match="JWT_MAX_LIFETIME_SECONDS"):
        mint_token(s, "dora", "t1", ["user"], 3601)


# ---- issuer and audience -----------------------------------------------------------------


def test_issuer_and_audience_are_checked_when_set() -> None:
    s = settings(JWT_ISSUER="https://idp.example.org/", JWT_AUDIENCE="courier")
    good = signed(iss="https://idp.example.org/", aud="courier")
    assert decode_token(good, s).user_id == "alice"
    assert "'iss'" in refusal(signed(aud="courier"), s)
    assert "'aud'" in refusal(signed(iss="https://idp.example.org/"), s)
    assert "issuer" in refusal(signed(iss="https://evil.example.org/", aud="courier"), s)
    assert "aud" in refusal(signed(iss="https://idp.example.org/", aud="other-app"), s)
    minted = mint_token(s, "dora", "t1", ["user"], 60)  # what courier token makes passes
    assert decode_token(minted, s).user_id == "dora"


def test_without_issuer_and_audience_settings_neither_is_required() -> None:
    s = settings()
    assert (s.tokens.issuer, s.tokens.audience) == (None, None)
    assert decode_token(signed(iss="anyone"), s).user_id == "alice"


# ---- the HS256 secret ----------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["short", "x" * 31, "é" * 15])
def test_a_secret_under_32_bytes_is_refused_at_startup(secret: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="at least 32 bytes") as error:
        load({**BASE, "JWT_SECRET": secret})
    assert "secrets.token_urlsafe" in str(error.value)  # says how to make one
    with pytest.raises(SettingsError, match="JWT_SECRET"):  # the embedded runtime too
        load({"COURIER_DATA_DIR": str(tmp_path), "JWT_SECRET": secret})


def test_a_secret_of_32_bytes_is_enough() -> None:
    assert load({**BASE, "JWT_SECRET": "x" * 32}).hs256_secret() == "x" * 32


# ---- an identity provider's public key -------------------------------------------------


def pem(private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_an_ed25519_key_file_verifies_eddsa_tokens_only(tmp_path: Path) -> None:
    idp = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "idp.pem"
    path.write_text(pem(idp))
    s = load({**BASE, "JWT_PUBLIC_KEY_FILE": str(path)})  # no JWT_SECRET needed
    assert decode_token(signed(idp, "EdDSA"), s).user_id == "alice"
    refusal(signed(ed25519.Ed25519PrivateKey.generate(), "EdDSA"), s)
    refusal(signed(SECRET, "HS256"), s)
    refusal(signed(rsa.generate_private_key(65537, 2048), "RS256"), s)
    assert "longer than" in refusal(signed(idp, "EdDSA", exp=int(time.time()) + 86_400 + 60), s)


def test_an_rsa_key_file_verifies_rs256_tokens(tmp_path: Path) -> None:
    idp = rsa.generate_private_key(65537, 2048)
    path = tmp_path / "idp.pem"
    path.write_text(pem(idp))
    s = settings(JWT_PUBLIC_KEY_FILE=str(path))
    assert decode_token(signed(idp, "RS256"), s).user_id == "alice"
    refusal(signed(SECRET, "HS256"), s)


def test_a_public_key_setting_that_is_not_a_usable_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RSA, for RS256, or Ed25519"):
        settings(JWT_PUBLIC_KEY="not a key")
    with pytest.raises(SettingsError, match="cannot be read"):
        settings(JWT_PUBLIC_KEY_FILE=str(tmp_path / "missing.pem"))
    key = pem(ed25519.Ed25519PrivateKey.generate())
    path = tmp_path / "k.pem"
    path.write_text(key)
    with pytest.raises(SettingsError, match="not both"):
        settings(JWT_PUBLIC_KEY=key, JWT_PUBLIC_KEY_FILE=str(path))
