"""Validation codes under concurrency, on SQLite and PostgreSQL, and the lookup's statements.

* 20 simultaneous submissions of the one right code (threads; on PostgreSQL also 4 host
  worker processes x 5 threads): exactly one succeeds, the code is consumed once, and the
  refused submissions cost no attempt;
* 20 simultaneous wrong codes: exactly ``ATTEMPTS_PER_CODE`` are evaluated and every one
  of them is counted, on the code and on the dossier's failure counter (no lost update);
* simultaneous resends of one challenge: one new code per cooldown, the hourly mail cap
  holds and one code stays live; the same resend form posted twice waits for the cooldown;
* a lookup issues the same statements whether the email is unknown, the tracking code
  wrong, or the pair right (only the mail/audit INSERT differs); verify's counts recorded.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import post, recorded_statements
from lookup_helpers import CODE_LINE, Deposited, deposit, rows, token_of
from lookup_workers import submit_codes
from processes import HANG_GUARD_SECONDS, all_at_once, collect
from sqlmodel import Session, col, select

from opencrm_horscompte.base.limits import (
    ATTEMPTS_PER_CODE,
    CHALLENGE_TOKEN_MAX_AGE,
    LOOKUP_DOSSIER_MAILS,
    REPEAT_WINDOW,
    RESEND_COOLDOWN,
)
from opencrm_horscompte.base.models import Challenge, FailureGuard, utc
from opencrm_horscompte.base.tokens import unsign
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.lookup.pages import CHALLENGE_PURPOSE
from opencrm_horscompte.lookup.validation import resend, verify

SUBMISSIONS = 20
RESENDS = 10
JOIN_TIMEOUT = HANG_GUARD_SECONDS  # a hang guard only: the tests wait for results
EMAIL = "lea.dupont@exemple.fr"
IDENTITY = {"last_name": "Dupont", "first_name": "Léa", "email": EMAIL}
OTHER_IDENTITY = {**IDENTITY, "email": "autre.personne@exemple.fr"}
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi."}
VALIDATION_SUBJECT = "Votre code de validation"
MAIL_OR_AUDIT = re.compile(r"^INSERT INTO (host_mail_outbox|horscompte_audit_event) .*$")


# --------------------------------------------------------------------------- helpers


def lookup_through_http(client: Any, email: str, tracking_code: str) -> Any:
    typed = {"email": email, "tracking_code": tracking_code}
    response = post(client, "/hors-compte/suivi", typed, follow_redirects=True)
    assert response.status_code == 200, response.text
    return response


def challenge_of(host: Any, page: Any) -> int:
    """The challenge the validation page's signed token refers to."""
    token = token_of(page.text)
    carried = unsign(host, CHALLENGE_PURPOSE, token, int(CHALLENGE_TOKEN_MAX_AGE.total_seconds()))
    assert isinstance(carried, dict) and isinstance(carried["challenge"], int)
    return carried["challenge"]


def validation_mails(host: Any) -> list[OutboxMail]:
    with Session(host.engine) as session:
        return list(
            session.exec(
                select(OutboxMail)
                .where(col(OutboxMail.subject).startswith(VALIDATION_SUBJECT))
                .order_by(col(OutboxMail.id))
            )
        )


def last_code(host: Any) -> str:
    """The validation code of the newest validation mail (only the mail knows it)."""
    code: str
    [code] = CODE_LINE.findall(validation_mails(host)[-1].text)
    return code


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def challenge(host: Any, challenge_id: int) -> Challenge:
    with Session(host.engine) as session:
        found = session.get(Challenge, challenge_id)
        assert found is not None
        return found


def failures(host: Any, challenge_id: int) -> int | None:
    """The guard's failure count; None when it has none (on PostgreSQL an attempt creates
    the row with 0 failures, to lock it)."""
    with Session(host.engine) as session:
        guard = session.get(FailureGuard, challenge(host, challenge_id).guard_key)
        return None if guard is None or guard.failures == 0 else guard.failures


@dataclass(frozen=True)
class Pending:
    """A deposited dossier looked up over HTTP, its code waiting in the outbox."""

    challenge_id: int
    code: str
    tracking: Deposited
    token: str  # the validation page's signed carrier


