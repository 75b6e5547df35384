"""Debian's Chromium driven by Playwright, and the console's pages as a person uses them.

Chromium comes from the distribution (``apt-get install chromium``, done by ``.ci/run``),
never from ``playwright install``. Missing, the browser tests skip on a developer's
machine and fail where services are required (CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import services_required
from tests.e2e.harness import Runtime, auth, token

CHROMIUM = Path(os.environ.get("COURIER_CHROMIUM", "/usr/bin/chromium"))
KEYGEN_MS = 180_000  # RSA-4096 in the page: seconds on a quiet machine, more on a busy one
LIVE_MS = 60_000


def browser_missing(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (COURIER_REQUIRE_SERVICES=1; `bash .ci/run` installs it)")
    pytest.skip(reason)


@dataclass
class Browser:
    """One headless Chromium; each ``page`` is a fresh context (its own storage)."""

    chromium: Any
    pages: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def _console(self, message: Any) -> None:
        # A failed request is the page's business (a 404 for a key not registered yet);
        # anything else the browser reports as an error (a CSP refusal, say) is a fault.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")

    def page(self, width: int = 1280, height: int = 900) -> Any:
        context = self.chromium.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)
        self.pages.append(page)
        return page


@contextmanager
def launched() -> Iterator[Browser]:
    """Headless Chromium for one test (the ``browser`` fixture of ``conftest.py``)."""
    if not CHROMIUM.exists():
        browser_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield Browser(chromium)
        finally:
            chromium.close()


def sign_in(page: Any, runtime: Runtime, view: str, jwt: str) -> None:
    """Open a view and paste a token into the sign-in form, as a person would."""
    page.goto(f"{runtime.base_url}/console/#/{view}")
    page.get_by_label("Token").fill(jwt)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who").get_by_text("Sign out").wait_for()


def user_token(user: str, roles: list[str] | None = None) -> str:
    return token(user, roles=roles or ["user"])


def make_key(page: Any) -> str:
    """Click "generate", wait for the key to be registered; its key id."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Generate an RSA-4096 key pair").click()
    status = page.locator("#key-status")
    expect(status).to_have_attribute("data-state", "ready", timeout=KEYGEN_MS)
    key_id: str = page.locator("#key-id").inner_text()
    return key_id


def start_direct(page: Any, other: str) -> None:
    page.get_by_label("With (user ids, comma-separated)").fill(other)
    page.get_by_role("button", name="Start").click()
    page.get_by_role("heading", name=f"Direct with {other}").wait_for()


def send(page: Any, text: str, protection: str) -> str:
    """Send in the open conversation; ``protection`` is the radio's label. The message id."""
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label(protection).check()
    page.get_by_role("button", name="Send").click()
    mine = page.locator("#thread li.mine", has_text=text)
    mine.wait_for()
    message_id: str = mine.get_attribute("data-message-id")
    return message_id


def send_over_http(runtime: Runtime, sender: str, recipient: str, content: str) -> str:
    r = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": recipient, "content": content},
        headers=auth(sender),
    )
    assert r.status_code == 202, r.text
    mid: str = r.json()["message"]["id"]
    return mid


def overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than its viewport (0: nothing scrolls sideways)."""
    extra: int = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return extra


def unlabelled(page: Any) -> list[str]:
    """Visible form controls and buttons without an accessible name."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, select, button')]
          .filter((el) => el.offsetParent !== null && el.type !== 'hidden')
          .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
          .map((el) => el.outerHTML.slice(0, 120))"""
    )
    return found
