"""The lookup and the deposit on a file of 10^6 rows per table, and a lookup after 10^4
wrong ones (see ``run.py``)."""

from __future__ import annotations

import itertools
import random
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Operation, interleaved, progress
from figures import RUNS, paired, ratio_figure, repeated
from lookup_targets import draw_once, fresh_client, random_code, targets_of
from sizes import DEFAULT_POLICY, Sizes

from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit
from opencrm_horscompte.tracking.codes import format_tracking_code


def query_plan(path: Path, statement: str, parameters: Any) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return [row[-1] for row in rows]
    finally:
        connection.close()


def bench_scaling(sizes: Sizes, small_path: Path, big_path: Path) -> dict[str, Any]:
    rows = {
        "small": benchlib.count_rows(str(small_path)),
        "big": benchlib.count_rows(str(big_path)),
    }
    small = benchlib.build_host(benchlib.sqlite_url(small_path))
    big = benchlib.build_host(benchlib.sqlite_url(big_path))
    rng = random.Random(7)
    count = RUNS * sizes.scaling_iterations + 10
    next_target = {
        "small": draw_once(targets_of(small_path, count, rng)),
        "big": draw_once(targets_of(big_path, count, rng)),
    }
    hosts = {"small": small, "big": big}
    demarches = {name: benchlib.the_demarche(host) for name, host in hosts.items()}
    counter = itertools.count()
    try:
        for name, host in hosts.items():
            for _ in range(5):
                target = next_target[name]()
                benchlib.lookup_handler(
                    host, target.email, format_tracking_code(target.code), fresh_client()
                )
                benchlib.deposit_one(host, demarches[name], f"scale-warm-{next(counter)}")
        with benchlib.recording(big.engine) as recorder:
            target = next_target["big"]()
            benchlib.lookup_handler(
                big, target.email, format_tracking_code(target.code), fresh_client()
            )
        candidates = next(
            (r for r in recorder.data if "FROM horscompte_tracking_code" in r.statement), None
        )
        plans = [
            query_plan(big_path, r.statement, r.parameters)
            for r in recorder.data
            if r.statement.lstrip().upper().startswith(("SELECT", "UPDATE"))
        ]

        def prepare_lookup(name: str) -> Callable[[int], tuple[Any, ...]]:
            def prepare(_index: int) -> tuple[Any, ...]:
                target = next_target[name]()
                client = fresh_client()
                return (hosts[name], target.email, format_tracking_code(target.code), client)

            return prepare

        def prepare_deposit(name: str) -> Callable[[int], tuple[Any, ...]]:
            def prepare(_index: int) -> tuple[Any, ...]:
                identity = benchlib.identity(f"scale-{next(counter)}")
                made = create_draft(hosts[name], demarches[name], identity, None)
                return (hosts[name], made.draft_key, benchlib.ANSWERS, made)

            return prepare

        operations = [
            Operation("lookup_small", benchlib.lookup_handler, prepare_lookup("small")),
            Operation("lookup_big", benchlib.lookup_handler, prepare_lookup("big")),
            Operation("deposit_small", deposit, prepare_deposit("small")),
            Operation("deposit_big", deposit, prepare_deposit("big")),
        ]
        per_run, load_done = repeated(
            "scaling", lambda: interleaved(operations, sizes.scaling_iterations, rng)
        )
    finally:
        small.engine.dispose()
        big.engine.dispose()
    figures = {
        "lookup_scaling": ratio_figure(paired(per_run, "lookup_big", "lookup_small"), load_done),
        "deposit_scaling": ratio_figure(paired(per_run, "deposit_big", "deposit_small"), load_done),
    }
    return {
        "figures": figures,
        "rows": rows,
        "candidates_query_plan": (
            query_plan(big_path, candidates.statement, candidates.parameters) if candidates else []
        ),
        "lookup_query_plans": plans,
    }


def bench_wrong_lookups(sizes: Sizes, big_path: Path) -> dict[str, Any]:
    host = benchlib.build_host(benchlib.sqlite_url(big_path))
    rng = random.Random(13)
    owner = targets_of(big_path, 1, rng)[0]
    policy = DEFAULT_POLICY

    def wrong(email: str) -> tuple[Any, ...]:
        return (host, email, format_tracking_code(random_code(policy, rng)), fresh_client())

    try:
        progress(f"wrong lookups: {sizes.wrong_lookups:,} with {owner.email}")
        for index in range(sizes.wrong_lookups):
            benchlib.lookup_handler(*wrong(owner.email))
            if (index + 1) % 2_000 == 0:
                progress(f"wrong lookups: {index + 1:,} of {sizes.wrong_lookups:,}")
        with sqlite3.connect(big_path) as connection:
            challenges = connection.execute("SELECT COUNT(*) FROM horscompte_challenge").fetchone()
        operations = [
            Operation("same", benchlib.lookup_handler, lambda _i: wrong(owner.email)),
            Operation(
                "fresh",
                benchlib.lookup_handler,
                lambda _i: wrong(f"inconnu-{secrets.token_hex(6)}@exemple.fr"),
            ),
        ]
        per_run, load_done = repeated(
            "wrong lookups", lambda: interleaved(operations, sizes.wrong_iterations, rng)
        )
    finally:
        host.engine.dispose()
    figure = ratio_figure(paired(per_run, "same", "fresh"), load_done)
    return {
        "figures": {"lookup_after_10k_wrong_same_email": figure},
        "wrong_lookups_before": sizes.wrong_lookups,
        "challenges_after": challenges[0],
    }
