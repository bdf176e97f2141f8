"""Issue 12 over HTTP: times in the host's zone, plural forms, the lookup hint from the policy,
account dossiers without tracking code, signed and styled mails, one vocabulary. In French
and in English; the browser tests check the same points on screen."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from babel.messages.pofile import read_po
from conftest import ADMIN, CITIZEN, login, post
from lookup_helpers import (
    EMAIL,
    LOOKUP,
    change_settings,
    deposit,
    mails,
    start,
    submit,
    token_of,
    validation_mails,
    wrong,
)
from sqlmodel import Session, select

from opencrm_horscompte.base.emails import mask_email
from opencrm_horscompte.base.hostinfo import host_timezone, moment, service_contact, service_name
from opencrm_horscompte.base.i18n import NP_, translate, translations
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.host_kit.refhost.outbox import build_email
from opencrm_horscompte.lookup.pages import _duration
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.strength import readable_duration
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    example_tracking_code,
    format_tracking_code,
)

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "opencrm_horscompte" / "locale"
OLD_HINT = "ABCD-EFGH-JK"
# The test clock starts at 2026-11-28 09:00 UTC: 10:00 in Paris (winter time).
DEPOSITED_AT = {"fr": "28 novembre 2026 à 10:00", "en": "November 28, 2026 at 10:00\u202fAM"}
NO_LONGER = re.compile(r"UTC|\b1 minutes\b|\b1 chiffres\b|\b1 digits\b|ABCD-EFGH-JK")

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def speak(client: Any, locale: str) -> None:
    client.get(f"/langue/{locale}?suivant=/")


def no_stale_strings(text: str) -> None:
    found = NO_LONGER.findall(text)
    assert not found, found


@SQLITE
@pytest.mark.parametrize("locale", ["fr", "en"])
def test_receipt_dates_in_the_hosts_time_zone(client: Any, host: Any, locale: str) -> None:
    speak(client, locale)
    deposited = deposit(client, host)
    with Session(host.engine) as session:
        dossier = session.get(Dossier, deposited.dossier_id)
        assert dossier is not None
    receipt = client.get(f"/brouillons/{dossier.draft_key}/recu").text
    assert DEPOSITED_AT[locale] in receipt
    assert f'data-testid="dossier-number">{dossier.id}<' in receipt
    no_stale_strings(receipt)
    [ack] = mails(host)
    for part in (ack.subject, ack.text, ack.html or ""):
        no_stale_strings(part)
    assert DEPOSITED_AT[locale] in ack.text and dossier.demarche_title in ack.text
    assert str(dossier.id) in ack.text and format_tracking_code(deposited.code) in ack.text


@SQLITE
@pytest.mark.parametrize("locale", ["fr", "en"])
def test_one_minute_is_singular_in_page_mail_and_preview(
    client: Any, host: Any, locale: str
) -> None:
    change_settings(host, validation_code_expiry_minutes=1)
    speak(client, locale)
    deposited = deposit(client, host)
    typed = {"email": EMAIL, "tracking_code": deposited.code}
    page = post(client, LOOKUP, typed, follow_redirects=True).text
    minute = translations(locale).ngettext(
        "Il expire dans %(num)s minute. Pensez à vérifier vos courriers indésirables.",
        "Il expire dans %(num)s minutes. Pensez à vérifier vos courriers indésirables.",
        1,
    ) % {"num": 1}
    assert minute in page
    no_stale_strings(page)
    [mail] = validation_mails(host)
    no_stale_strings(mail.text)
    no_stale_strings(mail.html or "")
    login(client, ADMIN)
    speak(client, locale)
    admin = client.get("/admin/hors-compte").text
    no_stale_strings(admin)


@SQLITE
@pytest.mark.parametrize("locale", ["fr", "en"])
def test_lookup_hint_follows_the_policy(client: Any, host: Any, locale: str) -> None:
    speak(client, locale)
    page = client.get(LOOKUP).text
    policy = CodePolicy.from_settings(Settings.defaults())
    default = format_tracking_code(example_tracking_code(policy))
    assert default in page and OLD_HINT not in page
    assert translations(locale).gettext("Respectez les majuscules et les minuscules.") in page
    field = re.search(r'<input type="text" id="tracking_code"[^>]*>', page)
    assert field is not None
    for attribute in ('autocapitalize="off"', 'spellcheck="false"', 'autocomplete="off"'):
        assert attribute in field.group(0)
    assert 'class="code-input"' in field.group(0)

    change_settings(host, tracking_code_length=16, tracking_code_uppercase=False,
                    tracking_code_lowercase=False, tracking_code_special=False)  # fmt: skip
    page = client.get(LOOKUP).text
    digits = CodePolicy(16, True, False, False, False, True)
    assert format_tracking_code(example_tracking_code(digits)) in page
    assert re.search(r"\d{4}-\d{4}-\d{4}-\d{4}", page)
    assert translations(locale).gettext("Majuscules ou minuscules : peu importe.") in page


@SQLITE
def test_an_accounts_dossier_gets_no_tracking_code(client: Any, host: Any) -> None:
    login(client, CITIZEN)
    start_url = "/demarches/signalement-voirie/nouveau"
    identity = {"last_name": "Martin", "first_name": "Camille", "email": CITIZEN[0]}
    form_url = post(client, start_url, identity).headers["Location"]
    receipt_url = post(client, form_url, {"subject": "Nid-de-poule", "action": "deposit"})
    receipt = client.get(receipt_url.headers["Location"]).text
    with Session(host.engine) as session:
        dossier = session.exec(select(Dossier)).one()
        assert dossier.account_id is not None
        assert session.exec(select(TrackingCode)).first() is None
    assert 'data-testid="tracking-code"' not in receipt
    assert "Mon espace" in receipt and f'href="/dossiers/{dossier.id}"' in receipt
    assert "Pour suivre votre dossier sans compte" not in receipt
    [ack] = mails(host)
    assert "code de suivi" not in ack.text.replace("sans code de suivi", "")
    assert f"/dossiers/{dossier.id}" in ack.text and "Mon espace" in ack.text
    # The "lost code" mail lists no account dossier: nothing is queued for this address.
    post(client, "/hors-compte/code-oublie", {"email": CITIZEN[0]})
    assert len(mails(host)) == 1


@SQLITE
@pytest.mark.parametrize("locale", ["fr", "en"])
def test_mails_are_signed_styled_and_in_the_right_language(
    client: Any, host: Any, locale: str
) -> None:
    speak(client, locale)
    deposited = deposit(client, host)
    token = start(client, EMAIL, deposited.code)
    [ack, validation] = mails(host)
    for mail in (ack, validation):
        assert f'<html lang="{locale}">' in (mail.html or "")
        assert "font-family:Arial" in (mail.html or "")  # sans-serif, inline styles
        assert host.config.site_name in mail.text and host.config.service_contact in mail.text
        assert host.config.site_name in (mail.html or "")
        assert not mail.text.rstrip().splitlines()[-1].startswith("http")
        message = build_email(mail, host.config.mail_sender)
        assert message["From"].addresses[0].display_name == host.config.site_name
    assert "monospace" in (ack.html or "")
    assert format_tracking_code(deposited.code) in (ack.html or "")
    # The validation page: masked address typed, the configured number of digits.
    page = submit(client, token, wrong("123456")).text
    assert mask_email(EMAIL) == "l***@exemple.fr" and "l***@exemple.fr" in page
    digits = translations(locale).ngettext("Le code fait %(num)s chiffre.", "x", 6)
    assert digits.split("%")[0] in page and "6" in page
    assert 'id="erreurs"' in page and "autofocus" in page
    assert token_of(page)


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_plural_messages_with_0_1_2_and_5(locale: str) -> None:
    """Every catalog entry that takes a count renders for 0, 1, 2 and 5, with the locale's
    rule (French: singular for 0 and 1; English: for 1 only)."""
    with (LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    plurals = [message for message in catalog if message.id and message.pluralizable]
    assert len(plurals) >= 8
    catalog_translations = translations(locale)
    for message in plurals:
        # a pluralizable message: its id is (singular, plural), its string one per form
        singular, plural = cast(tuple[str, str], message.id)
        forms = cast(Sequence[str], message.string)
        names = set(re.findall(r"%\((\w+)\)s", singular))
        for n in (0, 1, 2, 5):
            text = catalog_translations.ngettext(singular, plural, n)
            values = {name: "x" for name in names} | {"num": n, "count": n}
            rendered = text % values
            plural_form = n > 1 if locale == "fr" else n != 1
            expected = forms[1 if plural_form else 0]
            assert text == expected, (message.id, n)
            assert str(n) in rendered, rendered
    singular_counts = {"fr": (0, 1), "en": (1,)}[locale]
    for n in (0, 1, 2, 5):
        minutes = translate(NP_("%(count)s minute", "%(count)s minutes", n), locale)
        assert minutes == f"{n} minute" + ("" if n in singular_counts else "s")
    assert translate(readable_duration(24 * 5), locale).endswith(("5 jours", "5 days"))
    assert translate(_duration(100), "fr") == "2 minutes"
    assert translate(_duration(100), "en") == "2 minutes"
    assert translate(_duration(0.5), "fr") == "1 seconde"


GLOSSARY = {
    # banned variant: the term to use instead
    r"\be-?mails?\b": "courriel / adresse électronique",
    r"\bmails?\b": "courriel",
    r"\badresse (?:de )?courriel\b": "adresse électronique",
    r"\bhors[- ]compte\b": "sans compte",
    r"\bcourriers? électroniques?\b": "courriel",
}


def test_french_catalog_follows_the_glossary() -> None:
    with (LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="fr")
    problems = []
    for message in catalog:
        if not message.id:
            continue
        texts = cast(
            Sequence[str | None], message.string if message.pluralizable else (message.string,)
        )
        for text in texts:
            visible = re.sub(r"%\(\w+\)s", "", text or "")
            for banned, instead in GLOSSARY.items():
                if re.search(banned, visible, re.IGNORECASE):
                    problems.append(f"{visible!r}: use {instead}")
    assert problems == []
    email_fields = [m for m in catalog if m.id == "Adresse électronique"]
    assert email_fields and any(m.id == "Format attendu : nom@domaine.fr" for m in catalog)


def test_hosts_of_the_earlier_contract_get_the_defaults() -> None:
    """The Host attributes added for issue 12 are optional: read with their defaults."""
    older = SimpleNamespace()
    assert host_timezone(older) == ZoneInfo("Europe/Paris")
    assert service_name(older) == "Votre mairie" and service_contact(older) == ""
    assert host_timezone(SimpleNamespace(timezone="Mars/Olympus")) == ZoneInfo("Europe/Paris")
    overseas = SimpleNamespace(timezone="Indian/Reunion")  # UTC+4, no summer time
    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert translate(moment(overseas, at), "fr") == "28 novembre 2026 à 13:00"
    assert translate(moment(older, at, "date"), "en") == "November 28, 2026"


@SQLITE
@pytest.mark.parametrize(
    ("locale", "opening", "closing"), [("fr", "(déposé le ", ") :"), ("en", "(submitted on ", "):")]
)
def test_tracking_code_list_punctuated_in_its_language(
    client: Any, host: Any, locale: str, opening: str, closing: str
) -> None:
    """The English list read "(submitted on December 3, 2026) : CODE", a French space."""
    speak(client, locale)
    deposited = deposit(client, host)
    post(client, "/hors-compte/code-oublie", {"email": EMAIL})
    [mail] = [m for m in mails(host) if format_tracking_code(deposited.code) in m.text][-1:]
    with Session(host.engine) as session:
        tracking = session.get(TrackingCode, deposited.dossier_id)
    assert tracking is not None
    day = translate(moment(host, tracking.issued_at, "date"), locale)
    line = f"{opening}{day}{closing} {format_tracking_code(deposited.code)}"
    assert line in mail.text


def test_the_language_switch_and_the_login_come_back_with_the_query(client: Any) -> None:
    """Both came back to the path alone: the statistics by week switched back to days, and
    the agent page's dossier number was lost (outside experience finding)."""
    login(client, ADMIN)
    weeks = "/admin/hors-compte/statistiques?periode=semaines"
    page = client.get(weeks).text
    switches = set(re.findall(r'href="(/langue/en\?suivant=[^"]+)"', page))  # every menu
    [switch] = switches
    back = client.get(switch.replace("&amp;", "&"))
    assert back.status_code == 303 and back.headers["Location"] == weeks
    on_a_form = post(client, "/admin/hors-compte", {"action": "preview"}).text
    assert 'href="/langue/fr?suivant=/admin/hors-compte"' in on_a_form  # a POST: its path

    anonymous = client.application.test_client()
    asked = "/admin/hors-compte/assistance?dossier=3"
    response = anonymous.get(asked)
    assert response.status_code == 302
    assert (
        response.headers["Location"]
        == "/connexion?suivant=%2Fadmin%2Fhors-compte%2Fassistance%3Fdossier%3D3"
    )
