"""Claiming a dossier later over HTTP: "Rattacher un dossier" in "Mon espace", the
tracking code, a validation code mailed to the dossier's address, then the host attaches
it. Refused: a wrong code, another address's dossier, a second time; audited; absent from a
host without ``attach_dossier``."""

from __future__ import annotations

import json
import re
from typing import Any

from conftest import ADMIN, CITIZEN, login, new_client, post
from lookup_helpers import (
    EMAIL,
    change_settings,
    code_in,
    deposit,
    last_code,
    rows,
    token_of,
    validation_mails,
    wrong,
)
from sqlmodel import Session

from opencrm_horscompte.base.limits import CHALLENGE_TOKEN_MAX_AGE
from opencrm_horscompte.base.models import AuditRecord
from opencrm_horscompte.claim.page import PAGE_KEY
from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.tracking.codes import format_tracking_code

CLAIM = "/hors-compte/rattacher"
CODE_PAGE = "/hors-compte/rattacher/code"


def claim_start(client: Any, tracking_code: str) -> Any:
    """The start's POST, and the code entry page it redirects to (post/redirect/get)."""
    typed = {"tracking_code": tracking_code, "action": "start"}
    return post(client, CLAIM, typed, follow_redirects=True)


def claim_verify(client: Any, token: str, code: str) -> Any:
    return post(client, CLAIM, {"token": token, "code": code, "action": "verify"})


def dossier(host: Any, dossier_id: int) -> Dossier:
    with Session(host.engine) as session:
        found = session.get(Dossier, dossier_id)
        assert found is not None
        return found


def claims(host: Any) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.kind, json.loads(r.details_json))
        for r in rows(host, AuditRecord)
        if r.kind.startswith("claim.")
    ]


def citizen_dossier(client: Any, host: Any) -> Any:
    """A dossier deposited without account with the citizen account's address."""
    change_settings(host, check_account_exists=False)
    return deposit(client, host, email=CITIZEN[0])


def test_claim_attaches_the_dossier_once_and_audits_it(client: Any, host: Any) -> None:
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    space = citizen.get("/mon-espace")
    assert f'href="{CLAIM}"' in space.text and "Rattacher un dossier" in space.text
    assert "Signaler un problème de voirie" not in space.text
    page = citizen.get(CLAIM)
    assert page.status_code == 200 and CITIZEN[0] in page.text

    started = claim_start(citizen, format_tracking_code(mine.code))
    assert started.status_code == 200
    [mail] = validation_mails(host)
    assert mail.recipient == CITIZEN[0]
    done = claim_verify(citizen, token_of(started.text), code_in(mail.text))
    assert done.status_code == 303 and done.headers["Location"] == f"/dossiers/{mine.dossier_id}"
    assert dossier(host, mine.dossier_id).account_id is not None
    space = citizen.get("/mon-espace")
    assert "Signaler un problème de voirie" in space.text
    account_id = dossier(host, mine.dossier_id).account_id
    assert claims(host) == [("claim.attached", {"dossier": mine.dossier_id, "account": account_id})]

    # twice: the code still arrives (it is the dossier's address), the attaching is refused
    again = claim_start(citizen, mine.code)
    refused = claim_verify(citizen, token_of(again.text), last_code(host))
    assert refused.status_code == 409 and "déjà rattaché" in refused.text
    assert [kind for kind, _ in claims(host)] == ["claim.attached", "claim.refused"]
    assert dossier(host, mine.dossier_id).account_id == account_id


def test_wrong_code_is_refused(client: Any, host: Any) -> None:
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    token = token_of(claim_start(citizen, mine.code).text)
    refused = claim_verify(citizen, token, wrong(last_code(host)))
    assert refused.status_code == 400 and "pas le bon" in refused.text
    assert dossier(host, mine.dossier_id).account_id is None and claims(host) == []


def test_another_addresss_dossier_cannot_be_claimed(client: Any, host: Any) -> None:
    theirs = deposit(client, host, email=EMAIL)  # not the account's address
    citizen = new_client(host)
    login(citizen, CITIZEN)
    mails_before = len(validation_mails(host))
    started = claim_start(citizen, theirs.code)
    assert started.status_code == 200  # same page as a match: nothing revealed
    assert len(validation_mails(host)) == mails_before  # no code sent to anyone
    token = token_of(started.text)
    for guess in ("000000", "123456"):
        assert claim_verify(citizen, token, guess).status_code == 400
    assert dossier(host, theirs.dossier_id).account_id is None and claims(host) == []


def test_the_token_belongs_to_the_account_that_asked(client: Any, host: Any) -> None:
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    token = token_of(claim_start(citizen, mine.code).text)
    admin = new_client(host)
    login(admin, ADMIN)
    assert claim_verify(admin, token, last_code(host)).status_code == 400
    assert dossier(host, mine.dossier_id).account_id is None


def test_login_required_and_absent_without_attach_dossier(host_factory: Any) -> None:
    host = host_factory()
    anonymous = new_client(host)
    for page in (CLAIM, CODE_PAGE):
        response = anonymous.get(page)
        assert response.status_code == 302 and "/connexion" in response.headers["Location"]

    bare = host_factory()
    bare.attach_dossier = None  # a host without the optional method
    citizen = new_client(bare)
    login(citizen, CITIZEN)
    assert citizen.get(CLAIM).status_code == 404
    assert citizen.get(CODE_PAGE).status_code == 404
    assert "Rattacher un dossier" not in citizen.get("/mon-espace").text


