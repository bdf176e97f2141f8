"""Issue 8, the lookup and the validation code, on SQLite and PostgreSQL:

* finding 1: simultaneous wrong codes at every stage of the failure counter (before the
  backoff, in it, at the lock): exactly the documented number is checked;
* finding 2: a decoy and a real challenge answer alike, even after a stranger drove the
  email's other lookups into backoff;
* finding 4: a match and a miss run the same statements and render the same templates;
* finding 11: wrong lookups do not pile up challenge rows, and a lookup after 10^4 of
  them runs the same statements, one index probe each, as for a fresh email;
* finding 13: the clock is read once the write lock is held (SQLite);
* issue 11 budget: a lookup is at most 5 statements, a verify at most 3 (BEGIN aside).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from conftest import browser, observed_work, post, recorded_statements
from lookup_helpers import (
    EMAIL,
    Deposited,
    change_settings,
    deposit,
    last_code,
    lookup,
    resend,
    rows,
    start,
    submit,
    token_of,
    without_hidden_values,
    wrong,
)
from processes import all_at_once
from sqlalchemy import insert, text
from sqlmodel import Session

from opencrm_horscompte.base import limits, mail_skeleton, rendering
from opencrm_horscompte.base.emails import email_key
from opencrm_horscompte.base.models import Challenge, FailureGuard
from opencrm_horscompte.base.tokens import unsign
from opencrm_horscompte.lookup.pages import CHALLENGE_PURPOSE
from opencrm_horscompte.lookup.start import LookupInput, pair_guard, start_lookup
from opencrm_horscompte.lookup.validation import NO_WAIT_SLACK, backoff, verify
from opencrm_horscompte.lookup.validation import resend as resend_code
from opencrm_horscompte.tracking.codes import CASE_TWINS

SUBMISSIONS = 20


def challenge_id(host: Any, page: str) -> int:
    carried = unsign(host, CHALLENGE_PURPOSE, token_of(page), 7200)
    assert isinstance(carried, dict)
    return int(carried["challenge"])


@pytest.fixture
def deposited(client: Any, quiet_host: Any) -> Deposited:
    return deposit(client, quiet_host)


def _set_failures(host: Any, guard: str, failures: int) -> None:
    with Session(host.engine) as session, session.begin():
        session.merge(
            FailureGuard(key=guard, failures=failures, not_before=host.now() - timedelta(hours=1))
        )


def _guard_of(host: Any, challenge: int) -> str:
    with Session(host.engine) as session:
        row = session.get(Challenge, challenge)
        assert row is not None
        return row.guard_key


def _expected_checked(failures: int) -> int:
    """How many of many simultaneous wrong codes on a fresh code are checked, after
    ``failures`` consecutive failures (README, "Failure counter"): up to the code's attempt
    limit while no backoff applies, then one, which earns the wait that refuses the rest."""
    free = max(1, limits.BACKOFF_AFTER_FAILURES + 1 - failures)
    return min(limits.ATTEMPTS_PER_CODE, free)


# --------------------------------------------------------------------------- finding 1


@pytest.mark.parametrize("failures", [0, 3, 5, 6, 12, 19])
def test_simultaneous_wrong_codes_check_exactly_the_documented_number(
    client: Any, quiet_host: Any, deposited: Deposited, failures: int
) -> None:
    host = quiet_host
    page = lookup(client, EMAIL, deposited.code).text
    challenge, code = challenge_id(host, page), last_code(host)
    guard = _guard_of(host, challenge)
    _set_failures(host, guard, failures)

    kinds = Counter(
        outcome.kind
        for outcome in all_at_once(SUBMISSIONS, lambda: verify(host, challenge, wrong(code)))
    )

    checked = _expected_checked(failures)
    assert kinds["wrong"] == checked, kinds
    after = failures + checked
    with Session(host.engine) as session:
        stored = session.get(FailureGuard, guard)
        assert stored is not None and stored.failures == after
    if after >= limits.LOCK_AFTER_FAILURES:
        refused = "locked"
    elif after > limits.BACKOFF_AFTER_FAILURES:
        refused = "wait"
    else:
        refused = "exhausted"
    assert kinds == {"wrong": checked, refused: SUBMISSIONS - checked}, kinds


# --------------------------------------------------------------------------- finding 2


def _drive_into_backoff(client: Any, email: str, tracking_code: str) -> str:
    """Look the pair up and fail until its guard is in backoff; the last page's token."""
    token = start(client, email, tracking_code)
    for _ in range(limits.ATTEMPTS_PER_CODE):
        assert submit(client, token, "000000").status_code == 400
    token = start(client, email, tracking_code)
    assert submit(client, token, "000000").status_code == 400  # failure 6: backoff starts
    return token


