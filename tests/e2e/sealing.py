"""Helpers of the encryption end-to-end tests: keys over HTTP, envelopes, the CLI, Node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import unavailable
from tests.e2e.harness import ROOT, Runtime, auth, wait_for
from tests.recipient import public_pem

WEBCRYPTO_CLIENT = Path(__file__).with_name("webcrypto_client.mjs")


def register_keys(runtime: Runtime, *users: str, tenant: str = "t1") -> dict[str, str]:
    """Register each user's RSA-4096 public key; their key ids."""
    ids = {}
    for user in users:
        r = runtime.http.put(
            "/api/keys/me", json={"publicKeyPem": public_pem(user)}, headers=auth(user, tenant)
        )
        assert r.status_code == 200, r.text
        ids[user] = r.json()["keyId"]
    return ids


def send_encrypted(runtime: Runtime, sender: str, recipient: str, content: str) -> str:
    r = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": recipient, "content": content, "encrypted": True},
        headers=auth(sender),
    )
    assert r.status_code == 202, r.text
    assert r.json()["message"]["content"] is None
    message_id: str = r.json()["message"]["id"]
    return message_id


def envelope(runtime: Runtime, user: str, message_id: str) -> dict[str, Any]:
    r = runtime.http.get(f"/api/messages/{message_id}/envelope", headers=auth(user))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def courier(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `courier` command against the runtime's stores, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "interfaces.cli", *args],
        env=runtime.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def restart(runtime: Runtime, *roles: str, **env: str) -> None:
    """Restart processes with changed settings, and wait until the API answers again."""
    runtime.env.update(env)
    for role in roles:
        args = ("--port", str(runtime.port)) if role == "serve" else ()
        runtime.start_role(role, *args)

    def ready() -> bool:
        try:
            return runtime.http.get("/health/ready").status_code == 200
        except Exception:
            return False

    wait_for(ready, 60, "the API to be ready again")


def node(mode: str, runtime: Runtime, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the WebCrypto client (Node's built-in webcrypto and fetch, no packages)."""
    executable = shutil.which("node")
    if executable is None:
        unavailable("node (Node.js 20)")
    assert executable is not None
    done = subprocess.run(
        [executable, str(WEBCRYPTO_CLIENT), mode, runtime.base_url],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result
