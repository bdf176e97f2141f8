"""Statistics: exact figures from a known sequence of events driven over HTTP, per day and
per week, in the page, its table and its CSV; counters bumped with the same statement on
the paths that must not be told apart; admins only; no personal data."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN, login, new_client, post, recorded_statements, through_proposal
from lookup_helpers import (
    EMAIL,
    STRANGER,
    accept_login_url,
    change_settings,
    deposit,
    last_code,
    lookup,
    resend,
    start,
    submit,
    token_of,
    wrong,
)
from sqlmodel import Session

from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.stats.counters import METRICS, count
from opencrm_horscompte.stats.report import Period, build_report, hints, lookups_without_code

PAGE = "/admin/hors-compte/statistiques"
CSV = "/admin/hors-compte/statistiques.csv"
START = "/demarches/signalement-voirie/nouveau"
DAY1, DAY2 = date(2026, 11, 28), date(2026, 11, 29)  # the test clock starts on DAY1 09:00


def identity(client: Any, email: str) -> Any:
    client.get(START)
    typed = {"last_name": "Martin", "first_name": "Camille", "email": email}
    return through_proposal(client, post(client, START, typed))


def report(host: Any, period: Period) -> Any:
    with Session(host.engine) as session:
        return build_report(session, period, DAY2, load_settings(session))


def play_known_sequence(client: Any, host: Any, clock: Any) -> None:
    """Day 1: 2 deposits, a login proposal declined and one accepted, 3 lookups (1 right,
    whose code is then mailed again on request), 1 good and 2 wrong validations. Day 2: a
    dossier locked by 20 wrong codes over 7 lookups, and 11 lookups of one address in an
    hour (two limits reached)."""
    change_settings(host, validation_code_expiry_minutes=60)
    mine = deposit(client, host)
    deposit(client, host, slug="reservation-salle")
    visitor = new_client(host)
    page = identity(visitor, CITIZEN[0])
    token = token_of(page.text)
    assert post(visitor, "/hors-compte/identite/continuer", {"token": token}).status_code == 303
    accepting = new_client(host)
    page = identity(accepting, CITIZEN[0])
    accept = accept_login_url(page.text)
    for _ in range(2):  # a reload counts once
        assert accepting.get(accept.replace("&amp;", "&")).status_code == 303
    right = start(client, EMAIL, mine.code)
    clock.advance(seconds=61)  # past the resend's cooldown
    right = token_of(resend(client, right).text)  # a code mailed again: not a lookup
    assert submit(client, right, last_code(host)).status_code == 303
    decoy = start(client, STRANGER, mine.code)
    assert submit(client, decoy, "123456").status_code == 400
    assert submit(client, decoy, "654321").status_code == 400
    start(client, EMAIL, "ABCDEFGHJK")

    clock.advance(days=1)
    for failure in range(20):
        if failure % 3 == 0:
            token = start(client, EMAIL, mine.code)
            code = last_code(host)
        status = submit(client, token, wrong(code)).status_code
        assert status == 400, failure
        clock.advance(minutes=15, seconds=1)
    assert submit(client, token, code).status_code == 429  # locked: not counted again
    other = new_client(host)
    for _ in range(11):
        assert lookup(other, "quelqu.un@exemple.fr", "ABCDEFGHJK").status_code == 200


EXPECTED_DAY1 = {
    "deposits": 2,
    "proposals_shown": 2,
    "proposals_accepted": 1,
    "proposals_declined": 1,
    "lookups": 3,
    "codes_sent": 2,
    "codes_resent": 1,
    "validations_ok": 1,
    "validations_failed": 2,
    "locks": 0,
    "throttle_refusals": 0,
}
EXPECTED_DAY2 = {
    **dict.fromkeys(METRICS, 0),
    "lookups": 7 + 11,
    "codes_sent": 7,
    "validations_failed": 20,
    "locks": 1,
    # the 11th lookup passes two limits: lookups per address (10) and, its decoy's mails
    # per hour (5) from the 6th on: each limit reached is counted once per window
    "throttle_refusals": 2,
}


def test_known_sequence_gives_exact_figures(client: Any, host: Any, clock: Any) -> None:
    play_known_sequence(client, host, clock)
    daily = report(host, "day")
    assert len(daily.buckets) == 30 and daily.buckets[-1].start == DAY2
    by_day = {bucket.start: bucket.counts for bucket in daily.buckets}
    assert by_day[DAY1] == EXPECTED_DAY1
    assert by_day[DAY2] == EXPECTED_DAY2
    assert all(not any(c.values()) for d, c in by_day.items() if d not in (DAY1, DAY2))
    weekly = report(host, "week")
    assert len(weekly.buckets) == 52 and weekly.buckets[-1].start == date(2026, 11, 23)
    assert weekly.buckets[-1].counts == {m: EXPECTED_DAY1[m] + EXPECTED_DAY2[m] for m in METRICS}
    assert daily.totals == weekly.totals

    admin = new_client(host)
    login(admin, ADMIN)
    page = admin.get(PAGE)
    main = page.text.partition("<main")[2].partition("</main>")[0]
    assert page.status_code == 200 and "<svg" in main and "<script" not in main
    assert ' style="' not in page.text
    assert "<caption" in page.text and 'scope="row">29/11/2026</th>' in page.text
    # 21 lookups, 9 codes sent of which 1 resent: 13 lookups mailed no code (the resend
    # made it 12 when the page subtracted every code sent)
    assert 'data-testid="stats-unmatched">13</dd>' in page.text
    assert "1 blocage de dossier" in page.text  # the hint tells an agent can unlock it
    for personal in (EMAIL, STRANGER, CITIZEN[0], "quelqu.un@exemple.fr"):
        assert personal not in page.text
    exported = admin.get(f"{CSV}?periode=jours")
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in exported.headers["Content-Disposition"]
    # for French Excel: a byte-order mark, ";", the table's headers and French dates
    assert exported.text.startswith("\ufeffJour;Dépôts sans compte;")
    rows = list(csv.reader(io.StringIO(exported.text.removeprefix("\ufeff")), delimiter=";"))
    assert len(rows) == 31
    assert rows[-1][0] == "29/11/2026"
    assert [int(v) for v in rows[-1][1:]] == [EXPECTED_DAY2[m] for m in METRICS]
    weeks = admin.get(f"{CSV}?periode=semaines").text
    assert len(weeks.strip().splitlines()) == 53 and weeks.startswith("\ufeffSemaine du;")
    admin.get("/langue/en?suivant=/")
    english = admin.get(f"{CSV}?periode=jours").text
    assert english.startswith("\ufeffDay,") and "2026-11-29," in english
    assert admin.get(f"{PAGE}?periode=semaines").status_code == 200


def test_only_admins(host: Any) -> None:
    anonymous = new_client(host)
    assert anonymous.get(PAGE).status_code == 302
    citizen = new_client(host)
    login(citizen, CITIZEN)
    assert citizen.get(PAGE).status_code == 403
    assert citizen.get(CSV).status_code == 403


def test_hint_suggests_avoiding_ambiguous_characters(client: Any, host: Any) -> None:
    change_settings(host, tracking_code_avoid_ambiguous=False)
    with Session(host.engine) as session, session.begin():
        count(session, host.now(), lookups=40, codes_sent=10)
    admin = new_client(host)
    login(admin, ADMIN)
    page = admin.get(PAGE)
    assert "75 %" in page.text.replace("\u00a0", " ")
    assert "ambigus" in page.text


def test_hints_are_in_the_page_language(client: Any, host: Any) -> None:
    """The English page showed the hints in French (they sat inside the report object,
    which the page's language did not reach)."""
    with Session(host.engine) as session, session.begin():
        count(session, host.now(), lookups=40, codes_sent=10)
    admin = new_client(host)
    login(admin, ADMIN)
    admin.get("/langue/en?suivant=/")
    page = admin.get(PAGE).text
    assert 'data-testid="stats-hints"' in page
    assert "des recherches n&#39;ont pas abouti" not in page
    assert "of lookups did not lead to a code being sent" in page


def test_counters_use_one_statement_whatever_the_lookup_matched(client: Any, host: Any) -> None:
    mine = deposit(client, host)
    lookup(client, STRANGER, mine.code)  # warm up

    def statements(email: str, code: str) -> list[str]:
        with recorded_statements(host) as seen:
            assert lookup(client, email, code).status_code == 200
        return [s for s in seen if "horscompte_daily_stat" in s]

    matched = statements(EMAIL, mine.code)
    missed = statements(STRANGER, mine.code)
    assert matched == missed and len(matched) == 1


def test_identity_step_counts_with_one_statement_on_both_branches(client: Any, host: Any) -> None:
    def statements(email: str) -> list[str]:
        visitor = new_client(host)
        with recorded_statements(host) as seen:
            identity(visitor, email)
        return [s for s in seen if "horscompte_daily_stat" in s]

    assert statements(CITIZEN[0]) == statements("inconnu.total@exemple.fr")
    assert len(statements(CITIZEN[0])) == 1


def test_unknown_metric_is_refused(host: Any) -> None:
    with Session(host.engine) as session, pytest.raises(ValueError):
        count(session, host.now(), emails=1)


@pytest.mark.parametrize(
    ("codes_sent", "codes_resent", "unmatched"),
    [(40, 30, 30), (40, 0, 0), (55, 0, 0)],  # the last: days counted before 0004
)
def test_resends_do_not_hide_lookups_that_mailed_no_code(
    codes_sent: int, codes_resent: int, unmatched: int
) -> None:
    """A resend mails a code without a lookup: 40 lookups of which 30 mailed nothing, and
    30 codes mailed again, read as "0 lookups without a code" and no hint."""
    totals = {**dict.fromkeys(METRICS, 0), "lookups": 40}
    totals.update(codes_sent=codes_sent, codes_resent=codes_resent)
    assert lookups_without_code(totals) == unmatched
    shares = [str(hint) for hint in hints(totals, Settings.defaults())]
    assert any("75 %" in share for share in shares) == (unmatched == 30)


def test_too_few_figures_say_so_rather_than_nothing_unusual(client: Any, host: Any) -> None:
    """11 wrong validations of 16 read "Rien d'inhabituel", being under the 20 needed to
    judge (outside experience finding): the page now says there is not enough yet."""
    with Session(host.engine) as session, session.begin():
        count(session, host.now(), lookups=16, codes_sent=16, validations_failed=11)
    admin = new_client(host)
    login(admin, ADMIN)
    page = admin.get(PAGE).text
    assert "Pas encore assez de recherches ni de validations" in page and "moins de 20" in page
    assert "Rien d'inhabituel" not in page
    with Session(host.engine) as session, session.begin():
        count(session, host.now(), lookups=4, codes_sent=4, validations_ok=40)
    assert "Rien d'inhabituel" in admin.get(PAGE).text