def test_decoys_and_real_challenges_answer_alike_after_a_strangers_backoff(
    client: Any, quiet_host: Any, deposited: Deposited
) -> None:
    host = quiet_host
    stranger = browser(client)
    for index in range(3):  # the stranger's wrong pairs, each driven into backoff
        _drive_into_backoff(stranger, EMAIL, f"ABCD-EFGH-JK{index:02d}")
    # Now a candidate: the right one, then a wrong one never tried before.
    replies = []
    for candidate in (deposited.code, "ZZZZ-YYYY-XXXX"):
        token = start(stranger, EMAIL, candidate)
        response = submit(stranger, token, wrong(last_code(host)))
        replies.append((response.status_code, without_hidden_values(response.text)))
    assert replies[0] == replies[1]
    assert replies[0][0] == 400


def test_decoy_and_real_challenge_reach_backoff_and_lock_alike(
    client: Any, quiet_host: Any, clock: Any, deposited: Deposited
) -> None:
    """The whole way to the lock: a fresh code before each try (resend), a second try at
    once (the wait), then the clock moved past the wait; the same replies for both."""
    seen: dict[str, list[tuple[int, str]]] = {}
    for name, candidate in (("real", deposited.code), ("decoy", "ZZZZ-YYYY-XXXX")):
        who = browser(client)
        replies = []
        token = start(who, EMAIL, candidate)
        for failures in range(limits.LOCK_AFTER_FAILURES + 2):
            if failures:
                wait = backoff(failures) if failures < limits.LOCK_AFTER_FAILURES else timedelta()
                clock.advance(seconds=max(61.0, wait.total_seconds() + 1))
                token = token_of(resend(who, token).text)
            for _ in range(2):
                response = submit(who, token, "000000")
                replies.append((response.status_code, without_hidden_values(response.text)))
        seen[name] = replies
        clock.advance(days=2)
    assert seen["real"] == seen["decoy"]
    statuses = Counter(status for status, _ in seen["real"])
    assert statuses[429] > limits.LOCK_AFTER_FAILURES - limits.BACKOFF_AFTER_FAILURES


def _other_case(code: str) -> str:
    """``code`` with one letter in the other case, a case twin (c, k, s...) if it holds one:
    a typing of the same code under a policy that folds case."""
    letters = [i for i, char in enumerate(code) if char.isalpha()]
    twins = [i for i in letters if code[i].lower() in CASE_TWINS]
    index = (twins or letters)[0]
    return code[:index] + code[index].swapcase() + code[index + 1 :]


@pytest.mark.parametrize(
    "policy",
    [
        {},  # the defaults: case matters, but a lower-case twin (c, k, s...) reads as capital
        {"tracking_code_lowercase": False},  # capitals only: case never matters
        {"tracking_code_avoid_ambiguous": False},  # case always matters
    ],
)
def test_a_second_lookup_in_another_case_answers_alike_for_a_decoy(
    client: Any, quiet_host: Any, policy: dict[str, bool], clock: Any
) -> None:
    """Look a pair up, then again with one letter in the other case, then try a wrong code
    on the first page: whether the second lookup replaced the first code must not depend
    on whether the pair is real (red-team finding: it did, under policies that fold case).
    The challenge ids, readable in the pages' tokens, step alike too."""
    host = quiet_host
    change_settings(host, **policy)
    real = deposit(client, host).code
    while not any(char.lower() in CASE_TWINS for char in real):  # 9 codes in 10 hold one
        real = deposit(client, host).code
    decoy = real[:-1] + ("2" if real[-1] != "2" else "3")
    seen = {}
    for name, email, typed in (
        ("real", EMAIL, real),
        ("unknown email", "inconnu@exemple.fr", real),
        ("wrong code", EMAIL, decoy),
    ):
        who = browser(client)
        first = lookup(who, email, typed).text
        clock.advance(seconds=limits.REPEAT_WINDOW.total_seconds() + 1)  # not repeated
        second = lookup(who, email, _other_case(typed)).text
        step = challenge_id(host, second) - challenge_id(host, first)
        response = submit(who, token_of(first), "000000")
        seen[name] = (response.status_code, without_hidden_values(response.text), step)
    assert len(set(seen.values())) == 1, seen
    assert seen["real"][2] == 1  # a replacement draws one id, as an insertion does


