"""The web console in a real browser (Debian's Chromium) against a real server.

Two users' pages each make an RSA-4096 key pair in the browser and exchange encrypted
messages that the receiving page decrypts; an operator's page sees a failed job and
retries it to completion; the pages fit a phone's width and every control has a name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from domain.message import message_id_for
from tests.conftest import unavailable
from tests.e2e.browser import (
    KEYGEN_MS,
    LIVE_MS,
    Browser,
    make_key,
    overflow,
    send,
    send_over_http,
    sign_in,
    start_direct,
    unlabelled,
    user_token,
)
from tests.e2e.conftest import FAST
from tests.e2e.harness import ROOT, Runtime, auth, wait_for
from tests.e2e.sealing import register_keys, restart
from tests.recipient import public_pem, seal

pytestmark = pytest.mark.e2e

FAILING_INDEXING = {
    "FAULT_INJECT": "MESSAGE_INDEXING:always",
    "QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS": "2",
    "QUEUE_MESSAGE_INDEXING_BACKOFF_SECONDS": "0.2",
    "QUEUE_HEALTH_MIN_ATTEMPTS": "2",
}


@pytest.fixture
def failing(tmp_path: Path) -> Iterator[Runtime]:
    """The embedded runtime with every indexing job failing its two attempts."""
    env = {**FAST, **FAILING_INDEXING, "COURIER_DATA_DIR": str(tmp_path / "var")}
    runtime = Runtime("embedded", env, tmp_path).start()
    yield runtime
    runtime.stop()


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_two_users_exchange_messages_the_receiving_page_decrypts(
    browser: Browser, embedded: Runtime
) -> None:
    alice, bob = browser.page(), browser.page()
    requests: list[str] = []
    sockets: list[str] = []
    for page in (alice, bob):
        page.on("request", lambda r: requests.append(r.url))
        page.on("websocket", lambda ws: sockets.append(ws.url))
    alice_token, bob_token = user_token("alice"), user_token("bob")
    sign_in(alice, embedded, "messages", alice_token)
    sign_in(bob, embedded, "messages", bob_token)
    for page in (alice, bob):
        page.get_by_role("button", name="Generate an RSA-4096 key pair").click()
    for page in (alice, bob):
        expect()(page.locator("#key-status")).to_have_attribute(
            "data-state", "ready", timeout=KEYGEN_MS
        )
        expect()(page.locator("#live-status")).to_have_text("Live: connected", timeout=LIVE_MS)

    # The private key is a non-extractable CryptoKey in IndexedDB; the server has the public one.
    stored = bob.evaluate(
        """() => new Promise((resolve, reject) => {
          const open = indexedDB.open("courier-console");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const get = open.result.transaction("keys").objectStore("keys").getAll();
            get.onsuccess = () => resolve(get.result.map((k) => ({
              keyId: k.keyId, type: k.privateKey.type, extractable: k.privateKey.extractable,
              bits: k.privateKey.algorithm.modulusLength, hash: k.privateKey.algorithm.hash.name,
              usages: k.privateKey.usages })));
          };
        })"""
    )
    registered = embedded.http.get("/api/keys/bob", headers=auth("alice")).json()
    assert stored == [
        {
            "keyId": registered["keyId"],
            "type": "private",
            "extractable": False,
            "bits": 4096,
            "hash": "SHA-256",
            "usages": ["unwrapKey"],
        }
    ]

    start_direct(alice, "bob")
    e2e_text = "Potassium 6.1 on bed 4, sealed in the browser"
    e2e_id = send(alice, e2e_text, "End to end (sealed here)")
    server_text = "Call the family after rounds, sealed by the service"
    server_id = send(alice, server_text, "Encrypted by the service")
    plain_text = "Plain note: room 4 is free"
    plain_id = send(alice, plain_text, "Plain")

    # Bob's page hears of the conversation over the WebSocket and decrypts in the browser.
    conversation = bob.get_by_role("button", name="Direct with alice")
    expect()(conversation).to_be_visible(timeout=LIVE_MS)
    conversation.click()
    for mid, text in ((e2e_id, e2e_text), (server_id, server_text), (plain_id, plain_text)):
        item = bob.locator(f'#thread li[data-message-id="{mid}"]')
        expect()(item.locator(".text")).to_have_text(text, timeout=LIVE_MS)
    # "End to end" is what the sealing page says of what it sealed; the receiving page
    # cannot tell it from the envelope, which the server hands out, so it says "encrypted".
    expect()(bob.locator(f'li[data-message-id="{e2e_id}"] .tag.lock')).to_have_text("encrypted")
    expect()(alice.locator(f'li[data-message-id="{e2e_id}"] .tag.lock')).to_have_text("end to end")
    expect()(bob.locator(f'li[data-message-id="{server_id}"] .tag.lock')).to_have_text(
        "encrypted by the service"
    )
    expect()(bob.locator(f'li[data-message-id="{e2e_id}"]')).to_contain_text("decrypted here")

    # Alice's ticks follow the stages to the end.
    for mid in (e2e_id, server_id, plain_id):
        mine = alice.locator(f'#thread li[data-message-id="{mid}"]')
        expect()(mine).to_have_attribute("data-status", "delivered", timeout=LIVE_MS)
        expect()(mine.locator('[data-stage="delivered"]')).to_have_class("done")
        expect()(mine.locator('[data-stage="indexed"]')).to_have_class("done", timeout=LIVE_MS)
        expect()(mine.locator('[data-stage="notified"]')).to_have_class("done", timeout=LIVE_MS)
        # Bob's page showed it, so it marked it read; the receipt reached Alice live.
        expect()(mine.locator('[data-stage="read"]')).to_have_text("✓ Read 1/1", timeout=LIVE_MS)

    # The service holds no plaintext of the encrypted ones: what it answers has none.
    for mid in (e2e_id, server_id):
        message = embedded.message("bob", mid)
        assert message["isEncrypted"] is True and message["content"] is None
    assert embedded.message("bob", plain_id)["content"] == plain_text

    # The token travels in headers only: the WebSocket opens with a single-use ticket.
    assert sockets and all("/ws?ticket=" in url and "token=" not in url for url in sockets)
    for jwt in (alice_token, bob_token):
        assert not [url for url in [*requests, *sockets] if jwt in url]
    assert browser.problems == []
    assert unlabelled(alice) == [] and unlabelled(bob) == []


def pinned(page: Any) -> dict[str, str]:
    """The fingerprints the page pinned in IndexedDB, by peer."""
    found: dict[str, str] = page.evaluate(
        """() => new Promise((resolve, reject) => {
          const open = indexedDB.open("courier-console");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const get = open.result.transaction("pins").objectStore("pins").getAll();
            get.onsuccess = () => resolve(Object.fromEntries(
              get.result.map((p) => [p.peer, p.fingerprint])));
          };
        })"""
    )
    return found


def fingerprint(pem: str) -> str:
    der = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def send_sealed(
    runtime: Runtime, sender: str, recipient: str, text: str, aad: str, cid: str
) -> str:
    """An end-to-end send made outside the browser, sealed with the AAD given."""
    holders = {
        sender: public_pem(SECOND_KEY),
        recipient: runtime.http.get(f"/api/keys/{recipient}", headers=auth(sender)).json()[
            "publicKeyPem"
        ],
    }
    r = runtime.http.post(
        "/api/messages/direct",
        json={
            "recipientId": recipient,
            "sealed": seal(text.encode(), aad.encode(), holders),
            "clientMessageId": cid,
        },
        headers=auth(sender),
    )
    assert r.status_code == 202, r.text
    mid: str = r.json()["message"]["id"]
    return mid


SECOND_KEY = "bob-second-key"


def test_a_peer_key_is_pinned_its_change_warned_and_a_foreign_aad_refused(
    browser: Browser, embedded: Runtime
) -> None:
    alice = browser.page()
    sign_in(alice, embedded, "messages", user_token("alice"))
    make_key(alice)
    register_keys(embedded, "bob")
    start_direct(alice, "bob")
    first = send(alice, "Sealed for the key bob has now", "End to end (sealed here)")
    expect()(alice.locator(f'li[data-message-id="{first}"] .tag.lock')).to_have_text("end to end")
    # Pinned on first use, from the PEM itself (the fingerprint the registry also reports).
    own = embedded.http.get("/api/keys/alice", headers=auth("alice")).json()["publicKeyPem"]
    assert pinned(alice) == {"bob": fingerprint(public_pem("bob")), "alice": fingerprint(own)}

    # Bob's key changes (a new device, or someone who took over the registry).
    r = embedded.http.put(
        "/api/keys/me", json={"publicKeyPem": public_pem(SECOND_KEY)}, headers=auth("bob")
    )
    assert r.status_code == 200, r.text
    alice.get_by_label("Message", exact=True).fill("Sealed after bob's key changed")
    alice.get_by_label("End to end (sealed here)").check()
    alice.get_by_role("button", name="Send").click()
    warning = alice.locator("#key-warnings")
    expect()(warning).to_be_visible(timeout=LIVE_MS)
    expect()(warning).to_contain_text("The key of bob has changed")
    expect()(warning).to_contain_text(fingerprint(public_pem(SECOND_KEY)))
    expect()(alice.locator("#send-error")).to_contain_text("Not sent")
    assert alice.locator("#thread li.mine", has_text="after bob's key changed").count() == 0
    # Once compared out of band, the new key is trusted and sealing goes on.
    alice.get_by_role("button", name="Trust bob's new key").click()
    expect()(warning).to_be_hidden()
    assert pinned(alice)["bob"] == fingerprint(public_pem(SECOND_KEY))
    second = send(alice, "Sealed after bob's key changed", "End to end (sealed here)")
    assert embedded.message("alice", second)["isEncrypted"] is True

    # From bob's side (outside the browser): one envelope whose AAD names its message
    # and version, one whose AAD names another message. Only the first is decrypted.
    good_cid, bad_cid = str(uuid.uuid4()), str(uuid.uuid4())
    good_aad = f"courier:e2e:{message_id_for('t1', 'bob', good_cid)}:v1"
    good = send_sealed(embedded, "bob", "alice", "AAD names this message", good_aad, good_cid)
    bad_aad = f"courier:e2e:{first}:v1"  # content moved over from another message
    bad = send_sealed(embedded, "bob", "alice", "AAD names another message", bad_aad, bad_cid)
    shown = alice.locator(f'#thread li[data-message-id="{good}"]')
    expect()(shown.locator(".text")).to_have_text("AAD names this message", timeout=LIVE_MS)
    expect()(shown.locator(".tag.lock")).to_have_text("encrypted")  # not sealed here
    refused = alice.locator(f'#thread li[data-message-id="{bad}"]')
    expect()(refused).to_have_attribute("data-refused", "true", timeout=LIVE_MS)
    expect()(refused.locator(".text")).to_contain_text("Not decrypted")
    expect()(refused.locator(".text")).to_contain_text("does not name this message")
    assert "AAD names another message" not in alice.content()
    assert browser.problems == []
    assert unlabelled(alice) == []


def test_an_operator_page_retries_a_failed_job_and_sees_it_complete(
    browser: Browser, failing: Runtime
) -> None:
    mid = send_over_http(failing, "alice", "bob", "vitals are stable")
    job_id = f"MESSAGE_INDEXING:{mid}:index"
    page = browser.page()
    sign_in(page, failing, "operators", user_token("ops-1", ["admin"]))

    row = page.locator(f'#failed-rows tr[data-job-id="{job_id}"]')
    expect()(row).to_be_visible(timeout=LIVE_MS)
    expect()(row).to_contain_text("InjectedFault")
    expect()(row.locator("td").nth(3)).to_have_text("2")
    card = page.locator('[data-queue="MESSAGE_INDEXING"]')
    expect()(card.locator('[data-figure="failed"] dd')).to_have_text("1", timeout=LIVE_MS)
    expect()(card.locator(".health")).to_have_text("degraded", timeout=LIVE_MS)
    expect()(page.locator('[data-queue="MESSAGE_DELIVERY"] .health')).to_have_text("healthy")
    assert page.locator("#queues article").count() == 6
    assert "vitals" not in page.content()

    # The cause is fixed (the service restarts without the fault); the operator retries.
    restart(failing, "serve", FAULT_INJECT="")
    page.get_by_role("button", name=f"Retry job {job_id}").click()
    expect()(row).to_have_count(0, timeout=LIVE_MS)
    expect()(page.locator("#failed-empty")).to_be_visible()
    expect()(card.locator('[data-figure="completed"] dd')).to_have_text("1", timeout=LIVE_MS)
    expect()(card.locator('[data-figure="failed"] dd')).to_have_text("0")
    assert wait_for(lambda: failing.message("alice", mid)["indexed"], 30, "indexed")

    # Who retried is on the record, as the auditors' view shows.
    trail = failing.http.get(
        f"/api/audit/messages/{mid}/trail", headers=auth("aud", roles=["auditor"])
    )
    retried = [e for e in trail.json()["items"] if e["type"] == "RetryRequested"]
    assert [(e["actorId"], e["actorRole"]) for e in retried] == [("ops-1", "admin")]
    assert browser.problems == []


def test_an_auditor_page_searches_the_log_shows_a_trail_and_the_tamper_check(
    browser: Browser, embedded: Runtime
) -> None:
    mid = send_over_http(embedded, "alice", "bob", "dose changed to 5 mg")
    embedded.wait_done("alice", mid)
    embedded.message("bob", mid)  # a view, which the trail must show
    page = browser.page()
    sign_in(page, embedded, "audit", user_token("aud-1", ["auditor"]))

    page.get_by_role("button", name="Verify the chain").click()
    expect()(page.locator('[data-verdict="ok"]')).to_contain_text("Intact", timeout=LIVE_MS)
    expect()(page.locator('[data-verdict="ok"]')).to_contain_text("audit tables match the log")

    page.get_by_label("Actor id").fill("bob")
    page.get_by_role("button", name="Search", exact=True).click()
    expect()(page.locator('#timeline li[data-type="Viewed"]').first).to_be_visible()

    page.get_by_label("Message id").fill(mid)
    page.get_by_role("button", name="Show the trail", exact=True).click()
    types = page.locator("#timeline li")
    expect()(types.first).to_have_attribute("data-type", "Created", timeout=LIVE_MS)
    shown = page.locator("#timeline li").evaluate_all("(items) => items.map((i) => i.dataset.type)")
    for kind in ("Created", "Delivered", "Indexed", "Viewed"):
        assert kind in shown
    assert "dose changed" not in page.content()

    page.get_by_label("Whose messages were accessed (user id)").fill("alice")
    page.get_by_role("button", name="Search", exact=True).click()
    expect()(page.locator("#results-title")).to_have_text("Access to alice's messages")
    expect()(page.locator("#timeline li").first).to_contain_text("bob")

    # Separation of duties shows in the page too: an auditor's token is no operator's.
    page.goto(f"{embedded.base_url}/console/#/operators")
    expect()(page.locator(".role-note")).to_contain_text("needs a token with the role admin")
    assert browser.problems == []
    assert unlabelled(page) == []


def test_the_console_fits_a_phone_and_keeps_strict_headers(
    browser: Browser, embedded: Runtime, tmp_path: Path
) -> None:
    page = browser.page(width=390, height=844)
    sign_in(page, embedded, "messages", user_token("alice", ["user", "admin", "auditor"]))
    make_key(page)
    start_direct(page, "bob")
    send(page, "On my way to ward 3", "Plain")
    for view in ("messages", "operators", "audit"):
        page.goto(f"{embedded.base_url}/console/#/{view}")
        page.locator(f"#view-{view}").wait_for()
        if view == "operators":
            page.locator("#queues article").first.wait_for()
        assert overflow(page) == 0, view
    page.goto(f"{embedded.base_url}/console/#/messages")
    page.get_by_role("button", name="Direct with bob").click()
    page.locator("#thread li.mine").first.wait_for()
    shot = tmp_path / "messaging-390.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(shot.read_bytes()[16:20], "big")
    assert width == 390

    # Keyboard only: the first Tab reaches "skip to content"; Enter follows a link.
    page.reload()
    page.locator("#view-messages").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.locator('nav a[data-view="audit"]').focus()
    page.keyboard.press("Enter")
    expect()(page.locator("#view-audit")).to_be_visible()

    answer = embedded.http.get("/console/")
    assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert f"connect-src 'self' ws://127.0.0.1:{embedded.port}" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert embedded.http.get("/console").headers.get("location", "").endswith("/console/")
    missing = embedded.http.get("/console/nothing.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert browser.problems == []


CONSOLE_CRYPTO = ROOT / "interfaces" / "console" / "static" / "js" / "crypto.js"
NAMING = [
    ("t1", "alice", "c-1"),
    ("clinic-1", "zoë", 'id \u007f\u2028\U0001f600\n"quoted" \\ back'),
    ("t\u00e9", "b\u00f6b", str(uuid.UUID(int=7))),
]


def test_the_console_names_a_send_exactly_as_the_service_does() -> None:
    """The AAD a page seals with names the id the service will give the send: the page's
    UUID v5 (Python's json.dumps rules included) must agree with domain/message.py."""
    executable = shutil.which("node")
    if executable is None:
        unavailable("node (Node.js 20)")
    assert executable is not None
    script = (
        f"import {{ messageIdFor }} from {json.dumps(CONSOLE_CRYPTO.as_uri())};\n"
        "const cases = JSON.parse(process.argv[1]);\n"
        "const ids = [];\n"
        "for (const c of cases) ids.push(await messageIdFor(...c));\n"
        "console.log(JSON.stringify(ids));\n"
    )
    done = subprocess.run(
        [executable, "--input-type=module", "-e", script, json.dumps(NAMING)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [str(message_id_for(*case)) for case in NAMING]
