"""Browser tests: the reference host served on loopback, driven by Playwright in Debian's
chromium, with a real SMTP server (aiosmtpd) on loopback receiving the outbox's mails.

Every test that takes ``page`` runs twice: desktop (1280x800) and phone (375x812).
Screenshots land in ``artifacts/browser/`` at the repository root (ignored by git).
The browser tests run on SQLite only: the database backends are covered elsewhere.
"""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright
from smtp_server import Collector
from werkzeug.serving import make_server

from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.outbox import SmtpTransport, deliver_due

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Sandboxed iframes (the admin's HTML mail previews) in the page's own process: otherwise
    # full-page screenshots show them blank although they render on screen.
    "--disable-features=IsolateSandboxedIframes",
]
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 812}}
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


# --------------------------------------------------------------------------- database


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only here (overrides the SQLite + PostgreSQL parametrised fixture)."""
    return f"sqlite:///{tmp_path / 'crm.sqlite3'}"


# --------------------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str | None
    sender: str = ""

    @classmethod
    def parse(cls, raw: bytes) -> Mail:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        plain = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert plain is not None
        return cls(
            to=str(message["To"]),
            subject=str(message["Subject"]),
            text=str(plain.get_content()).replace("\r\n", "\n"),
            html=None if html is None else str(html.get_content()),
            sender=str(message["From"]),
        )


# --------------------------------------------------------------------------- live host


class _Dispatcher:
    """WSGI app whose target is set once the host (which needs the server's URL) exists."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@dataclass
class Live:
    """The reference host served on loopback, its clock, and its mail delivered over SMTP."""

    url: str
    host: Any
    clock: Any
    smtp_port: int
    collector: Collector
    _seen: int = field(default=0)

    def deliver(self) -> list[Mail]:
        """Run the outbox once over real SMTP; the mails received since the last call."""
        transport = SmtpTransport("127.0.0.1", self.smtp_port, timeout=10)
        report = deliver_due(
            self.host.engine, transport, self.host.now(), self.host.config.mail_sender
        )
        assert report.failed == 0, report
        with self.collector.lock:
            fresh = [envelope.content for envelope in self.collector.envelopes[self._seen :]]
            self._seen = len(self.collector.envelopes)
        return [Mail.parse(raw) for raw in fresh]


@pytest.fixture
def live(
    host_factory: Callable[..., Any], clock: Any, smtp: tuple[int, Collector]
) -> Iterator[Live]:
    dispatcher = _Dispatcher()
    server = make_server("127.0.0.1", 0, dispatcher, threaded=True)
    url = f"http://127.0.0.1:{server.port}"
    host = host_factory(base_url=url)
    dispatcher.app = create_app(host)
    thread = threading.Thread(target=server.serve_forever, name="live-host", daemon=True)
    thread.start()
    try:
        yield Live(url=url, host=host, clock=clock, smtp_port=smtp[0], collector=smtp[1])
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium "
            "(apt-get install chromium; .ci/run does it)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(params=list(VIEWPORTS))
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_page(browser: Any, live: Live, device: str) -> Iterator[Callable[[], Any]]:
    """Opens a page in a fresh browser context (its own cookies) at the test's width."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = browser.new_context(
            viewport=VIEWPORTS[device],
            base_url=live.url,
            locale="fr-FR",
            is_mobile=device == "phone",
            has_touch=device == "phone",
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[[], Any]) -> Any:
    return new_page()


@pytest.fixture
def shoot(request: pytest.FixtureRequest, device: str) -> Callable[[Any, str], None]:
    """``shoot(page, "step")``: a full-page screenshot into artifacts/browser/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"^test_", "", request.node.originalname)

    def take(page: Any, step: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{test}--{step}--{device}.png"), full_page=True)

    return take


@pytest.fixture(scope="session")
def axe() -> Any:
    return Axe()


# Errors tied to their field: each invalid field names, in aria-describedby, a visible
# element with text (the message next to it or in the summary).
UNTIED_ERRORS = """() => [...document.querySelectorAll('[aria-invalid="true"]')].filter(field => {
  const ids = (field.getAttribute('aria-describedby') || '').split(/\\s+/).filter(Boolean);
  return !ids.some(id => { const el = document.getElementById(id);
    return el && el.offsetParent !== null && el.textContent.trim(); });
}).map(field => field.id || field.name)"""


@pytest.fixture
def check_a11y(axe: Any, device: str) -> Callable[[Any], None]:
    """axe-core finds no WCAG 2.0/2.1 A or AA violation on the page, every invalid field is
    tied to its message, and nothing is wider than the viewport."""

    def check(page: Any) -> None:
        options = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
        results = axe.run(page, options=options)
        violations = results.response["violations"]
        details = "\n".join(
            f"{v['id']} ({v['impact']}): {v['help']}\n"
            + "\n".join(f"    {node['target']}: {node['failureSummary']}" for node in v["nodes"])
            for v in violations
        )
        assert not violations, f"axe violations on {page.url}:\n{details}"
        assert page.evaluate(UNTIED_ERRORS) == [], f"errors not tied to their field on {page.url}"
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{page.url} is {overflow}px wider than the {device} viewport"

    return check