# --------------------------------------------------------------------------- finding 4


def _observe_lookup(host: Any, client: Any, email: str, code: str, monkeypatch: Any) -> Any:
    rendered: list[str] = []
    original = rendering.render_fragment

    def counting(host_: Any, template: str, *args: Any, **kwargs: Any) -> str:
        rendered.append(template)
        return original(host_, template, *args, **kwargs)

    original_fill = mail_skeleton.Skeleton.fill

    def filling(skeleton: Any, to: str, values: Any) -> Any:
        rendered.append(f"skeleton of {sorted(values)}")
        return original_fill(skeleton, to, values)

    monkeypatch.setattr(rendering, "render_fragment", counting)
    monkeypatch.setattr(mail_skeleton.Skeleton, "fill", filling)
    with recorded_statements(host) as statements:
        response = lookup(client, email, code)
    monkeypatch.setattr(rendering, "render_fragment", original)
    monkeypatch.setattr(mail_skeleton.Skeleton, "fill", original_fill)
    assert response.status_code == 200
    shapes = [s.split(" (", 1)[0] if s.startswith("INSERT") else s for s in statements]
    shapes = [
        "INSERT <mail or audit>"
        if s.startswith(("INSERT INTO host_mail_outbox", "INSERT INTO horscompte_audit_event"))
        else s
        for s in shapes
    ]
    return shapes, rendered


