"""Tracking codes at deposit under load and failure, on SQLite and PostgreSQL.

* several processes depositing at once never share a code, and every deposit has exactly
  one code and one acknowledgment mail;
* a tiny code space (through the ``horscompte_generate_tracking_code`` override hook) is
  retried on collisions, then fails with ``TrackingCodeSpaceExhausted`` after exactly
  ``MAX_ATTEMPTS`` draws, alone and under concurrency;
* a deposit is one transaction: whatever fails, nothing of it is left behind;
* a deposit issues the same, bounded, indexed statements whatever the number of dossiers;
* a draft is deposited once.
"""

from __future__ import annotations

import multiprocessing
import re
import secrets
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pluggy
import pytest
from conftest import TEST_SECRET_KEYS, quiet, recorded_statements
from processes import HANG_GUARD_SECONDS, collect
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.host_kit.refhost.dossiers import AlreadyDeposited, create_draft, deposit
from opencrm_horscompte.host_kit.refhost.models import Demarche, Dossier
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.tracking.codes import format_tracking_code
from opencrm_horscompte.tracking.deposit import (
    MAX_ATTEMPTS,
    TrackingCodeSpaceExhausted,
    assign_tracking_code,
)

hookimpl = pluggy.HookimplMarker("opencrm")

DEMARCHE_SLUG = "signalement-voirie"
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi."}
TINY_SPACE = ["AAAA1111", "BBBB2222", "CCCC3333"]

WORKERS = 4
DEPOSITS_PER_WORKER = 500


# --------------------------------------------------------------------------- helpers


def identity(tag: str) -> dict[str, str]:
    return {"last_name": "Dupont", "first_name": "Léa", "email": f"{tag}@exemple.fr"}


def the_demarche(host: Any) -> Demarche:
    with Session(host.engine, expire_on_commit=False) as session:
        return session.exec(select(Demarche).where(Demarche.slug == DEMARCHE_SLUG)).one()


def new_draft(host: Any, tag: str) -> Dossier:
    return create_draft(host, the_demarche(host), identity(tag), None)


def all_rows(host: Any, model: Any) -> list[Any]:
    with Session(host.engine) as session:
        return list(session.exec(select(model)))


def reload(host: Any, draft: Dossier) -> Dossier:
    with Session(host.engine) as session:
        return session.exec(select(Dossier).where(Dossier.id == draft.id)).one()


def scalar(host: Any, sql: str) -> Any:
    with host.engine.connect() as connection:
        return connection.execute(text(sql)).scalar_one()


def assert_left_nothing(host: Any, draft: Dossier) -> None:
    """The failed deposit of ``draft`` rolled back entirely."""
    dossier = reload(host, draft)
    assert dossier.status == "draft" and dossier.deposited_at is None
    assert dossier.answers == {}
    with Session(host.engine) as session:
        assert session.get(TrackingCode, draft.id) is None
        mails = session.exec(select(OutboxMail).where(OutboxMail.recipient == draft.email))
        assert list(mails) == []


# --------------------------------------------------------------------------- test plugins


class TinyCodeSpace:
    """Draws from three codes only, at random with :mod:`secrets`, and counts its calls.

    Each thread draws ``secrets.choice`` among the codes it has not drawn yet in the current
    round of three (then a new round starts): draws collide as random draws do, but any five
    consecutive draws of a deposit cover the whole space, so a deposit fails only when the
    space is really full. (Plain ``secrets.choice`` over the three codes would miss the last
    free code in ``MAX_ATTEMPTS`` = 12 draws with probability (2/3)**12 ~ 0.8 %: that is the
    bounded retry doing its job, but a flaky test.)
    """

    def __init__(self, codes: list[str] = TINY_SPACE) -> None:
        self.codes = list(codes)
        self.calls = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def thread_calls(self) -> int:
        return getattr(self._local, "calls", 0)

    @hookimpl
    def horscompte_generate_tracking_code(self, host: Any, settings: Any) -> str:
        with self._lock:
            self.calls += 1
        self._local.calls = self.thread_calls() + 1
        left: list[str] | None = getattr(self._local, "left", None)
        if not left:
            left = self._local.left = list(self.codes)
        code = secrets.choice(left)
        left.remove(code)
        return code