def test_concurrent_attaches_one_wins(client: Any, host: Any) -> None:
    """The host's attach is one conditional UPDATE: of several at once, exactly one wins."""
    from concurrent.futures import ThreadPoolExecutor

    from opencrm_horscompte.hookspecs.host import User

    mine = citizen_dossier(client, host)
    users = [
        User(id=account, email=f"u{account}@exemple.fr", display_name="u") for account in (1, 2)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda n: host.attach_dossier(mine.dossier_id, users[n % 2]), range(8))
        )
    assert results.count(True) == 1
    assert dossier(host, mine.dossier_id).account_id in (1, 2)


def test_the_claim_form_hints_at_codes_of_the_current_policy(client: Any, host: Any) -> None:
    """The same tracking-code field as the lookup page: the example follows the settings."""
    login(client, CITIZEN)
    page = client.get(CLAIM).text
    lookup_page = client.get("/hors-compte/suivi").text
    hint = re.search(r'<code class="code-example">([^<]+)</code>', page)
    assert hint is not None and hint.group(0) in lookup_page
    assert "ABCD-EFGH-JK" not in page


def test_a_reload_of_the_code_page_mails_nothing(client: Any, host: Any, clock: Any) -> None:
    """The start and "Recevoir un nouveau code" rendered the code page in answer to their
    POST: a reload posted again and mailed another code, which replaced the one on its way.
    They now redirect to the code page, which the session describes."""
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    assert citizen.get(CODE_PAGE).headers["Location"] == CLAIM  # nothing asked yet
    started = post(citizen, CLAIM, {"tracking_code": mine.code, "action": "start"})
    assert started.status_code == 303 and started.headers["Location"] == CODE_PAGE
    first = [citizen.get(CODE_PAGE) for _ in range(2)]  # the redirect, then a reload
    assert [page.status_code for page in first] == [200, 200]
    assert "un code de validation vient" in first[1].text
    assert len(validation_mails(host)) == 1
    token = token_of(first[1].text)

    clock.advance(seconds=61)  # past the resend's cooldown
    resent = post(citizen, CLAIM, {"token": token, "code": "", "action": "resend"})
    assert resent.status_code == 303 and resent.headers["Location"] == CODE_PAGE
    again = citizen.get(CODE_PAGE)
    assert again.status_code == 200 and "un nouveau code vient" in again.text
    citizen.get(CODE_PAGE)
    assert len(validation_mails(host)) == 2

    done = claim_verify(citizen, token_of(again.text), last_code(host))
    assert done.status_code == 303 and dossier(host, mine.dossier_id).account_id is not None
    after = citizen.get(CODE_PAGE)  # Back after attaching: the claim form, not a spent code
    assert after.status_code == 303 and after.headers["Location"] == CLAIM


def test_the_code_page_shows_only_the_accounts_own_claim(client: Any, host: Any) -> None:
    """A claim state carrying another account's token (the reference host starts a new
    session at login, but a host may keep it) gets the claim form, not their code page."""
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    assert claim_start(citizen, mine.code).status_code == 200
    with citizen.session_transaction() as session:
        theirs = session[PAGE_KEY]
    admin = new_client(host)
    login(admin, ADMIN)
    with admin.session_transaction() as session:
        session[PAGE_KEY] = theirs
    response = admin.get(CODE_PAGE)
    assert response.status_code == 400 and 'name="token"' not in response.text
    assert "Votre demande a expiré" in response.text


def test_the_code_page_of_an_expired_claim_says_so(client: Any, host: Any, clock: Any) -> None:
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    assert claim_start(citizen, mine.code).status_code == 200
    clock.advance(seconds=CHALLENGE_TOKEN_MAX_AGE.total_seconds() + 1)
    expired = citizen.get(CODE_PAGE)
    assert expired.status_code == 400 and "Votre demande a expiré" in expired.text
    assert 'name="token"' not in expired.text  # the tracking-code form, to start again
    again = citizen.get(CODE_PAGE)  # told once: then the plain way back to the form
    assert again.status_code == 303 and again.headers["Location"] == CLAIM


def claim_resend(client: Any, token: str) -> Any:
    return post(client, CLAIM, {"token": token, "code": "", "action": "resend"})


def test_a_double_click_on_resend_leads_to_the_new_code_page(
    client: Any, host: Any, clock: Any
) -> None:
    """The second click said "Recommencez la recherche avec votre adresse électronique",
    a field the claim form doesn't have, though the first click's code was on its way."""
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    token = token_of(claim_start(citizen, mine.code).text)
    too_soon = claim_resend(citizen, token)  # told the real wait, not always "une minute"
    assert too_soon.status_code == 429 and re.search(r"patientez \d+ secondes", too_soon.text)
    clock.advance(seconds=61)
    first, second = claim_resend(citizen, token), claim_resend(citizen, token)
    assert first.status_code == second.status_code == 303
    assert second.headers["Location"] == CODE_PAGE
    page = citizen.get(CODE_PAGE)
    assert "Un nouveau code vous a déjà été envoyé" in page.text
    assert token_of(page.text) != token and len(validation_mails(host)) == 2
    done = claim_verify(citizen, token_of(page.text), last_code(host))
    assert done.status_code == 303 and dossier(host, mine.dossier_id).account_id is not None


def test_a_spent_claim_code_neither_mails_nor_speaks_of_an_address(
    client: Any, host: Any, clock: Any
) -> None:
    mine = citizen_dossier(client, host)
    citizen = new_client(host)
    login(citizen, CITIZEN)
    token = token_of(claim_start(citizen, mine.code).text)
    code = last_code(host)
    assert claim_verify(citizen, token, code).status_code == 303
    again = claim_verify(citizen, token, code)  # a double click
    assert again.status_code == 400 and "figure dans votre espace" in again.text
    assert "adresse électronique et votre code" not in again.text
    clock.advance(seconds=61)
    resent = claim_resend(citizen, token)
    assert resent.status_code == 400 and "figure dans votre espace" in resent.text
    assert len(validation_mails(host)) == 1
