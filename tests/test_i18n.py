"""French (source) and English for every page and mail, chosen from the host's locale."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import post

from opencrm_horscompte.base.i18n import N_, Number, supported, translate, translations

ROOT = Path(__file__).resolve().parent.parent


def _catalogs_script() -> Any:
    spec = importlib.util.spec_from_file_location("catalogs", ROOT / "scripts" / "catalogs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


catalogs = _catalogs_script()


# The catalogs hold well over a hundred strings: a loop over an empty or unreadable catalog
# (a wrong path, an extraction that finds nothing) must fail, not pass having checked nothing.
MIN_MESSAGES = 100


def translated_messages(locale: str) -> list[Any]:
    """The entries of ``locale``'s catalog that have an id and a translation (never few)."""
    messages = [message for message in catalogs.load(locale) if message.id and message.string]
    assert len(messages) >= MIN_MESSAGES, f"only {len(messages)} translated entries in {locale}"
    return messages


def test_both_catalogs_are_checked() -> None:
    """The parametrised tests below would run for no locale at all on an empty list."""
    assert set(catalogs.LOCALES) == {"fr", "en"}


@pytest.mark.parametrize("locale", catalogs.LOCALES)
def test_every_user_facing_string_is_in_the_catalog(locale: str) -> None:
    """Fails when a string shown to a user (template, N_() message, plugin.toml label) is
    missing from a catalog or, in English, untranslated: run scripts/catalogs.py."""
    extracted = catalogs.extract()
    assert len(extracted) >= MIN_MESSAGES, f"extraction found only {len(extracted)} strings"
    assert catalogs.missing(extracted, locale) == []


def test_extraction_reads_every_template_that_has_text() -> None:
    """A template moved out of the extractor's paths would silently leave the catalogs."""
    extracted = {location for message in catalogs.extract() for location, _ in message.locations}
    templates = [
        path
        for path in ROOT.glob("**/templates/**/*")
        if path.suffix in (".html", ".txt")
        and ".venv" not in path.parts
        and "examples" not in path.parts
        and re.search(r"\b_\(|\{% trans", path.read_text("utf-8"))
    ]
    assert len(templates) > 10
    for path in templates:
        assert str(path.relative_to(ROOT)) in extracted, path


def test_compiled_catalogs_match_their_sources() -> None:
    for message in translated_messages("en"):
        if message.pluralizable:
            singular, plural = message.id
            compiled = tuple(translations("en").ngettext(singular, plural, n) for n in (1, 2))
            assert compiled == tuple(message.string), message.id
        else:
            assert translations("en").gettext(message.id) == message.string, message.id


def test_placeholders_survive_translation() -> None:
    for message in translated_messages("en"):
        ids = message.id if message.pluralizable else (message.id,)
        strings = message.string if message.pluralizable else (message.string,)
        names = sorted(re.findall(r"%\((\w+)\)s", ids[0]))
        for text in strings:
            assert sorted(re.findall(r"%\((\w+)\)s", text)) == names, message.id


def test_locale_fallback_and_number_formats() -> None:
    assert supported("en-GB") == "en" and supported("de") == "fr" and supported(None) == "fr"
    # Babel (CLDR): French groups thousands with a narrow no-break space.
    assert Number(3500).format("fr") == "3\u202f500" and Number(3500).format("en") == "3,500"
    assert Number(85.04, 1).format("fr") == "85,0" and Number(85.04, 1).format("en") == "85.0"
    assert Number(1.5).format("fr") == "1,5" and Number(1.5).format("en") == "1.5"
    message = N_("La valeur doit être comprise entre %(min)s et %(max)s.", min=8, max=16)
    assert translate(message, "fr") == "La valeur doit être comprise entre 8 et 16."
    english = translate(message, "en")
    assert "8" in english and "16" in english and english != translate(message, "fr")


def test_pages_follow_the_browser_language_and_the_switcher(client: Any) -> None:
    french = client.get("/hors-compte/suivi")
    assert '<html lang="fr">' in french.text and "Suivre un dossier" in french.text
    english = client.get("/hors-compte/suivi", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert '<html lang="en">' in english.text and "Suivre un dossier" not in english.text
    client.get("/langue/en?suivant=/")
    assert '<html lang="en">' in client.get("/").text
    client.get("/langue/fr?suivant=/")
    assert '<html lang="fr">' in client.get("/").text


def test_errors_and_mails_are_in_the_citizens_language(client: Any, host: Any) -> None:
    from sqlmodel import Session, select

    from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail

    client.get("/langue/en?suivant=/")
    start = "/demarches/signalement-voirie/nouveau"
    client.get(start)
    bad = post(client, start, {"last_name": "", "first_name": "Lea", "email": "x"})
    assert bad.status_code == 400 and "Saisissez" not in bad.text
    identity = {"last_name": "Doe", "first_name": "Jane", "email": "jane.doe@example.org"}
    form_url = post(client, start, identity).headers["Location"]
    receipt = post(client, form_url, {"subject": "Broken street light", "action": "deposit"})
    receipt_page = client.get(receipt.headers["Location"]).text
    assert translations("fr").gettext("Votre code de suivi") not in receipt_page
    assert translations("en").gettext("Votre code de suivi") in receipt_page
    with Session(host.engine) as session:
        [mail] = session.exec(select(OutboxMail))
    french = translations("fr").gettext("Bonjour,")
    assert french not in mail.text and translations("en").gettext("Bonjour,") in mail.text