class ScriptedCodes:
    """Returns the scripted values in order (the last one forever after)."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)
        self.calls = 0

    @hookimpl
    def horscompte_generate_tracking_code(self, host: Any, settings: Any) -> Any:
        self.calls += 1
        return self.values[min(self.calls, len(self.values)) - 1]


class FailingLastStep:
    """A later step of the deposit (after the plugin's own) fails."""

    @hookimpl(trylast=True)
    def opencrm_deposit(self, host: Any, session: Any, dossier: Any) -> None:
        raise RuntimeError("a later step of the deposit failed")


class CodeAlreadyIssued:
    """Runs before the plugin and gives the dossier its tracking code through the plugin's own
    pipeline, as if ``opencrm_deposit`` ran twice: the plugin's insert then fails on the
    primary key (``dossier_id``), with free codes, not on the code."""

    @hookimpl(tryfirst=True)
    def opencrm_deposit(self, host: Any, session: Any, dossier: Any) -> None:
        assign_tracking_code(host, session, dossier)


# --------------------------------------------------------------------------- 1. processes


def deposit_worker(
    database_url: str, worker: int, count: int, go: Any, reports: Any
) -> None:  # pragma: no cover - runs in a spawned process
    """Build a host of one's own, say ready, wait for ``go``, then deposit ``count`` drafts.

    Everything, errors included, goes back to the parent through ``reports``.
    """
    from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost

    report: dict[str, Any] = {"worker": worker, "deposited": 0, "errors": [], "seconds": None}
    host = None
    try:
        host = ReferenceHost(HostConfig(database_url=database_url, secret_keys=TEST_SECRET_KEYS))
        demarche = the_demarche(host)
        reports.put(("ready", worker))
        if not go.wait(HANG_GUARD_SECONDS):
            raise TimeoutError("the parent never said go")
        started = time.perf_counter()
        for index in range(count):
            try:
                draft = create_draft(host, demarche, identity(f"w{worker}-{index}"), None)
                deposit(host, draft.draft_key, ANSWERS)
                report["deposited"] += 1
            except Exception as error:
                detail = (
                    traceback.format_exc()
                    if not report["errors"]
                    else "".join(traceback.format_exception_only(error))
                )
                report["errors"].append(f"worker {worker}, deposit {index}: {detail}")
                if len(report["errors"]) >= 5:
                    break
        report["seconds"] = time.perf_counter() - started
    except BaseException:
        report["errors"].append(f"worker {worker}: {traceback.format_exc()}")
    finally:
        if host is not None:
            host.engine.dispose()
        reports.put(("done", report))


def run_workers(database_url: str, workers: int, count: int) -> tuple[list[dict[str, Any]], float]:
    """Run the worker processes; return their reports and the seconds of the deposit phase."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    go = context.Event()
    processes = [
        context.Process(
            target=deposit_worker,
            args=(database_url, worker, count, go, reports),
            name=f"deposit-worker-{worker}",
        )
        for worker in range(workers)
    ]
    done: dict[int, dict[str, Any]] = {}
    ready: set[int] = set()
    deposit_seconds = float("nan")
    try:
        for process in processes:
            process.start()

        def note(received: list[Any]) -> None:
            for kind, payload in received:
                if kind == "ready":
                    ready.add(payload)
                else:
                    done[payload["worker"]] = payload

        def all_ready(got: list[Any]) -> bool:
            note(got)
            return len(ready | set(done)) == workers

        def all_done(got: list[Any]) -> bool:
            note(got)
            return len(done) == workers

        # Waits for every worker's report, however slow the machine; only a hang ends it.
        received: list[Any] = []
        collect(reports, processes, all_ready, received)
        started = time.perf_counter()
        go.set()
        collect(reports, processes, all_done, received)
        deposit_seconds = time.perf_counter() - started
        for process in processes:
            process.join(HANG_GUARD_SECONDS)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        reports.close()
        reports.join_thread()
    missing = sorted(set(range(workers)) - set(done))
    exit_codes = {process.name: process.exitcode for process in processes}
    assert not missing, f"workers {missing} never reported; exit codes {exit_codes}"
    errors = [error for report in done.values() for error in report["errors"]]
    if errors:
        pytest.fail(f"{len(errors)} worker errors, the first ones:\n" + "\n".join(errors[:4]))
    assert all(code == 0 for code in exit_codes.values()), exit_codes
    return [done[worker] for worker in range(workers)], deposit_seconds


@pytest.mark.slow
def test_concurrent_deposits_in_processes_get_unique_codes_and_one_mail_each(
    host_factory: Any, database_url: str
) -> None:
    host = host_factory()  # created and seeded once, here; workers only connect
    total = WORKERS * DEPOSITS_PER_WORKER
    started = time.perf_counter()
    reports, deposit_seconds = run_workers(database_url, WORKERS, DEPOSITS_PER_WORKER)
    wall_seconds = time.perf_counter() - started
    print(
        f"\n[{host.engine.dialect.name}] {total} deposits by {WORKERS} processes: "
        f"{deposit_seconds:.1f} s depositing, {wall_seconds:.1f} s with process start-up; "
        "per worker: " + ", ".join(f"{report['seconds']:.1f} s" for report in reports)
    )
    assert [report["deposited"] for report in reports] == [DEPOSITS_PER_WORKER] * WORKERS

    assert scalar(host, "SELECT COUNT(*) FROM host_dossier") == total
    assert scalar(host, "SELECT COUNT(*) FROM host_dossier WHERE status = 'deposited'") == total
    assert scalar(host, "SELECT COUNT(*) FROM horscompte_tracking_code") == total
    assert scalar(host, "SELECT COUNT(DISTINCT code) FROM horscompte_tracking_code") == total
    assert (
        scalar(
            host,
            "SELECT COUNT(*) FROM host_dossier d LEFT JOIN horscompte_tracking_code t "
            "ON t.dossier_id = d.id WHERE t.dossier_id IS NULL",
        )
        == 0
    ), "dossiers without a code"
    assert (
        scalar(
            host,
            "SELECT COUNT(*) FROM horscompte_tracking_code t LEFT JOIN host_dossier d "
            "ON d.id = t.dossier_id WHERE d.id IS NULL OR d.status <> 'deposited'",
        )
        == 0
    ), "codes without a deposited dossier"
    assert scalar(host, "SELECT COUNT(*) FROM host_mail_outbox") == total
    assert scalar(host, "SELECT COUNT(DISTINCT recipient) FROM host_mail_outbox") == total

    # Each mail carries the code of its own dossier (every dossier has its own address).
    with host.engine.connect() as connection:
        code_by_email = dict(
            connection.execute(
                text(
                    "SELECT d.email, t.code FROM host_dossier d "
                    "JOIN horscompte_tracking_code t ON t.dossier_id = d.id"
                )
            ).all()
        )
        mails = connection.execute(text("SELECT recipient, text FROM host_mail_outbox")).all()
    assert len(code_by_email) == total
    wrong = [r for r, body in mails if format_tracking_code(code_by_email[r]) not in body]
    assert wrong == []


# --------------------------------------------------------------------------- 2. tiny space


def test_tiny_code_space_is_retried_then_exhausted(host_factory: Any) -> None:
    assert MAX_ATTEMPTS >= 5  # TinyCodeSpace covers the space in any 5 consecutive draws
    tiny = TinyCodeSpace()
    host = host_factory(extra_plugins=[tiny])
    drafts = [new_draft(host, f"tiny-{index}") for index in range(4)]
    for draft in drafts[:3]:
        deposit(host, draft.draft_key, ANSWERS)
    codes = all_rows(host, TrackingCode)
    assert sorted(row.code for row in codes) == TINY_SPACE
    assert {row.dossier_id for row in codes} == {draft.id for draft in drafts[:3]}
    assert len(all_rows(host, OutboxMail)) == 3
    assert tiny.calls >= 3

    tiny.calls = 0
    with pytest.raises(TrackingCodeSpaceExhausted):
        deposit(host, drafts[3].draft_key, ANSWERS)
    assert tiny.calls == MAX_ATTEMPTS
    assert_left_nothing(host, drafts[3])
    assert len(all_rows(host, TrackingCode)) == 3
    assert sorted(mail.recipient for mail in all_rows(host, OutboxMail)) == sorted(
        draft.email for draft in drafts[:3]
    )


def test_collisions_are_retried_in_the_deposit_transaction(host_factory: Any) -> None:
    """Deterministic collisions: A; A (taken), B; A, B (taken), C. A collision returns no
    row from ``INSERT ... ON CONFLICT DO NOTHING`` instead of failing, so on PostgreSQL the
    deposit transaction is not aborted and no nested transaction is needed."""
    scripted = ScriptedCodes("AAAA1111", "AAAA1111", "BBBB2222", "AAAA1111", "BBBB2222", "CCCC3333")
    host = host_factory(extra_plugins=[scripted])
    drafts = [new_draft(host, f"scripted-{index}") for index in range(3)]
    calls = []
    for draft in drafts:
        before = scripted.calls
        deposit(host, draft.draft_key, ANSWERS)
        calls.append(scripted.calls - before)
    assert calls == [1, 2, 3]
    with Session(host.engine) as session:
        assert [session.get_one(TrackingCode, draft.id).code for draft in drafts] == TINY_SPACE
    assert len(all_rows(host, OutboxMail)) == 3


def test_tiny_code_space_under_concurrency(host_factory: Any) -> None:
    """4 threads deposit 10 drafts on a 3-code space: 3 deposits win, 7 exhaust the space."""
    tiny = TinyCodeSpace()
    host = host_factory(extra_plugins=[tiny])
    drafts = [new_draft(host, f"race-{index}") for index in range(10)]
    host.disabled_names()  # warm the plugin state cache before the threads start
    threads = 4
    start = threading.Barrier(threads)

    def depositor(mine: list[Dossier]) -> list[tuple[Dossier, str, int]]:
        start.wait(timeout=HANG_GUARD_SECONDS)
        outcomes = []
        for draft in mine:
            before = tiny.thread_calls()
            try:
                deposit(host, draft.draft_key, ANSWERS)
                outcome = "deposited"
            except TrackingCodeSpaceExhausted:
                outcome = "exhausted"
            outcomes.append((draft, outcome, tiny.thread_calls() - before))
        return outcomes

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(depositor, drafts[n::threads]) for n in range(threads)]
        results = [item for future in futures for item in future.result(timeout=HANG_GUARD_SECONDS)]
    assert sorted(outcome for _, outcome, _ in results) == ["deposited"] * 3 + ["exhausted"] * 7
    won = [draft for draft, outcome, _ in results if outcome == "deposited"]
    codes = all_rows(host, TrackingCode)
    assert sorted(row.code for row in codes) == TINY_SPACE
    assert {row.dossier_id for row in codes} == {draft.id for draft in won}
    for draft, outcome, calls in results:
        if outcome == "exhausted":
            assert calls == MAX_ATTEMPTS
            assert_left_nothing(host, draft)
        else:
            assert 1 <= calls <= MAX_ATTEMPTS
            assert reload(host, draft).status == "deposited"
    mails = all_rows(host, OutboxMail)
    assert sorted(mail.recipient for mail in mails) == sorted(draft.email for draft in won)
    assert tiny.calls == sum(calls for _, _, calls in results)


# --------------------------------------------------------------------------- 3. atomicity


def test_failing_later_step_rolls_the_whole_deposit_back(host_factory: Any) -> None:
    host = host_factory(extra_plugins=[FailingLastStep()])
    draft = new_draft(host, "later-step")
    with pytest.raises(RuntimeError, match="later step"):
        deposit(host, draft.draft_key, ANSWERS)
    assert_left_nothing(host, draft)
    assert all_rows(host, TrackingCode) == [] and all_rows(host, OutboxMail) == []


@pytest.mark.parametrize(
    "bad_code", ["X" * 65, "", 12345, b"AAAA1111"], ids=["65-chars", "empty", "int", "bytes"]
)
def test_unusable_generated_code_fails_the_deposit(host_factory: Any, bad_code: Any) -> None:
    scripted = ScriptedCodes(bad_code)
    host = host_factory(extra_plugins=[scripted])
    draft = new_draft(host, "bad-code")
    with pytest.raises(ValueError, match="unusable"):
        deposit(host, draft.draft_key, ANSWERS)
    assert scripted.calls == 1  # not retried: this is not a collision
    assert_left_nothing(host, draft)
    assert all_rows(host, TrackingCode) == [] and all_rows(host, OutboxMail) == []


def test_generator_returning_none_leaves_it_to_the_default(host_factory: Any) -> None:
    """firstresult: None means "next implementation", i.e. the plugin's default draw."""
    scripted = ScriptedCodes(None)
    host = host_factory(extra_plugins=[scripted])
    draft = new_draft(host, "none-code")
    deposit(host, draft.draft_key, ANSWERS)
    assert scripted.calls == 1
    [row] = all_rows(host, TrackingCode)
    assert row.dossier_id == draft.id and re.fullmatch(r"[0-9A-Za-z!$*=@]{12}", row.code)


def test_a_64_character_code_is_accepted(host_factory: Any) -> None:
    host = host_factory(extra_plugins=[ScriptedCodes("Y" * 64)])
    draft = new_draft(host, "long-code")
    deposit(host, draft.draft_key, ANSWERS)
    [row] = all_rows(host, TrackingCode)
    assert row.code == "Y" * 64


def test_mail_failing_after_the_code_insert_rolls_the_code_back(host: Any) -> None:
    """The code is inserted, then the acknowledgment mail is refused
    (CR/LF in the address): the code goes with the rest of the transaction."""
    draft = create_draft(
        host,
        the_demarche(host),
        {**identity("x"), "email": "lea@exemple.fr\r\nBcc: spam@exemple.fr"},
        None,
    )
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        deposit(host, draft.draft_key, ANSWERS)
    assert_left_nothing(host, draft)
    assert all_rows(host, TrackingCode) == [] and all_rows(host, OutboxMail) == []


def test_non_collision_integrity_error_fails_the_deposit_and_leaves_nothing(
    host_factory: Any,
) -> None:
    host = host_factory(extra_plugins=[CodeAlreadyIssued()])
    draft = new_draft(host, "pk-conflict")
    with pytest.raises(IntegrityError, match=r"dossier_id|horscompte_tracking_code"):
        deposit(host, draft.draft_key, ANSWERS)
    assert_left_nothing(host, draft)
    assert all_rows(host, TrackingCode) == [] and all_rows(host, OutboxMail) == []


def test_non_collision_integrity_error_is_not_reported_as_an_exhausted_space(
    host_factory: Any,
) -> None:
    counting = ScriptedCodes("AAAA1111", "BBBB2222", "CCCC3333")  # all distinct, all free
    host = host_factory(extra_plugins=[CodeAlreadyIssued(), counting])
    draft = new_draft(host, "pk-conflict")
    with pytest.raises(IntegrityError) as raised:
        deposit(host, draft.draft_key, ANSWERS)
    # 1 draw for the first code, then the plugin's insert fails on dossier_id: retrying
    # with other codes cannot help.
    assert counting.calls <= 2, f"generator called {counting.calls} times, no code collided"
    assert not isinstance(raised.value, TrackingCodeSpaceExhausted)


# --------------------------------------------------------------------------- 4. bounded cost


def deposit_many(host: Any, count: int, tag: str) -> None:
    demarche = the_demarche(host)
    for index in range(count):
        draft = create_draft(host, demarche, identity(f"{tag}-{index}"), None)
        deposit(host, draft.draft_key, ANSWERS)


def one_deposit_statements(host: Any, tag: str) -> list[str]:
    draft = new_draft(host, tag)
    host.disabled_names()  # fresh: TTL patched long, so no plugin state read mid-deposit
    with recorded_statements(host) as statements:
        deposit(host, draft.draft_key, ANSWERS)
    return statements


UNIQUE_KEYS = {
    "horscompte_tracking_code": ("dossier_id", "code"),
    "host_dossier": ("id", "draft_key"),
    "host_mail_outbox": ("id",),
}
# Tables whose size does not grow with the dossiers: one row per setting key / per plugin.
FIXED_SIZE_TABLES = {"horscompte_setting", "horscompte_settings_version", "host_plugin_state"}


def unbounded(statement: str) -> str | None:
    """Why ``statement`` could touch a number of rows growing with the dossiers, or None."""
    lowered = re.sub(r"%\(\w+\)s", "?", statement.lower())  # psycopg's named parameters
    if not lowered.startswith(("select", "update", "delete")):
        return None
    where = lowered.partition(" where ")[2]
    for table in sorted(set(re.findall(r"\b(?:host|horscompte)_[a-z_]+\b", lowered))):
        if table in FIXED_SIZE_TABLES:
            continue
        keys = UNIQUE_KEYS.get(table)
        if keys is None:
            return f"unexpected table {table}"
        if not where:
            return f"no WHERE on {table}"
        if not any(re.search(rf"\b{table}\.{key}\s*=|(?<![.\w]){key}\s*=", where) for key in keys):
            return f"WHERE without equality on a unique key of {table}"
    return None


@pytest.mark.slow
def test_deposit_statements_do_not_depend_on_the_number_of_dossiers(
    host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet(host, monkeypatch)
    deposit_many(host, 10, "small")
    small = one_deposit_statements(host, "probe-small")
    deposit_many(host, 289, "large")
    assert scalar(host, "SELECT COUNT(*) FROM horscompte_tracking_code") == 300
    large = one_deposit_statements(host, "probe-large")

    assert len(small) == len(large) and small == large, (small, large)
    assert 0 < len(small) <= 15, small
    assert [why for why in map(unbounded, small) if why] == []
    # The one check of uniqueness is the database's own unique index on the code.
    columns = {
        tuple(index["column_names"])
        for index in inspect(host.engine).get_indexes("horscompte_tracking_code")
        if index["unique"]
    } | {
        tuple(constraint["column_names"])
        for constraint in inspect(host.engine).get_unique_constraints("horscompte_tracking_code")
    }
    assert ("code",) in columns


def test_statement_checker_flags_scans() -> None:
    assert unbounded("SELECT code FROM horscompte_tracking_code") is not None
    assert unbounded("SELECT * FROM horscompte_tracking_code WHERE issued_at > ?") is not None
    assert unbounded("SELECT * FROM horscompte_tracking_code WHERE code = ?") is None
    assert unbounded("SELECT * FROM horscompte_tracking_code WHERE policy_code = ?") is not None
    assert unbounded("SELECT * FROM host_dossier WHERE host_dossier.draft_key = ?") is None
    assert unbounded("SELECT * FROM host_dossier WHERE status = ?") is not None
    assert (
        unbounded("UPDATE host_dossier SET a=1 WHERE host_dossier.id = %(host_dossier_id)s") is None
    )
    assert unbounded("SELECT key FROM horscompte_setting") is None
    assert unbounded("SELECT * FROM host_account") is not None
    assert unbounded("INSERT INTO horscompte_tracking_code (code) VALUES (?)") is None


# --------------------------------------------------------------------------- 5. once only


def test_depositing_twice_raises_and_creates_nothing(host: Any, clock: Any) -> None:
    draft = new_draft(host, "twice")
    deposit(host, draft.draft_key, ANSWERS)
    first = reload(host, draft)
    [code] = all_rows(host, TrackingCode)
    clock.advance(minutes=5)
    with pytest.raises(AlreadyDeposited):
        deposit(host, draft.draft_key, {"subject": "autre", "message": "autre"})
    again = reload(host, draft)
    assert again.status == "deposited" and again.deposited_at == first.deposited_at
    assert again.answers == ANSWERS
    assert [row.code for row in all_rows(host, TrackingCode)] == [code.code]
    assert len(all_rows(host, OutboxMail)) == 1


def test_simultaneous_double_deposit_deposits_once(host: Any) -> None:
    draft = new_draft(host, "double-click")
    host.disabled_names()
    start = threading.Barrier(4)

    def click(_: int) -> str:
        start.wait(timeout=HANG_GUARD_SECONDS)
        try:
            deposit(host, draft.draft_key, ANSWERS)
        except AlreadyDeposited:
            return "already"
        return "deposited"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(click, range(4), timeout=HANG_GUARD_SECONDS))
    assert outcomes == ["already"] * 3 + ["deposited"]
    assert len(all_rows(host, TrackingCode)) == 1
    assert len(all_rows(host, OutboxMail)) == 1
