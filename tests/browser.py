"""Headless Chromium for the playground's tests: Debian's chromium driven by Playwright (Playwright's own browser
download cannot work offline). Skips the importing module when either is missing.

`Page` records every console error or warning, uncaught exception and HTTP error response of its tab, so a test
can assert that a screen worked with nothing going wrong; `shot` saves a screenshot under
$LLMFORGE_TEST_ARTIFACTS (default: build/test-artifacts)/playground.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)
# As the machine notes say: without the background-networking flags Chromium keeps dialling out (refused here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("LLMFORGE_TEST_ARTIFACTS", "build/test-artifacts")) / "playground"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module", name="browser")
def chromium_browser() -> Iterator[Any]:
    """Import it into a test module to use `browser` there."""
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A fresh browser tab on the playground, recording every console error and uncaught exception."""

    def __init__(self, browser: Any, url: str) -> None:
        self.tab = browser.new_page(viewport={"width": 1280, "height": 900})
        self.tab.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.tab.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
        self.tab.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.tab.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                    if r.status >= 400 else None)
        self.tab.goto(url + "/ui/")

    def use_key(self, key: str) -> None:
        self.tab.fill("#api-key", key)
        self.tab.click("button:has-text('Use key')")

    def wait_until(self, predicate: str, arg: Any = None, timeout_s: float = TIMEOUT_MS / 1000) -> None:
        """Poll a JS function until it returns true (the page's CSP forbids eval, which wait_for_function needs)."""
        deadline = time.monotonic() + timeout_s
        while not self.tab.evaluate(predicate, arg):
            assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
            time.sleep(0.05)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
