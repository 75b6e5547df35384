"""The README's screenshots of the console, made with the real Chromium on a real server.

    .venv/bin/python -m tests.e2e.console_screenshots [OUT_DIR]   # default docs/screenshots

Starts the embedded runtime with indexing made to fail (so that the operators' view has
failed jobs to show), restarts it healthy, then lets two users talk, an operator look at
the queues and an auditor at a message's trail, and saves one PNG per view (and the
messaging view at a phone's width).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import expect, sync_playwright

from tests.e2e.browser import (
    CHROMIUM,
    KEYGEN_MS,
    LIVE_MS,
    Browser,
    send,
    send_over_http,
    sign_in,
    start_direct,
    user_token,
)
from tests.e2e.conftest import FAST
from tests.e2e.harness import ROOT, Runtime, auth, wait_for
from tests.e2e.sealing import restart

FAILING = {
    "FAULT_INJECT": "MESSAGE_INDEXING:always",
    "QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS": "2",
    "QUEUE_MESSAGE_INDEXING_BACKOFF_SECONDS": "0.2",
}


def failed_jobs(runtime: Runtime) -> int:
    answer = runtime.http.get(
        "/api/messages/queue/MESSAGE_INDEXING/failed", headers=auth("ops-1", roles=["admin"])
    )
    total: int = answer.json()["total"]
    return total


def messaging(browser: Browser, runtime: Runtime) -> tuple[Any, Any, str]:
    alice, bob = browser.page(), browser.page()
    sign_in(alice, runtime, "messages", user_token("alice"))
    sign_in(bob, runtime, "messages", user_token("bob"))
    for page in (alice, bob):
        page.get_by_role("button", name="Generate an RSA-4096 key pair").click()
    for page in (alice, bob):
        expect(page.locator("#key-status")).to_have_attribute(
            "data-state", "ready", timeout=KEYGEN_MS
        )
    start_direct(alice, "bob")
    sealed = send(alice, "Potassium 6.1 on bed 4: please call me", "End to end (sealed here)")
    send(alice, "Family meeting moved to 3 pm", "Encrypted by the service")
    bob.get_by_role("button", name="Direct with alice").click()
    bob.locator("#thread li.theirs .tag.ok").nth(1).wait_for(timeout=LIVE_MS)
    send(bob, "On my way, 5 minutes", "Plain")
    for item in alice.locator("#thread li.mine").all():
        expect(item).to_have_attribute("data-status", "delivered", timeout=LIVE_MS)
        expect(item.locator('[data-stage="indexed"]')).to_have_class("done", timeout=LIVE_MS)
    alice.locator("#thread li.theirs").wait_for(timeout=LIVE_MS)
    return alice, bob, sealed


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        env = {**FAST, **FAILING, "COURIER_DATA_DIR": str(Path(scratch) / "var")}
        runtime = Runtime("embedded", env, Path(scratch)).start()
        try:
            for n in range(2):
                send_over_http(runtime, "carol", "dan", f"ward round note {n}")
            wait_for(lambda: failed_jobs(runtime) == 2, 60, "two failed indexing jobs")
            restart(runtime, "serve", FAULT_INJECT="")
            with sync_playwright() as playwright:
                chromium = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
                )
                browser = Browser(chromium)
                alice, bob, sealed = messaging(browser, runtime)
                alice.screenshot(path=str(out / "messaging.png"), full_page=True)
                bob.set_viewport_size({"width": 390, "height": 844})
                bob.locator("#conv-list-title").scroll_into_view_if_needed()
                bob.screenshot(path=str(out / "messaging-phone.png"), full_page=True)

                ops = browser.page()
                sign_in(ops, runtime, "operators", user_token("ops-1", ["admin"]))
                trace = ops.locator('[data-queue="MESSAGE_DELIVERY"] polyline')

                def readings() -> int:
                    return len((trace.get_attribute("points") or "").split())

                for burst in (3, 6, 2, 8, 4, 1, 5, 7, 3, 2, 6, 4, 0, 2):  # for the sparklines
                    seen = readings()
                    for n in range(burst):
                        send_over_http(runtime, f"nurse-{n % 4}", "dr-lee", f"bed {n} checked")
                    wait_for(lambda s=seen: readings() > s, 60, "the next reading")
                ops.locator("#failed-rows tr").nth(1).wait_for(timeout=LIVE_MS)
                ops.screenshot(path=str(out / "operators.png"), full_page=True)

                auditor = browser.page()
                sign_in(auditor, runtime, "audit", user_token("audit-1", ["auditor"]))
                auditor.get_by_role("button", name="Verify the chain").click()
                auditor.locator("[data-verdict]").wait_for(timeout=LIVE_MS)
                auditor.get_by_label("Message id").fill(sealed)
                auditor.get_by_role("button", name="Show the trail", exact=True).click()
                auditor.locator('#timeline li[data-type="Viewed"]').first.wait_for(timeout=LIVE_MS)
                auditor.evaluate("window.scrollTo(0, 0)")
                auditor.screenshot(path=str(out / "auditors.png"), full_page=True)
                chromium.close()
                if browser.problems:
                    raise SystemExit("the pages reported problems: " + "; ".join(browser.problems))
        finally:
            runtime.stop()
    for name in ("operators", "auditors", "messaging", "messaging-phone"):
        print(out / f"{name}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