def test_match_and_miss_run_the_same_statements_and_renders(
    client: Any, quiet_host: Any, deposited: Deposited, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = quiet_host
    lookup(client, "echauffement@exemple.fr", "AAAA-BBBB-CCCC")  # warm-up
    match = _observe_lookup(host, client, EMAIL, deposited.code, monkeypatch)
    miss = _observe_lookup(host, client, EMAIL, "ZZZZ-YYYY-XXXX", monkeypatch)
    unknown = _observe_lookup(host, client, "inconnu@exemple.fr", deposited.code, monkeypatch)
    assert match == miss == unknown
    assert match[1] == ["skeleton of ['code', 'demarche_title']"], match[1]


def _writes(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.startswith("BEGIN")]


STATISTICS = 1  # the daily counters' upsert on each path


def test_lookup_and_verify_statement_budgets(
    client: Any, quiet_host: Any, deposited: Deposited
) -> None:
    """The plugin's own work (the host's session check and page aside): 5 statements for a
    lookup and 3 for a verify, plus the one upsert of the daily statistics, the same
    statement whatever matched (issue 13)."""
    host = quiet_host
    start_lookup(host, LookupInput("echauffement@exemple.fr", "AAAA-BBBB-CCCC"), "x", "fr")
    with recorded_statements(host) as statements:
        started = start_lookup(host, LookupInput(EMAIL, deposited.code), "198.51.100.7", "fr")
    assert len(_writes(statements)) <= 5 + STATISTICS, statements
    challenge, code = started.challenge_id, last_code(host)
    with recorded_statements(host) as statements:
        assert verify(host, challenge, wrong(code)).kind == "wrong"
    assert len(_writes(statements)) <= 3 + STATISTICS, statements
    with recorded_statements(host) as statements:
        assert verify(host, challenge, code).kind == "granted"
    assert len(_writes(statements)) <= 3 + STATISTICS, statements


def test_the_validation_mail_is_rendered_before_the_write_transaction(
    client: Any, quiet_host: Any, deposited: Deposited, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write transaction starts with the counters' upsert: every mail template is
    rendered, and the mail filled, before it (nothing slow under the write lock)."""
    host = quiet_host
    mail_skeleton.forget_skeletons()  # the first lookup renders the templates too
    writing: list[str] = []
    original = rendering.render_fragment
    original_fill = mail_skeleton.Skeleton.fill
    with recorded_statements(host) as statements:

        def watching(host_: Any, template: str, *args: Any, **kwargs: Any) -> str:
            writing.append(f"render inside: {any('horscompte_throttle' in s for s in statements)}")
            return original(host_, template, *args, **kwargs)

        def filling(skeleton: Any, to: str, values: Any) -> Any:
            writing.append(f"fill inside: {any('horscompte_throttle' in s for s in statements)}")
            return original_fill(skeleton, to, values)

        monkeypatch.setattr(rendering, "render_fragment", watching)
        monkeypatch.setattr(mail_skeleton.Skeleton, "fill", filling)
        lookup(client, EMAIL, deposited.code)
    assert "fill inside: False" in writing and "render inside: False" in writing
    assert not [entry for entry in writing if entry.endswith("True")]


# --------------------------------------------------------------------------- finding 11


def test_wrong_lookups_on_one_email_leave_one_challenge_per_pair(
    client: Any, quiet_host: Any, deposited: Deposited
) -> None:
    host = quiet_host
    for _ in range(limits.LOOKUP_EMAIL.limit * 3):  # well past every limit
        start_lookup(host, LookupInput(EMAIL, "ABCD-EFGH-JKLM"), "198.51.100.7", "fr")
    assert len(rows(host, Challenge)) == 1


def test_lookup_after_ten_thousand_wrong_lookups_costs_what_a_fresh_one_does(
    client: Any, quiet_host: Any, deposited: Deposited
) -> None:
    host = quiet_host
    key = email_key(EMAIL)
    now = host.now()
    piled = [
        {
            "dossier_id": None,
            "guard_key": pair_guard(host, key, f"WRONG{index:05d}"),
            "code_hmac": "0" * 64,
            "created_at": now,
            "expires_at": now + timedelta(minutes=10),
            "attempts": 0,
            "consumed_at": None if index % 2 else now,
        }
        for index in range(10_000)
    ]
    with host.engine.begin() as connection:
        connection.execute(insert(Challenge.__table__), piled)
        if connection.dialect.name == "postgresql":
            connection.execute(text("ANALYZE horscompte_challenge"))

    def observed(email: str) -> list[str]:
        with recorded_statements(host) as statements:
            assert lookup(client, email, "ABCD-EFGH-JKLM").status_code == 200
        return statements

    observed("echauffement@exemple.fr")
    assert observed(EMAIL) == observed("fresh.address@exemple.fr")
    # The challenge is issued by one upsert whose conflict target is the partial unique
    # index over live rows: one index probe, whatever piled up.
    [issue] = [s for s in observed(EMAIL) if s.startswith("INSERT INTO horscompte_challenge")]
    assert "ON CONFLICT (guard_key) WHERE consumed_at IS NULL" in issue
    with host.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            plan = connection.execute(
                text(
                    "EXPLAIN SELECT id FROM horscompte_challenge "
                    "WHERE guard_key = 'x' AND consumed_at IS NULL"
                )
            ).all()
            assert "ix_horscompte_challenge_live" in " ".join(row[0] for row in plan)
        else:
            plan = connection.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT id FROM horscompte_challenge "
                    "WHERE guard_key = 'x' AND consumed_at IS NULL"
                )
            ).all()
            assert "ix_horscompte_challenge_live" in " ".join(str(row) for row in plan)


# --------------------------------------------------------------------------- finding 13


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_clock_is_read_under_the_write_lock(
    client: Any, quiet_host: Any, deposited: Deposited, clock: Any
) -> None:
    """Concurrent guesses on SQLite got a spurious "patientez" when ``now`` was read before
    ``BEGIN IMMEDIATE``: a request that read the clock first could take the lock last."""
    host = quiet_host
    page = lookup(client, EMAIL, deposited.code).text
    challenge, code = challenge_id(host, page), last_code(host)
    reads: list[bool] = []
    started: list[int] = []

    def look_up() -> None:
        typed = LookupInput(EMAIL, deposited.code)
        started.append(start_lookup(host, typed, "198.51.100.7", "fr").challenge_id)

    def resend_later() -> None:
        clock.advance(seconds=61)
        assert resend_code(host, started[-1]).challenge_id is not None

    actions = (lambda: verify(host, challenge, wrong(code)), look_up, resend_later)
    for action in actions:
        with recorded_statements(host) as statements:

            def watching_clock(seen: list[str] = statements) -> Any:
                reads.append("BEGIN IMMEDIATE" in seen)
                return clock()

            host.config.clock = watching_clock
            try:
                action()
            finally:
                host.config.clock = clock
    assert reads and all(reads), reads


def test_a_failure_without_backoff_does_not_make_an_earlier_clock_wait(
    client: Any, quiet_host: Any, deposited: Deposited, clock: Any
) -> None:
    """A request whose clock was read a little before a concurrent failure's must not be
    told to wait when that failure earned no backoff."""
    host = quiet_host
    page = lookup(client, EMAIL, deposited.code).text
    challenge, code = challenge_id(host, page), last_code(host)
    assert verify(host, challenge, wrong(code)).kind == "wrong"
    clock.advance(seconds=-(NO_WAIT_SLACK.total_seconds() / 2))
    assert verify(host, challenge, wrong(code)).kind == "wrong"


def test_the_branch_cpu_benchmark_reports_both_ratios() -> None:
    """Finding 4's figures (benchmarks/branch_cpu.py); the times themselves are not judged
    here, only that both ratios are reported."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "branch_cpu.py"
    done = subprocess.run(
        [sys.executable, str(script), "--rounds", "3"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"lookup_branch_cpu_ratio", "identity_branch_cpu_ratio"} <= set(figures)


def test_forgotten_code_does_the_same_work_with_or_without_dossiers(
    client: Any, quiet_host: Any, deposited: Deposited
) -> None:
    """ "Code oublié" tells a stranger nothing by its work either: the same statements and
    renders whether or not the address has dossiers."""
    host = quiet_host

    def observe(email: str) -> tuple[list[str], list[str]]:
        with observed_work(host) as work:
            typed = {"email": email}
            response = post(browser(client), "/hors-compte/code-oublie", typed)
        assert response.status_code == 303
        return work.shape()

    observe("echauffement@exemple.fr")
    assert observe(EMAIL) == observe("personne@exemple.fr")


def test_forgotten_code_renders_as_many_entries_whatever_the_number_of_dossiers(
    client: Any, host: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Code oublié" formatted and rendered one entry per dossier of the address, so its
    time grew with their number: 15 dossiers answered about 1 ms slower than none, limits
    reached or not (outside timing finding). The list is now padded to FORGOTTEN_LISTED
    entries, the padding rendered apart and thrown away: the same entries are formatted and
    rendered for 0, 1, 3 or 21 dossiers. Counted, not timed."""
    from opencrm_horscompte.base import rendering
    from opencrm_horscompte.lookup import pages
    from opencrm_horscompte.tracking import codes

    rendered: list[int] = []
    formatted: list[str] = []
    real_render, real_format = rendering.render_mail, codes.format_tracking_code

    def counting_render(*args: Any) -> Any:
        rendered.append(len(args[3]["dossiers"]))
        return real_render(*args)

    def counting_format(code: str) -> str:
        formatted.append(code)
        return real_format(code)

    monkeypatch.setattr(pages, "render_mail", counting_render)
    monkeypatch.setattr(pages, "format_tracking_code", counting_format)
    seen: dict[int, tuple[int, int, int]] = {}
    owners = {0: "aucun@exemple.fr", 1: "un@exemple.fr", 3: "trois@exemple.fr"}
    owners[pages.FORGOTTEN_LISTED + 1] = "beaucoup@exemple.fr"
    for count, email in owners.items():
        for _ in range(count):
            deposit(browser(client), host, email=email)
            clock.advance(minutes=1)
        rendered.clear()
        formatted.clear()
        response = post(browser(client), "/hors-compte/code-oublie", {"email": email})
        assert response.status_code == 303
        seen[count] = (len(rendered), sum(rendered), len(formatted))
    assert set(seen.values()) == {(2, pages.FORGOTTEN_LISTED, pages.FORGOTTEN_LISTED)}, seen
