"""The lookup and verify phase: ``lookup_vs_raw``, ``verify_vs_raw``, the page and the
lock hold (see ``run.py``)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Operation, Sample, interleaved
from figures import RUNS, exact_figure, paired, ratio_figure, repeated
from lookup_targets import Target, draw_once, fresh_client, targets_of
from sizes import Sizes

from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.hookspecs.host import Request
from opencrm_horscompte.lookup import pages as lookup_pages
from opencrm_horscompte.lookup.validation import verify
from opencrm_horscompte.tracking.codes import format_tracking_code


def lookup_request(target: Target, client: str, code: str | None = None) -> Request:
    form = {
        "email": target.email,
        "tracking_code": format_tracking_code(code or target.code),
        "csrf_token": "benchmark",
    }
    return Request(
        method="POST",
        path=LOOKUP_PATH,
        form=form,
        client_addr=client,
        session={},
        locale="fr",
        csrf_token="benchmark",
    )


def make_base(workdir: Path) -> Path:
    """A seeded host file with a few real deposits, one matching lookup, one missing
    lookup and one wrong verify, so every table has a real row to copy."""
    path = workdir / "lookup-base.sqlite3"
    host = benchlib.build_host(benchlib.sqlite_url(path), seed_data=True)
    demarche = benchlib.the_demarche(host)
    dossiers = [benchlib.deposit_one(host, demarche, f"lookup-{index}") for index in range(5)]
    raw = benchlib.raw_sqlite(str(path))
    email, code = raw.execute(
        "SELECT email, code FROM horscompte_tracking_code WHERE dossier_id = ?", (dossiers[0].id,)
    ).fetchone()
    challenge = benchlib.lookup_handler(host, email, format_tracking_code(code), "192.0.2.9")
    benchlib.lookup_handler(host, "nobody@exemple.fr", format_tracking_code(code), "192.0.2.9")
    verify(host, challenge, "0" * 6)
    raw.close()
    host.engine.dispose()
    return path


def capture(host: Any, raw: sqlite3.Connection, target: Target) -> dict[str, Any]:
    """One real lookup and one right-code verify, with their statements recorded."""
    host.disabled_names()  # refresh the host's plugin-state cache: not in the recording
    with benchlib.recording(host.engine) as lookup_recorder:
        challenge_id = benchlib.lookup_handler(
            host, target.email, format_tracking_code(target.code), "192.0.2.1"
        )
    code = benchlib.last_code(raw, target.email)
    host.disabled_names()
    with benchlib.recording(host.engine) as verify_recorder:
        outcome = verify(host, challenge_id, code)
    return {
        "challenge_id": challenge_id,
        "lookup": lookup_recorder,
        "verify": verify_recorder,
        "verify_outcome": outcome.kind,
    }


def bench_lookup(sizes: Sizes, small_path: Path) -> dict[str, Any]:
    host = benchlib.build_host(benchlib.sqlite_url(small_path))
    raw = benchlib.raw_sqlite(str(small_path))
    rng = random.Random(5)
    needed = 5 * RUNS * sizes.lookup_iterations + 10  # five operations draw one each
    targets = targets_of(small_path, needed, rng)
    next_target = draw_once(targets)
    try:
        for _ in range(5):
            target = next_target()
            benchlib.lookup_handler(
                host, target.email, format_tracking_code(target.code), fresh_client()
            )
        capture_target = next_target()
        captured = capture(host, raw, capture_target)
        lookup_statements = captured["lookup"].data
        verify_statements = captured["verify"].data
        hex_keys = benchlib.hex_keys(lookup_statements)
        captured_id = captured["challenge_id"]
        if benchlib.occurrences(verify_statements, captured_id) < 2:
            raise RuntimeError("the verify statements no longer name their challenge")
        raw_verified: list[bool] = []

        outcomes: dict[str, int] = {}
        challenges: list[int] = []
        matched: list[bool] = []

        def one_run(clock: benchlib.LockClock) -> dict[str, list[Sample]]:
            probe = benchlib.LockProbe(clock)
            raw_probe = benchlib.LockProbe(benchlib.LockClock())

            def prepare_lookup(_index: int) -> tuple[Any, ...]:
                target = next_target()
                probe.mark()
                return (host, target.email, format_tracking_code(target.code), fresh_client())

            def after_lookup(sample: Sample, challenge_id: int) -> None:
                probe.take(sample, challenge_id)
                challenges.append(challenge_id)
                # Checked now, as it was when each target could come back and replace
                # its guard's live challenge.
                row = raw.execute(
                    "SELECT dossier_id FROM horscompte_challenge WHERE id = ?", (challenge_id,)
                ).fetchone()
                matched.append(row is not None and row[0] is not None)

            def prepare_raw(_index: int) -> tuple[Any, ...]:
                target = next_target()
                mapping: dict[Any, Any] = benchlib.fresh_hex_mapping(hex_keys)
                mapping[capture_target.email] = target.email
                raw_probe.mark()
                return (raw, benchlib.substituted(lookup_statements, mapping), raw_probe.clock)

            def prepare_page(_index: int) -> tuple[Any, ...]:
                return (host, lookup_request(next_target(), fresh_client()))

            def prepare_verify(_index: int) -> tuple[Any, ...]:
                target = next_target()
                challenge_id = benchlib.lookup_handler(
                    host, target.email, format_tracking_code(target.code), fresh_client()
                )
                return (host, challenge_id, benchlib.last_code(raw, target.email))

            def after_verify(_sample: Sample, outcome: Any) -> None:
                outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1

            def prepare_raw_verify(_index: int) -> tuple[Any, ...]:
                # A fresh challenge, issued by a lookup as the handler's is: the replay
                # spends a row it has never touched, as the handler does.
                target = next_target()
                challenge_id = benchlib.lookup_handler(
                    host, target.email, format_tracking_code(target.code), fresh_client()
                )
                mapping = {captured_id: challenge_id}
                return (raw, benchlib.substituted(verify_statements, mapping))

            def after_raw_verify(_sample: Sample, results: list[list[Any]]) -> None:
                raw_verified.append(bool(results[0]) and bool(results[1]))

            samples = interleaved(
                [
                    Operation("lookup", benchlib.lookup_handler, prepare_lookup, after_lookup),
                    Operation("raw", benchlib.replay, prepare_raw, raw_probe.take),
                    Operation("page", lookup_pages.lookup, prepare_page),
                    Operation("verify", verify, prepare_verify, after_verify),
                    Operation("raw_verify", benchlib.replay, prepare_raw_verify, after_raw_verify),
                ],
                sizes.lookup_iterations,
                rng,
            )
            return {**samples, "lookup_hold": probe.samples, "raw_hold": raw_probe.samples}

        with benchlib.lock_clock(host.engine) as clock:
            per_run, load_done = repeated("lookup and verify", lambda: one_run(clock))
        matching = sum(matched)
    finally:
        raw.close()
        host.engine.dispose()

    figures = {
        "lookup_vs_raw": ratio_figure(paired(per_run, "lookup", "raw"), load_done),
        "verify_vs_raw": ratio_figure(paired(per_run, "verify", "raw_verify"), load_done),
        "lookup_page_vs_raw": ratio_figure(paired(per_run, "page", "raw"), load_done),
        "lookup_lock_hold_vs_raw": ratio_figure(
            paired(per_run, "lookup_hold", "raw_hold"), load_done
        ),
        "lookup_statements": exact_figure(len(lookup_statements)),
        "verify_statements": exact_figure(len(verify_statements)),
    }
    return {
        "figures": figures,
        "lookups_measured": len(challenges),
        "lookups_matching": matching,
        "verify_outcomes": outcomes,
        "verifies_measured": RUNS * sizes.lookup_iterations,
        "capture_verify_outcome": captured["verify_outcome"],
        "raw_verify_replay_took_attempt": bool(raw_verified) and all(raw_verified),
        "raw_verifies_spent": sum(raw_verified),
        "raw_lookup_fresh_keys_per_replay": len(hex_keys),
        "lookup_transaction_control": len(captured["lookup"].control),
        "verify_transaction_control": len(captured["verify"].control),
        "lookup_sql": captured["lookup"].summary(),
        "verify_sql": captured["verify"].summary(),
    }
