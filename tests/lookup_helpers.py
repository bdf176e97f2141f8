"""Test helpers shared by the HTTP tests of the reference host: deposit a dossier through
its pages, read rows and mails, find the validation code in a mail, drive the lookup
(``/hors-compte/suivi`` and what follows). One copy of each, for every test module."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

from conftest import ADMIN, post
from sqlalchemy import func
from sqlmodel import Session, SQLModel, col, select

from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import load_settings, save_settings

Row = TypeVar("Row", bound=SQLModel)

LOOKUP = "/hors-compte/suivi"
VALIDATE = "/hors-compte/validation"
FORGOTTEN = "/hors-compte/code-oublie"
EMAIL = "lea.dupont@exemple.fr"
STRANGER = "personne.inconnue@exemple.fr"
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi."}

# A validation code stands alone on its line (indented) in the default template and in the
# test ones; a grouped tracking code has dashes, so it never matches.
CODE_LINE = re.compile(r"^[ \t]*(\d{6,14})[ \t]*\r?$", re.MULTILINE)
_HIDDEN_VALUE = re.compile(r'(<input type="hidden" name="[^"]+" value=")[^"]*(")')


@dataclass(frozen=True)
class Deposited:
    dossier_id: int
    code: str  # as stored, no separators
    email: str  # as stored on the dossier
    receipt: Any  # the receipt page the deposit led to


def deposit(
    client: Any,
    host: Any,
    email: str = EMAIL,
    slug: str = "signalement-voirie",
    first_name: str = "Léa",
) -> Deposited:
    """Deposit a dossier without an account through the host's pages (identity screen, form,
    receipt); its tracking code as stored."""
    start = f"/demarches/{slug}/nouveau"
    assert client.get(start).status_code == 200
    identity = {"last_name": "Dupont", "first_name": first_name, "email": email}
    response = post(client, start, identity)
    assert response.status_code == 303, response.text
    form_url = response.headers["Location"]
    response = post(client, form_url, {**ANSWERS, "action": "deposit"})
    assert response.status_code == 303, response.text
    receipt = client.get(response.headers["Location"])
    draft_key = form_url.rsplit("/", 1)[-1]
    with Session(host.engine) as session:
        dossier = session.exec(select(Dossier).where(Dossier.draft_key == draft_key)).one()
        assert dossier.id is not None
        row = session.get(TrackingCode, dossier.id)
        assert row is not None
        return Deposited(dossier.id, row.code, row.email, receipt)


def rows(host: Any, model: type[Row]) -> list[Row]:
    with Session(host.engine) as session:
        return list(session.exec(select(model)))


def count(host: Any, model: Any) -> int:
    with Session(host.engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def counts(host: Any, *models: Any) -> dict[str, int]:
    return {model.__name__: count(host, model) for model in models}


def mails(host: Any) -> list[OutboxMail]:
    with Session(host.engine) as session:
        return list(session.exec(select(OutboxMail).order_by(col(OutboxMail.id))))


def validation_mails(host: Any) -> list[OutboxMail]:
    return [mail for mail in mails(host) if CODE_LINE.search(mail.text)]


def code_in(text: str) -> str:
    match = CODE_LINE.search(text)
    assert match, text
    return match.group(1)


def last_code(host: Any) -> str:
    sent = validation_mails(host)
    assert sent, "no validation mail queued"
    return code_in(sent[-1].text)


def wrong(code: str) -> str:
    """A code of the same length that is certainly not ``code``."""
    return "".join(str((int(digit) + 1) % 10) for digit in code)


def found(pattern: str, page: str) -> str:
    """The first group of ``pattern``'s first match in ``page``, which must have one."""
    match = re.search(pattern, page)
    assert match, page
    return match.group(1)


def token_of(page: str) -> str:
    """The signed token of the page's form (hidden ``token`` input)."""
    return found(r'name="token" value="([^"]+)"', page)


def accept_login_url(page: str) -> str:
    """The identity step's "log in and continue" link, as written in the page (``&amp;``)."""
    return found(r'href="([^"]+)" data-testid="accept-login"', page)


# The validation page repeats the address typed, masked (l***@exemple.fr): a function of
# what the visitor typed only, never of what matched.
_MASKED_ADDRESS = re.compile(r"\S\*\*\*@[^\s<]+")


def without_hidden_values(page: str) -> str:
    """The page with the values of its hidden inputs (CSRF, signed token) blanked, and
    the masked address typed (the same whatever matched) replaced by a placeholder."""
    return _MASKED_ADDRESS.sub("x***@typed", _HIDDEN_VALUE.sub(r"\1\2", page))


def lookup(client: Any, email: str, tracking_code: str) -> Any:
    """The lookup's POST, and the code entry page it redirects to (post/redirect/get)."""
    typed = {"email": email, "tracking_code": tracking_code}
    return post(client, LOOKUP, typed, follow_redirects=True)


def start(client: Any, email: str, tracking_code: str) -> str:
    """Look a dossier up; the validation page's token."""
    response = lookup(client, email, tracking_code)
    assert response.status_code == 200, response.text
    return token_of(response.text)


def submit(client: Any, token: str, code: str) -> Any:
    return post(client, VALIDATE, {"token": token, "code": code, "action": "verify"})


def resend(client: Any, token: str) -> Any:
    typed = {"token": token, "code": "", "action": "resend"}
    return post(client, VALIDATE, typed, follow_redirects=True)


def change_settings(host: Any, **changes: Any) -> None:
    with Session(host.engine) as session, session.begin():
        current = load_settings(session)
        save_settings(host, session, current.replace(**changes), actor=ADMIN[0])


def default_settings(**changes: Any) -> Settings:
    return Settings.defaults().replace(**changes)
