"""PostgreSQL settings: timeouts and TLS parameters reach both stores; production refuses
a connection that does not verify the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from infrastructure.pgstore import Factory
from infrastructure.runtime.stores import make_engine
from infrastructure.settings import Settings, SettingsError, eventstore_env, load

BASE = {"JWT_SECRET": "s" * 40, "ENCRYPTION_MASTER_KEYS": "k1:" + "A" * 43 + "="}
URL = "postgresql://courier:p%40ss@db.example.org:6432/courier"
TLS = "sslmode=verify-full&sslrootcert=%2Fetc%2Fcourier%2Fca.pem"


def settings(**env: str) -> Settings:
    return load({**BASE, "DATABASE_URL": URL, **env})


class Captured(Exception):
    pass


def connect_params(s: Settings) -> dict[str, Any]:
    """What the read side's engine would hand psycopg, without connecting."""
    engine = make_engine(s)
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def capture(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        seen.update(params)
        raise Captured

    with pytest.raises(Captured):
        engine.connect()
    engine.dispose()
    return seen


def test_the_event_store_gets_lock_and_idle_in_transaction_timeouts_in_seconds() -> None:
    env = eventstore_env(settings())
    assert env["POSTGRES_LOCK_TIMEOUT"] == "2"
    assert env["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"] == "5"
    changed = eventstore_env(
        settings(POSTGRES_LOCK_TIMEOUT="3", POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT="0")
    )
    assert changed["POSTGRES_LOCK_TIMEOUT"] == "3"
    assert changed["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"] == "0"


@pytest.mark.parametrize("value", ["-1", "1.5", "two"])
def test_a_timeout_must_be_whole_seconds(value: str) -> None:
    with pytest.raises(SettingsError, match="POSTGRES_LOCK_TIMEOUT"):
        settings(POSTGRES_LOCK_TIMEOUT=value)


def test_the_read_side_gets_the_same_timeouts_and_its_schema() -> None:
    params = connect_params(settings(POSTGRES_SCHEMA="courier", POSTGRES_LOCK_TIMEOUT="3"))
    assert params["options"].split(" ") == [
        "-c",
        "lock_timeout=3s",
        "-c",
        "idle_in_transaction_session_timeout=5s",
        "-csearch_path=courier",
    ]


def test_the_urls_query_reaches_the_event_store_and_the_read_side() -> None:
    s = settings(DATABASE_URL=f"{URL}?{TLS}&application_name=courier&dbname=other")
    env = eventstore_env(s)
    assert env["PERSISTENCE_MODULE"] == "infrastructure.pgstore:Factory"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.example.org", "6432")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_PASSWORD"]) == ("courier", "p@ss")
    kwargs = Factory(env).datastore.pool.kwargs  # builds the pool, does not open it
    assert isinstance(kwargs, dict)
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["sslrootcert"] == "/etc/courier/ca.pem"
    assert kwargs["application_name"] == "courier"
    assert kwargs["dbname"] == "courier"  # the query may not name another database
    params = connect_params(s)
    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == "/etc/courier/ca.pem"


def test_the_urls_own_options_are_kept_beside_the_timeouts() -> None:
    params = connect_params(settings(DATABASE_URL=f"{URL}?options=-cstatement_timeout%3D9s"))
    assert params["options"].startswith("-cstatement_timeout=9s -c lock_timeout=2s")


def test_without_a_query_the_event_store_has_no_extra_parameters() -> None:
    assert "POSTGRES_CONNECT_PARAMS" not in eventstore_env(settings())


