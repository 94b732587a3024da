"""A real headless browser for HTML tests: Debian's Chromium driven by Playwright (which
downloads no browser of its own here). :func:`open_page` loads a file offline and says
what a reader would have seen go wrong: console errors, uncaught exceptions, requests
for anything outside the file, images that did not decode, charts that drew nothing."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Rendered:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    empty_charts: int = 0
    images: int = 0
    charts: int = 0
    text: str = ""
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        return (self.console_errors + self.page_errors + self.outside_requests
                + self.broken_images + [f"{self.empty_charts} empty chart(s)"] * bool(
                    self.empty_charts))


def browser(*, offline: bool) -> Iterator:
    """Debian's Chromium in a fresh profile, as a Playwright context; skipped where it is
    absent (.ci/run installs it). ``offline``: no network at all (files); else loopback
    servers are reachable and the caller refuses the rest."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 900}, offline=offline)
        yield context
        context.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    """A Chromium browser for the test module, offline. Not for the session: Playwright's
    sync API keeps an event loop running in the main thread while it is open, so any later
    module's own (another browser, asyncio.run) would be refused."""
    yield from browser(offline=True)


def open_page(context, path: Path, screenshot: Path) -> Rendered:
    """Load ``path`` (file://), wait for it, take a full-page screenshot, and report."""
    seen = Rendered(screenshot=screenshot)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and seen.console_errors.append(m.text))
    page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
    own = path.resolve().as_uri()

    def request(route):
        url = route.request.url
        if url == own or url.startswith("data:"):
            route.continue_()
        else:
            seen.outside_requests.append(url)
            route.abort()

    page.route("**/*", request)
    page.goto(own, wait_until="load")
    seen.broken_images = page.evaluate(
        "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.alt || i.src.slice(0, 40))")
    seen.images = page.evaluate("document.images.length")
    seen.charts = page.evaluate("document.querySelectorAll('svg').length")
    seen.empty_charts = page.evaluate(
        "Array.from(document.querySelectorAll('svg')).filter(s => { const b = "
        "s.getBoundingClientRect(); return b.width === 0 || b.height === 0; }).length")
    seen.text = page.inner_text("body")
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return seen
