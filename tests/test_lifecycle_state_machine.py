"""The validation-code lifecycle as a hypothesis state machine, through the HTTP pages of the
reference host (signed carriers included), on SQLite and on PostgreSQL (issue 8).

Rules: look up a right, wrong or unknown pair; resend from any page held; verify a right or
wrong code; four verifies of one right code at once; tamper with a carrier; move the host
clock (past the resend cooldown, the expiry, a backoff, the lock); purge.

A model predicts every reply from the documented rules (README, "Lookup"): the limits and
their fixed windows, the guard's failures and waits, each code's attempts, expiry, use and
replacement. Invariants after every step: the reply is the predicted one; never two
successes for one code; dossier access exactly while a grant from a right code lives; the
database's failure counters and attempts equal the model's (so the lock comes at exactly
``LOCK_AFTER_FAILURES``); and a decoy's reply is byte for byte the reply a real challenge
gives in the same state (hidden values aside).

CI runs a bounded number of examples (``HORSCOMPTE_STATEFUL_EXAMPLES``, default 40 per
database, up to 50 steps each). Run longer with e.g.
``HORSCOMPTE_STATEFUL_EXAMPLES=2000 HORSCOMPTE_STATEFUL_STEPS=60 pytest
tests/test_lifecycle_state_machine.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from conftest import Clock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from lookup_helpers import (
    EMAIL,
    code_in,
    deposit,
    lookup,
    resend,
    submit,
    token_of,
    validation_mails,
    without_hidden_values,
)
from processes import all_at_once
from sqlalchemy import delete
from sqlmodel import Session, select

from opencrm_horscompte.base import limits
from opencrm_horscompte.base.emails import email_key
from opencrm_horscompte.base.models import (
    AuditRecord,
    Challenge,
    FailureGuard,
    ThrottleCounter,
)
from opencrm_horscompte.base.throttle import Limit, throttle_key
from opencrm_horscompte.base.tokens import unsign
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.models import HostSession
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.lookup.pages import CHALLENGE_PURPOSE
from opencrm_horscompte.lookup.purge import KEEP_SPENT_CHALLENGES, purge_expired_state
from opencrm_horscompte.lookup.start import pair_guard
from opencrm_horscompte.lookup.validation import NO_WAIT_SLACK, backoff, verify

EXAMPLES = int(os.environ.get("HORSCOMPTE_STATEFUL_EXAMPLES", "40"))
STEPS = int(os.environ.get("HORSCOMPTE_STATEFUL_STEPS", "50"))
EXPIRY = timedelta(minutes=10)  # the default setting
CARRIER_MAX_AGE = limits.CHALLENGE_TOKEN_MAX_AGE
CLIENT = "127.0.0.1"
UNKNOWN = "personne.inconnue@exemple.fr"
WRONG_CODES = ("ABCD-EFGH-JKLM", "ZZZZ-YYYY-XXXX")

ALREADY_RESENT = "Un nouveau code vous a déjà été envoyé"
NEWER_CODE = "Saisissez le code du dernier courriel reçu"
SEEN: Counter[str] = Counter()  # outcomes reached, printed at the end (coverage of the rules)
MARKERS = {
    "wrong": "n&#39;est pas le bon",
    "expired": "Ce code a expiré",
    "used": "Ce code a déjà servi",
    "replaced": "Un code plus récent",
    "exhausted": "trop d&#39;essais erronés",
    "wait": "patientez",
    "locked": "est bloquée",
    "carrier": "Votre demande a expiré",
}


@dataclass
class Live:
    """The model of one challenge row."""

    id: int
    guard: str
    real: bool
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    consumed_at: datetime | None = None
    code: str | None = None  # known when it was mailed (real only)


@dataclass
class Guard:
    failures: int = 0
    not_before: datetime | None = None


@dataclass
class Page:
    token: str
    challenge_id: int
    real: bool
    issued_at: datetime


@dataclass
class Model:
    counters: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    rows: dict[int, Live] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)  # guard -> id of its live row
    guards: dict[str, Guard] = field(default_factory=dict)
    granted_at: datetime | None = None
    successes: Counter[int] = field(default_factory=Counter)
    session_page: Page | None = None  # the code entry page the browser's session describes


class Lifecycle(RuleBasedStateMachine):
    host: Any
    clock: Clock
    dossier_id: int
    tracking_code: str

    def __init__(self) -> None:
        super().__init__()
        SEEN["examples"] += 1
        # (the @initialize rule then opens a real page and a decoy page)
        self._reset_database()
        self.clock.current = datetime.fromisoformat("2026-11-28T09:00:00+00:00")
        self.client = create_app(self.host).test_client()
        self.model = Model()
        self.pages: list[Page] = []
        self.replies: dict[str, tuple[int, str]] = {}  # outcome -> reply, real or decoy
        self.mails_seen = len(validation_mails(self.host))

    def _reset_database(self) -> None:
        with Session(self.host.engine) as session, session.begin():
            for model in (Challenge, FailureGuard, ThrottleCounter, AuditRecord, HostSession):
                session.exec(delete(model))
            session.exec(delete(OutboxMail))

    # ----------------------------------------------------------------- model helpers

    def now(self) -> datetime:
        return self.clock()

    def _hit(self, scope: str, value: str, limit: Limit) -> bool:
        """A fixed window: the first hit starts it, a hit at its end or later starts anew."""
        key = throttle_key(self.host.secret_keys[-1], scope, value)
        entry = self.model.counters.get(key)
        if entry is None or entry[0] + limit.window <= self.now():
            entry = (self.now(), 0)
        self.model.counters[key] = (entry[0], entry[1] + 1)
        return entry[1] + 1 <= limit.limit

    def _issue(self, guard: str, real: bool, mailed: bool, challenge_id: int) -> None:
        old = self.model.live.pop(guard, None)
        if old is not None:
            self.model.rows.pop(old, None)
        now = self.now()
        code = None
        if mailed:
            sent = validation_mails(self.host)
            assert len(sent) == self.mails_seen + 1, "exactly one validation mail expected"
            self.mails_seen += 1
            code = code_in(sent[-1].text)
        else:
            assert len(validation_mails(self.host)) == self.mails_seen, "no mail expected"
        self.model.rows[challenge_id] = Live(
            challenge_id, guard, real, now, now + EXPIRY, code=code
        )
        self.model.live[guard] = challenge_id

    def _challenge_of(self, page_text: str) -> tuple[str, int]:
        token = token_of(page_text)
        carried = unsign(self.host, CHALLENGE_PURPOSE, token, 7200)
        assert isinstance(carried, dict)
        return token, int(carried["challenge"])

    def _same_reply_as_before(self, outcome: str, response: Any) -> None:
        """Indistinguishability: one reply per outcome, whoever asked (real or decoy)."""
        reply = (response.status_code, without_hidden_values(response.text))
        self.replies.setdefault(outcome, reply)
        assert self.replies[outcome] == reply, f"{outcome}: the reply differs"

    def _expect(self, page: Page, *, carrier: bool = True) -> tuple[str, Live | None]:
        """What verifying ``page`` must answer (before any attempt is taken)."""
        now = self.now()
        if carrier and now - page.issued_at > CARRIER_MAX_AGE:
            return "carrier", None
        row = self.model.rows.get(page.challenge_id)
        if row is None:
            return "replaced", None
        if row.consumed_at is not None:
            return "used", row
        guard = self.model.guards.get(row.guard, Guard())
        waiting = guard.not_before is not None and guard.not_before > now
        if waiting and guard.failures >= limits.LOCK_AFTER_FAILURES:
            return "locked", row
        if row.attempts >= limits.ATTEMPTS_PER_CODE:
            return "exhausted", row
        if row.expires_at <= now:
            return "expired", row
        if waiting:
            return "wait", row
        return "attempt", row

    def _fail(self, row: Live) -> None:
        guard = self.model.guards.setdefault(row.guard, Guard())
        guard.failures += 1
        if guard.failures >= limits.LOCK_AFTER_FAILURES:
            guard.not_before = self.now() + limits.LOCK_DURATION
        else:
            wait = backoff(guard.failures)
            guard.not_before = self.now() + wait if wait else self.now() - NO_WAIT_SLACK

    # ----------------------------------------------------------------- rules

    @initialize()
    def a_real_and_a_decoy_page(self) -> None:
        self.look_up("right")
        self.look_up("wrong-0")

    def _page(self, data: st.DataObject) -> Page:
        """Mostly one of the newest pages (as a citizen would), sometimes any older one."""
        recent = self.pages[-3:]
        return data.draw(st.sampled_from(recent) | st.sampled_from(self.pages))

    @rule(which=st.sampled_from(["right", "wrong-0", "wrong-1", "unknown"]))
    def look_up(self, which: str) -> None:
        email, typed = {
            "right": (EMAIL, self.tracking_code),
            "wrong-0": (EMAIL, WRONG_CODES[0]),
            "wrong-1": (EMAIL, WRONG_CODES[1]),
            "unknown": (UNKNOWN, self.tracking_code),
        }[which]
        SEEN[f"lookup:{which}"] += 1
        response = lookup(self.client, email, typed)
        assert response.status_code == 200
        self._same_reply_as_before("lookup", response)
        token, challenge_id = self._challenge_of(response.text)
        real = which == "right"
        key = email_key(email)
        guard = pair_guard(self.host, key, typed)
        allowed = self._hit(limits.LOOKUP_CLIENT.scope, CLIENT, limits.LOOKUP_CLIENT)
        if real:
            allowed &= self._hit(
                limits.LOOKUP_EMAIL_MATCHED.scope, key, limits.LOOKUP_EMAIL_MATCHED
            )
        else:
            allowed &= self._hit(limits.LOOKUP_EMAIL.scope, key, limits.LOOKUP_EMAIL)
        allowed &= self._hit(limits.LOOKUP_DOSSIER_MAILS.scope, guard, limits.LOOKUP_DOSSIER_MAILS)
        live = self.model.rows.get(self.model.live.get(guard, -1))
        young = live is not None and live.created_at > self.now() - limits.REPEAT_WINDOW
        if young and live is not None and live.attempts == 0:  # a double click: kept
            SEEN["lookup:repeated"] += 1
            assert challenge_id == live.id
            assert len(validation_mails(self.host)) == self.mails_seen, "no mail expected"
        else:
            self._issue(guard, real, real and allowed, challenge_id)
        self.pages.append(Page(token, challenge_id, real, self.now()))
        self.model.session_page = self.pages[-1]

    def _newer_session_page(self, page: Page) -> Page | None:
        """The session's page, when it is another code's and its carrier is still good:
        a page whose code was replaced then leads there (a double click, Back)."""
        shown = self.model.session_page
        if shown is None or shown.challenge_id == page.challenge_id:
            return None
        return shown if self.now() - shown.issued_at <= CARRIER_MAX_AGE else None

    @rule(data=st.data())
    def resend_from_a_page(self, data: st.DataObject) -> None:
        if self.pages:
            self._resend(self._page(data))

    def _resend(self, page: Page) -> None:
        response = resend(self.client, page.token)
        now = self.now()
        if now - page.issued_at > CARRIER_MAX_AGE:
            assert response.status_code == 400 and MARKERS["carrier"] in response.text
            return
        row = self.model.rows.get(page.challenge_id)
        if row is None:
            newer = self._newer_session_page(page)
            if newer is not None:  # the newer code's page, told it was sent; nothing mailed
                assert response.status_code == 200 and ALREADY_RESENT in response.text
                assert token_of(response.text) == newer.token
                assert len(validation_mails(self.host)) == self.mails_seen
                self._same_reply_as_before("resend-replaced-newer", response)
                return
            assert response.status_code == 400 and MARKERS["replaced"] in response.text
            self._same_reply_as_before("resend-replaced", response)
            return
        if row.consumed_at is not None:  # a spent code's page can't mail a new one
            assert response.status_code == 400 and MARKERS["used"] in response.text
            assert len(validation_mails(self.host)) == self.mails_seen
            return
        if row.created_at + limits.RESEND_COOLDOWN > now:
            assert response.status_code == 429, response.status_code
            return
        if not self._hit(limits.LOOKUP_RESEND.scope, row.guard, limits.LOOKUP_RESEND):
            assert response.status_code == 429, response.status_code
            return
        assert response.status_code == 200, response.status_code
        allowed = self._hit(
            limits.LOOKUP_DOSSIER_MAILS.scope, row.guard, limits.LOOKUP_DOSSIER_MAILS
        )
        token, challenge_id = self._challenge_of(response.text)
        self._issue(row.guard, row.real, row.real and allowed, challenge_id)
        self.pages.append(Page(token, challenge_id, row.real, now))
        self.model.session_page = self.pages[-1]
        self._same_reply_as_before("resent", response)

    @rule(data=st.data(), right=st.booleans())
    def verify_a_code(self, data: st.DataObject, right: bool) -> None:
        if self.pages:
            self._verify(self._page(data), right)

    @rule(data=st.data(), wait=st.sampled_from([61, 16 * 60]))
    def a_burst_of_wrong_codes_then_a_new_code(self, data: st.DataObject, wait: int) -> None:
        """Toward backoff and lock: the code's every attempt wrong, then a resend later."""
        if not self.pages:
            return
        page = self._page(data)
        for _ in range(limits.ATTEMPTS_PER_CODE + 1):
            self._verify(page, False)
        self.clock.advance(seconds=wait)
        self._resend(page)
        self._verify(self.pages[-1], False)

    @rule(data=st.data())
    def wrong_codes_until_the_lock(self, data: st.DataObject) -> None:
        """A stranger's patient attack on one guard: wrong codes, waiting out each backoff,
        a new code whenever needed, until the lock (or the carrier runs out)."""
        if not self.pages:
            return
        page = self._page(data)
        for _ in range(3 * limits.LOCK_AFTER_FAILURES):
            expected, row = self._expect(page)
            if expected in ("locked", "carrier", "replaced", "used") or row is None:
                break
            if expected in ("exhausted", "expired"):
                self.clock.advance(seconds=61)
                self._resend(page)
                page = self.pages[-1]
                continue
            if expected == "wait":
                guard = self.model.guards[row.guard]
                assert guard.not_before is not None
                self._verify(page, False)  # once during the wait: refused, not counted
                wait = guard.not_before - self.now()
                self.clock.advance(seconds=int(wait.total_seconds()) + 1)
                continue
            self._verify(page, False)
        self._verify(page, False)

    def _verify(self, page: Page, right: bool) -> None:
        expected, row = self._expect(page)
        code = row.code if right and row is not None and row.code else "000000"
        response = submit(self.client, page.token, code)
        if expected == "attempt":
            assert row is not None
            row.attempts += 1
            if row.real and code == row.code:
                expected = "granted"
                row.consumed_at = self.now()
                self.model.guards.pop(row.guard, None)
                self.model.live.pop(row.guard, None)
                self.model.successes[row.id] += 1
                self.model.granted_at = self.now()
                self.model.session_page = None  # the spent code's page leaves the session
            else:
                expected = "wrong"
                self._fail(row)
        granted = self.model.granted_at
        if expected == "used" and granted and self.now() - granted <= limits.GRANT_MAX_AGE:
            expected = "granted"  # a double click: this browser holds the access already
        newer = self._newer_session_page(page) if expected == "replaced" else None
        SEEN[expected] += 1
        if newer is not None:  # the newer code's page, asking for the last mail's code
            assert response.status_code == 400 and NEWER_CODE in response.text
            assert token_of(response.text) == newer.token
            return
        if expected == "granted":
            assert response.status_code == 303, (response.status_code, response.text)
            assert response.headers["Location"] == f"/dossiers/{self.dossier_id}"
            return
        assert MARKERS[expected] in response.text, (expected, response.text[-1500:])
        status = {"wait": 429, "locked": 429}.get(expected, 400)
        assert response.status_code == status
        if expected in ("wait", "locked"):
            guard = self.model.guards[row.guard] if row else None
            # a waiting or locked guard has its not_before set
            wait = cast(datetime, guard.not_before) - self.now() if guard else ""
            expected = f"{expected}:{wait}"
        if expected == "wrong":  # the reply tells the tries left: the same for a decoy
            assert row is not None
            expected = f"wrong:{limits.ATTEMPTS_PER_CODE - row.attempts}"
        self._same_reply_as_before(f"verify:{expected}", response)

    @rule(data=st.data())
    def four_right_codes_at_once(self, data: st.DataObject) -> None:
        mailed = [p for p in self.pages if (r := self.model.rows.get(p.challenge_id)) and r.code]
        if not mailed:
            return
        page = data.draw(st.sampled_from(mailed))
        expected, row = self._expect(page, carrier=False)  # verify() itself, no carrier
        assert row is not None and row.code is not None
        code = row.code
        kinds = all_at_once(4, lambda: verify(self.host, page.challenge_id, code).kind)
        if expected == "attempt":
            assert Counter(kinds) == {"granted": 1, "used": 3}, kinds
            row.attempts += 1
            row.consumed_at = self.now()
            self.model.guards.pop(row.guard, None)
            self.model.live.pop(row.guard, None)
            self.model.successes[row.id] += 1
            # (the grant lives in no browser: verify() was called directly)
        else:
            assert set(kinds) == {expected}, (expected, kinds)

    @rule(data=st.data())
    def tamper_with_a_carrier(self, data: st.DataObject) -> None:
        if not self.pages:
            return
        page = data.draw(st.sampled_from(self.pages))
        payload, stamp, signature = page.token.split(".")
        forged = f"{payload}.{stamp}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
        before = _state(self.host)
        response = submit(self.client, forged, "000000")
        assert response.status_code == 400 and MARKERS["carrier"] in response.text
        assert _state(self.host) == before

    @rule(
        seconds=st.sampled_from(
            [1, 2, 5, 30, 61, 61, 61, 5 * 60, 11 * 60, 16 * 60, 31 * 60, 2 * 3600 + 1, 86400 + 1]
        )
    )
    def move_the_clock(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)

    @rule()
    def purge(self) -> None:
        purge_expired_state(self.host)
        cutoff = self.now() - KEEP_SPENT_CHALLENGES
        for challenge_id, row in list(self.model.rows.items()):
            spent = row.consumed_at is not None and row.consumed_at < cutoff
            if row.expires_at < cutoff or spent:
                del self.model.rows[challenge_id]
                if self.model.live.get(row.guard) == challenge_id:
                    del self.model.live[row.guard]
        for key, guard in list(self.model.guards.items()):
            idle = guard.not_before is None or guard.not_before < cutoff
            if idle and guard.failures < limits.LOCK_AFTER_FAILURES:
                del self.model.guards[key]
        day = timedelta(days=1)
        self.model.counters = {
            key: (start, count)
            for key, (start, count) in self.model.counters.items()
            if start >= self.now() - day
        }

    # ----------------------------------------------------------------- invariants

    @invariant()
    def never_two_successes_for_one_code(self) -> None:
        assert all(count <= 1 for count in self.model.successes.values())
        with Session(self.host.engine) as session:
            consumed = [row for row in session.exec(select(Challenge)) if row.consumed_at]
        assert len(consumed) <= sum(self.model.successes.values())

    @invariant()
    def counters_are_exact(self) -> None:
        with Session(self.host.engine) as session:
            rows = {row.id: row for row in session.exec(select(Challenge))}
            guards = {g.key: g.failures for g in session.exec(select(FailureGuard))}
        assert set(rows) == set(self.model.rows), (set(rows), set(self.model.rows))
        for challenge_id, row in self.model.rows.items():
            stored = rows[challenge_id]
            assert stored.attempts == row.attempts, (challenge_id, stored.attempts, row.attempts)
            assert (stored.consumed_at is not None) == (row.consumed_at is not None)
        for key in set(guards) | set(self.model.guards):
            assert guards.get(key, 0) == self.model.guards.get(key, Guard()).failures, key

    @invariant()
    def access_only_with_a_live_grant(self) -> None:
        if not hasattr(self, "client"):
            return
        status = self.client.get(f"/dossiers/{self.dossier_id}").status_code
        granted = self.model.granted_at
        alive = granted is not None and self.now() - granted <= limits.GRANT_MAX_AGE
        assert status == (200 if alive else 403), (status, granted, self.now())


def _state(host: Any) -> tuple[int, ...]:
    with Session(host.engine) as session:
        return tuple(
            len(list(session.exec(select(model))))
            for model in (Challenge, FailureGuard, ThrottleCounter, OutboxMail, AuditRecord)
        )


def test_the_challenge_lifecycle_holds_every_invariant(
    host: Any, client: Any, clock: Clock
) -> None:
    deposited = deposit(client, host)

    class Machine(Lifecycle):
        pass

    Machine.host = host
    Machine.clock = clock
    Machine.dossier_id = deposited.dossier_id
    Machine.tracking_code = deposited.code
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
    print(f"\nverify outcomes reached: {dict(SEEN)}")