@pytest.mark.parametrize("query", ["", "?sslmode=require", "?sslmode=verify-ca"])
def test_production_refuses_a_database_connection_that_does_not_verify_the_server(
    query: str,
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(DATABASE_URL=URL + query, COURIER_ENV="production")
    message = str(refused.value)
    assert "sslmode=verify-full" in message and "ALLOW_INSECURE_DATABASE=1" in message
    assert "p@ss" not in message and "p%40ss" not in message


def test_production_accepts_verify_full_or_an_explicit_allowance() -> None:
    assert settings(DATABASE_URL=f"{URL}?{TLS}", COURIER_ENV="production").is_postgres
    allowed = settings(COURIER_ENV="production", ALLOW_INSECURE_DATABASE="1")
    assert allowed.is_postgres
    # libpq's own variable counts as it does for libpq
    assert settings(COURIER_ENV="production", PGSSLMODE="verify-full").is_postgres


def test_outside_production_any_sslmode_is_accepted_but_not_a_misspelt_one() -> None:
    assert settings(DATABASE_URL=URL + "?sslmode=disable").is_postgres
    with pytest.raises(SettingsError, match="verify_full"):
        settings(DATABASE_URL=URL + "?sslmode=verify_full")


def test_sqlite_is_not_concerned(tmp_path: Any) -> None:
    s = load({"COURIER_DATA_DIR": str(tmp_path), "COURIER_ENV": "production"})
    assert s.embedded and "POSTGRES_LOCK_TIMEOUT" not in eventstore_env(s)


def test_a_secret_file_is_private_from_its_creation_and_made_once(tmp_path: Path) -> None:
    import os
    import stat

    from infrastructure.secretfiles import secret_file

    path = tmp_path / "var" / "secret"
    made: list[str] = []

    def make() -> str:
        made.append("s3cret")
        return "s3cret"

    old = os.umask(0)  # a permissive umask must not make the file readable by others
    try:
        assert secret_file(path, make) == "s3cret"
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_file(path, lambda: "another") == "s3cret"
    assert made == ["s3cret"]


def test_loading_writes_nothing_and_the_process_start_makes_the_embedded_secrets_once(
    tmp_path: Path,
) -> None:
    import os
    import stat

    from infrastructure.secretfiles import with_embedded_secrets

    data = tmp_path / "var"
    read = load({"COURIER_DATA_DIR": str(data)})
    assert (read.jwt_secret, read.master_keys, data.exists()) == (None, None, False)
    first = with_embedded_secrets(read)
    assert sorted(os.listdir(data)) == ["jwt-secret", "master-keys"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in data.iterdir())
    again = with_embedded_secrets(load({"COURIER_DATA_DIR": str(data)}))
    assert again.hs256_secret() == first.hs256_secret()
    assert again.master_key_spec() == first.master_key_spec()


def test_secrets_stay_out_of_a_logged_settings() -> None:
    s = settings(SMTP_URL="smtps://courier:hunter2@mail.example.org")
    shown = repr(s) + str(s)
    assert BASE["JWT_SECRET"] not in shown and BASE["ENCRYPTION_MASTER_KEYS"] not in shown
    assert "hunter2" not in shown and "p@ss" not in shown and "p%40ss" not in shown


# ---- policies: mail over TLS, previews, encryption ------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "smtp://mail.example.org",
        "smtp://u:p@mail.example.org:587",
        "smtp://m.example.org?starttls=0",
    ],
)
def test_smtp_without_tls_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(SettingsError, match="STARTTLS") as error:
        settings(SMTP_URL=url)
    assert "SMTP_ALLOW_PLAINTEXT=1" in str(error.value) and "smtps://" in str(error.value)
    assert (
        settings(SMTP_URL=url, SMTP_ALLOW_PLAINTEXT="1").notifications.smtp_url.get_secret_value()
        == url
    )


@pytest.mark.parametrize(
    "url", ["smtps://mail.example.org", "smtp://mail.example.org:587?starttls=1"]
)
def test_smtp_over_tls_or_starttls_is_accepted(url: str) -> None:
    assert settings(SMTP_URL=url).notifications.smtp_url.get_secret_value() == url


def test_previews_and_required_encryption_are_off_by_default_and_can_be_turned_on() -> None:
    default = settings()
    assert (default.notifications.preview, default.require_encryption) == (False, False)
    on = settings(NOTIFY_PREVIEW="1", REQUIRE_ENCRYPTION="true")
    assert (on.notifications.preview, on.require_encryption) == (True, True)
    with pytest.raises(SettingsError, match="REQUIRE_ENCRYPTION must be 1 or 0"):
        settings(REQUIRE_ENCRYPTION="maybe")
