"""The integrator's guide lists the variable names the plugin's pages put in their context
("Layout" in docs/integrating.md), so that a host's ``layout_context`` avoids them. This test
renders every plugin page and state through the reference host and fails when a page uses a
name the guide doesn't list."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN, login, post, through_proposal
from lookup_helpers import EMAIL, deposit, token_of

from opencrm_horscompte.base import i18n, rendering
from opencrm_horscompte.hookspecs.host import Request
from opencrm_horscompte.settings.schema import Settings

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "integrating.md"


def documented_names() -> set[str]:
    text = GUIDE.read_text("utf-8")
    section = text.partition("\n### Layout\n")[2].partition("\n## ")[0]
    block = re.search(r"^```text\n(?P<names>.*?)^```$", section, re.M | re.S)
    assert block, "docs/integrating.md: no ```text block of names under '### Layout'"
    return set(block["names"].split())


@pytest.fixture
def page_names(monkeypatch: pytest.MonkeyPatch, host: Any) -> set[str]:
    """Every name a plugin page's context held (``render_page`` merges the layout context,
    ``request`` and the page's own variables, then localizes them)."""
    seen: set[str] = set()
    localized = i18n.localized  # what rendering imports and calls as ``localized``

    def recording(context: Mapping[str, Any], locale: str) -> dict[str, Any]:
        if "request" in context:  # a page, not a mail part or a fragment
            seen.update(context)
        return localized(context, locale)

    monkeypatch.setattr(rendering, "localized", recording)
    return seen


def admin_form(**changes: Any) -> dict[str, str]:
    values = Settings.defaults().replace(**changes).as_dict()
    form = {key: str(value) for key, value in values.items() if not isinstance(value, bool)}
    form.update({key: "on" for key, value in values.items() if value is True})
    return form


def test_the_guide_lists_every_name_the_plugin_pages_use(
    client: Any, host: Any, page_names: set[str]
) -> None:
    deposited = deposit(client, host)
    # lookup: empty form, errors, the validation page, a wrong code, a resend too soon
    assert client.get("/hors-compte/suivi").status_code == 200
    assert post(client, "/hors-compte/suivi", {"email": "x", "tracking_code": ""}).status_code
    typed = {"email": EMAIL, "tracking_code": deposited.code}
    page = post(client, "/hors-compte/suivi", typed, follow_redirects=True)
    token = token_of(page.text)
    post(client, "/hors-compte/validation", {"token": token, "code": "000000"})
    post(client, "/hors-compte/validation", {"token": token, "code": "", "action": "resend"})
    # "code oublié": form, error, sent
    client.get("/hors-compte/code-oublie")
    post(client, "/hors-compte/code-oublie", {"email": "pas une adresse"})
    post(client, "/hors-compte/code-oublie", {"email": EMAIL}, follow_redirects=True)
    # identity step: the proposal, then an expired decline link
    start = "/demarches/signalement-voirie/nouveau"
    identity = {"last_name": "Martin", "first_name": "Camille", "email": CITIZEN[0]}
    assert through_proposal(client, post(client, start, identity)).status_code == 200
    post(client, "/hors-compte/identite/continuer", {"token": "expiré"})
    # the admin page: view, preview, refused values
    login(client, ADMIN)
    client.get("/admin/hors-compte")
    post(client, "/admin/hors-compte", {**admin_form(), "action": "preview"})
    post(client, "/admin/hors-compte", {**admin_form(), "tracking_code_length": "99"})

    layout = set(host.layout_context(Request("GET", "/")))
    used = page_names - layout
    assert {"request", "values", "errors", "token", "decline_token", "history"} <= used
    assert used - documented_names() == set(), "add these names to docs/integrating.md"