@pytest.fixture
def pending(host: Any, client: Any) -> Pending:
    tracking = deposit(client, host)
    page = lookup_through_http(client, EMAIL, tracking.code)
    token = token_of(page.text)
    return Pending(challenge_of(host, page), last_code(host), tracking, token)


# --------------------------------------------------------------------------- 1. right code


def test_twenty_simultaneous_right_codes_grant_exactly_once(
    host: Any, clock: Any, pending: Pending
) -> None:
    challenge_id, code, tracking = pending.challenge_id, pending.code, pending.tracking

    outcomes = all_at_once(SUBMISSIONS, lambda: verify(host, challenge_id, code))

    kinds = Counter(outcome.kind for outcome in outcomes)
    assert kinds == {"granted": 1, "used": SUBMISSIONS - 1}, kinds
    [granted] = [outcome for outcome in outcomes if outcome.kind == "granted"]
    assert granted.dossier_id == tracking.dossier_id
    spent = challenge(host, challenge_id)
    assert spent.consumed_at is not None and utc(spent.consumed_at) == clock()
    assert spent.attempts == 1  # the refused submissions cost no attempt
    assert failures(host, challenge_id) is None  # the success reset the failure counter
    assert verify(host, challenge_id, code).kind == "used"  # replay


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_four_worker_processes_submit_right_and_wrong_codes(
    database_url: str, host: Any, client: Any, clock: Any, pending: Pending
) -> None:
    """4 host processes x 5 threads submit the right code to one challenge while as many
    submit a wrong code to another dossier's challenge (40 at once, one spawn of workers)."""
    other_tracking = deposit(client, host, OTHER_IDENTITY["email"])
    other_page = lookup_through_http(client, OTHER_IDENTITY["email"], other_tracking.code)
    right_id, wrong_id = pending.challenge_id, challenge_of(host, other_page)
    jobs = [(right_id, pending.code), (wrong_id, wrong(last_code(host)))]
    processes, per_process = 4, SUBMISSIONS // 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes * per_process * len(jobs))
    results = context.Queue()
    arguments = (database_url, clock().isoformat(), jobs, per_process, barrier, results)
    workers = [
        context.Process(target=submit_codes, args=arguments, daemon=True) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        reports = collect(results, workers, lambda got: len(got) == len(workers))
    finally:
        for worker in workers:
            worker.join(JOIN_TIMEOUT)
            if worker.is_alive():
                worker.terminate()
    assert [status for status, _ in reports] == ["ok"] * processes, reports
    kinds = {
        challenge_id: Counter(
            kind for _, outcomes in reports for cid, kind in outcomes if cid == challenge_id
        )
        for challenge_id in (right_id, wrong_id)
    }

    assert kinds[right_id] == {"granted": 1, "used": SUBMISSIONS - 1}, kinds
    spent = challenge(host, right_id)
    assert spent.consumed_at is not None and spent.attempts == 1
    assert failures(host, right_id) is None

    exhausted = SUBMISSIONS - ATTEMPTS_PER_CODE
    assert kinds[wrong_id] == {"wrong": ATTEMPTS_PER_CODE, "exhausted": exhausted}
    missed = challenge(host, wrong_id)
    assert missed.consumed_at is None and missed.attempts == ATTEMPTS_PER_CODE
    assert failures(host, wrong_id) == ATTEMPTS_PER_CODE


# --------------------------------------------------------------------------- 2. wrong codes


def test_twenty_simultaneous_wrong_codes_are_all_counted(host: Any, pending: Pending) -> None:
    challenge_id, code = pending.challenge_id, pending.code

    outcomes = all_at_once(SUBMISSIONS, lambda: verify(host, challenge_id, wrong(code)))

    kinds = Counter(outcome.kind for outcome in outcomes)
    # Exactly ATTEMPTS_PER_CODE tries were evaluated; the rest found the code out of
    # attempts (no backoff yet at 5 failures: "exhausted", not "wait").
    exhausted = SUBMISSIONS - ATTEMPTS_PER_CODE
    assert kinds == {"wrong": ATTEMPTS_PER_CODE, "exhausted": exhausted}, kinds
    spent = challenge(host, challenge_id)
    assert spent.attempts == ATTEMPTS_PER_CODE and spent.consumed_at is None
    assert failures(host, challenge_id) == ATTEMPTS_PER_CODE  # no lost increment
    assert verify(host, challenge_id, code).kind == "exhausted"  # even the right code, now


# --------------------------------------------------------------------------- 3. resends


def _resend_race(host: Any, clock: Any, challenge_id: int) -> tuple[list[Any], list[Challenge]]:
    """Resend ``challenge_id`` from RESENDS threads at once; the results, and every
    challenge row left (a guard keeps one live row, replaced in place under a new id)."""
    clock.advance(seconds=RESEND_COOLDOWN.total_seconds() + 1)
    results = all_at_once(RESENDS, lambda: resend(host, challenge_id))
    return results, rows(host, Challenge)


def test_simultaneous_resends_stay_within_the_hourly_cap(
    host: Any, clock: Any, pending: Pending
) -> None:
    challenge_id = pending.challenge_id
    results, left = _resend_race(host, clock, challenge_id)

    # A resend either issued a code, waits for the cooldown, or found its code replaced
    # by a racing one (no challenge id): never a second code within the cooldown.
    issued = [r.challenge_id for r in results if r.challenge_id is not None and not r.wait]
    assert len(issued) == 1
    # The hourly cap of mails per dossier is one atomic counter: never exceeded.
    assert len(validation_mails(host)) <= LOOKUP_DOSSIER_MAILS.limit
    # Every refusal is a cooldown wait on the same challenge.
    assert all(r.challenge_id == challenge_id for r in results if r.wait)
    # Each resend replaced the older code, even racing: one code of the dossier stays live,
    # under the id the last resend returned; the first code's id is gone.
    assert [row.id for row in left if row.consumed_at is None] == issued
    assert challenge_id not in {row.id for row in left}


def test_simultaneous_resends_issue_one_code_per_cooldown(
    host: Any, clock: Any, pending: Pending
) -> None:
    challenge_id = pending.challenge_id
    results, left = _resend_race(host, clock, challenge_id)

    assert len(left) == 1, f"{len(left)} challenges after {RESENDS} resends"
    assert sum(r.challenge_id is not None and not r.wait for r in results) == 1
    assert len(validation_mails(host)) == 2  # the lookup's, then one resend


def test_resending_the_same_form_twice_sends_one_code(
    host: Any, clock: Any, client: Any, pending: Pending
) -> None:
    clock.advance(seconds=RESEND_COOLDOWN.total_seconds() + 1)
    form = {"token": pending.token, "action": "resend", "code": ""}
    first = post(client, "/hors-compte/validation", form)
    assert first.status_code == 303, first.text  # to the code entry page (post/redirect/get)
    clock.advance(seconds=1)
    second = post(client, "/hors-compte/validation", form)  # the same form, a second later
    # Its code was replaced by the first resend: it mails nothing and leads to the page of
    # the first resend's code.
    assert second.status_code == 303, f"second resend answered {second.status_code}"
    page = client.get(second.headers["Location"])
    assert "Un nouveau code vous a déjà été envoyé" in page.text
    assert len(validation_mails(host)) == 2


# --------------------------------------------------------------------------- 4. statements


def test_lookup_statements_are_the_same_whatever_matches(
    quiet_host: Any, client: Any, record_property: Any
) -> None:
    host = quiet_host
    tracking = deposit(client, host)
    other = deposit(client, host, OTHER_IDENTITY["email"])  # a real code, not EMAIL's
    lookup_through_http(client, "echauffement@exemple.fr", "AAAA-BBBB-CCCC")  # warm-up

    cases = {
        "unknown email": ("personne@exemple.fr", tracking.code),
        "known email, wrong code": (EMAIL, other.code),
        "right pair": (EMAIL, tracking.code),
    }
    counts: dict[str, int] = {}
    shapes: dict[str, list[str]] = {}
    for name, (email, code) in cases.items():
        with recorded_statements(host) as statements:
            lookup_through_http(client, email, code)
        counts[name] = len(statements)
        shapes[name] = [MAIL_OR_AUDIT.sub("INSERT <mail or audit>", s) for s in statements]
        record_property(f"lookup statements ({name})", statements)
    print(f"\nlookup POST statements: {counts}")
    assert len(set(counts.values())) == 1, counts
    # The very same statements, but where a match queues its mail a miss writes an audit
    # record (see lookup.start.issue_code).
    assert shapes["unknown email"] == shapes["known email, wrong code"] == shapes["right pair"]
    assert len(validation_mails(host)) == 1  # only the right pair mailed a code


def test_verify_statement_counts_are_recorded(
    quiet_host: Any, client: Any, record_property: Any
) -> None:
    host = quiet_host
    tracking = deposit(client, host)
    counts: dict[str, int] = {}
    for name in ("wrong code", "right code"):
        challenge_id = challenge_of(host, lookup_through_http(client, EMAIL, tracking.code))
        code = last_code(host)
        with recorded_statements(host) as statements:
            outcome = verify(host, challenge_id, wrong(code) if name == "wrong code" else code)
        assert outcome.kind == ("wrong" if name == "wrong code" else "granted")
        counts[f"verify() {name}"] = len(statements)
        record_property(f"verify statements ({name})", statements)
    print(f"\nverify() statements: {counts}")
    assert all(count > 0 for count in counts.values())


# --------------------------------------------------------------------------- 5. double submit

DOUBLE_SUBMITS = 5


@pytest.mark.parametrize("real", [True, False], ids=["dossier", "decoy"])
def test_the_lookup_form_sent_several_times_at_once_keeps_one_code(
    host: Any, client: Any, real: bool
) -> None:
    """A double click on "Recevoir un code de validation": each request replaced the code
    of the one before, whose mail the outbox then dropped, while the browser could keep
    the first page, whose code was gone (outside experience finding, 1 run in 6). Sent at
    once, the lookups now all lead to one code: one mail, and that code opens the dossier
    from any of their pages. A decoy's pages step alike."""
    deposited = deposit(client, host)
    typed = deposited.code if real else "ABCD-EFGH-JKLM"
    sessions = [client.application.test_client() for _ in range(DOUBLE_SUBMITS)]
    for session in sessions:
        session.get("/hors-compte/suivi")  # its CSRF token
    pages = iter(sessions)
    lock = threading.Lock()

    def send() -> Any:
        with lock:
            session = next(pages)
        return session, lookup_through_http(session, EMAIL, typed)

    answers = all_at_once(DOUBLE_SUBMITS, send)
    assert len({challenge_of(host, page) for _, page in answers}) == 1
    live = [row for row in rows(host, Challenge) if row.consumed_at is None]
    assert len(live) == 1
    mails = validation_mails(host)
    assert len(mails) == (1 if real else 0)
    if real:
        [match] = CODE_LINE.findall(mails[0].text)
        session, page = answers[-1]
        done = post(
            session, "/hors-compte/validation", {"token": token_of(page.text), "code": match}
        )
        assert done.status_code == 303


def test_a_lookup_after_a_wrong_try_or_the_repeat_window_mails_a_new_code(
    host: Any, client: Any, clock: Any
) -> None:
    """The repeat window keeps a code only while it is untried and young: the same lookup
    after a wrong try, or after the window, replaces it and mails the new one."""
    deposited = deposit(client, host)
    first = challenge_of(host, lookup_through_http(client, EMAIL, deposited.code))
    assert challenge_of(host, lookup_through_http(client, EMAIL, deposited.code)) == first
    assert len(validation_mails(host)) == 1
    assert verify(host, first, "000000").kind == "wrong"
    second = challenge_of(host, lookup_through_http(client, EMAIL, deposited.code))
    assert second != first and len(validation_mails(host)) == 2
    clock.advance(seconds=REPEAT_WINDOW.total_seconds())
    assert challenge_of(host, lookup_through_http(client, EMAIL, deposited.code)) != second
    assert len(validation_mails(host)) == 3
