"""The deposit phase: ``deposit_tx_overhead`` and its companions (see ``run.py``)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Operation, Sample, interleaved
from figures import difference_figure, paired, ratio_figure, repeated
from lookup_targets import random_code
from sizes import DEFAULT_POLICY, Sizes

from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit


def bench_deposit(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    on = benchlib.build_host(benchlib.sqlite_url(workdir / "deposit-on.sqlite3"), seed_data=True)
    off = benchlib.build_host(benchlib.sqlite_url(workdir / "deposit-off.sqlite3"), seed_data=True)
    off.set_enabled("horscompte", False, actor="benchmark")
    demarches = {id(on): benchlib.the_demarche(on), id(off): benchlib.the_demarche(off)}
    counter = itertools.count()
    raw = benchlib.raw_sqlite(str(workdir / "deposit-on.sqlite3"))
    rng = random.Random(11)

    def draft(host: Any) -> Any:
        return create_draft(
            host, demarches[id(host)], benchlib.identity(f"dep-{next(counter)}"), None
        )

    try:
        for host in (on, off):
            host.disabled_names()
            for _ in range(5):
                made = draft(host)
                deposit(host, made.draft_key, benchlib.ANSWERS, made)
        statements: dict[str, Any] = {}
        for name, host in (("enabled", on), ("disabled", off)):
            made = draft(host)
            with benchlib.recording(host.engine) as recorder:
                deposited = deposit(host, made.draft_key, benchlib.ANSWERS, made)
            statements[name] = {
                "data": len(recorder.data),
                "control": len(recorder.control),
                "sql": recorder.summary(),
            }
            if name == "enabled":
                captured, captured_dossier = recorder.data, deposited
        (captured_code,) = raw.execute(
            "SELECT code FROM horscompte_tracking_code WHERE dossier_id = ?",
            (captured_dossier.id,),
        ).fetchone()
        policy = DEFAULT_POLICY

        def one_run(
            on_clock: benchlib.LockClock, off_clock: benchlib.LockClock
        ) -> dict[str, list[Sample]]:
            probes = {"on": benchlib.LockProbe(on_clock), "off": benchlib.LockProbe(off_clock)}
            raw_probe = benchlib.LockProbe(benchlib.LockClock())
            drafts: dict[str, list[Sample]] = {"on": [], "off": []}

            def prepare_deposit(host: Any, key: str) -> Callable[[int], tuple[Any, ...]]:
                def prepare(_index: int) -> tuple[Any, ...]:
                    sample, made = benchlib.measured(draft, host)
                    drafts[key].append(sample)
                    probes[key].mark()
                    return (host, made.draft_key, benchlib.ANSWERS, made)

                return prepare

            def prepare_raw(_index: int) -> tuple[Any, ...]:
                made = draft(on)
                mapping = {
                    captured_dossier.draft_key: made.draft_key,
                    captured_dossier.id: made.id,
                    captured_code: random_code(policy, rng),
                }
                raw_probe.mark()
                return (raw, benchlib.substituted(captured, mapping), raw_probe.clock)

            samples = interleaved(
                [
                    Operation("on", deposit, prepare_deposit(on, "on"), probes["on"].take),
                    Operation("off", deposit, prepare_deposit(off, "off"), probes["off"].take),
                    Operation("raw", benchlib.replay, prepare_raw, raw_probe.take),
                ],
                sizes.deposit_iterations,
                rng,
            )
            return {
                **samples,
                "on_hold": probes["on"].samples,
                "off_hold": probes["off"].samples,
                "raw_hold": raw_probe.samples,
                **{f"draft_{k}": v for k, v in drafts.items()},
            }

        with benchlib.lock_clocks(on.engine, off.engine) as (on_clock, off_clock):
            per_run, load_done = repeated("deposit", lambda: one_run(on_clock, off_clock))
        codes = raw.execute("SELECT COUNT(*) FROM horscompte_tracking_code").fetchone()[0]
    finally:
        raw.close()
        on.engine.dispose()
        off.engine.dispose()

    def with_draft(run: dict[str, Any], key: str) -> list[Sample]:
        return [
            Sample(a.wall + b.wall, a.cpu + b.cpu)
            for a, b in zip(run[f"draft_{key}"], run[key], strict=True)
        ]

    figures = {
        "deposit_tx_overhead": ratio_figure(paired(per_run, "on", "off"), load_done),
        "deposit_ms_added": difference_figure(paired(per_run, "on", "off"), load_done),
        "deposit_overhead": ratio_figure(
            [(with_draft(r, "on"), with_draft(r, "off")) for r in per_run], load_done
        ),
        "deposit_lock_hold_vs_raw": ratio_figure(paired(per_run, "on_hold", "raw_hold"), load_done),
        "deposit_lock_hold_overhead": ratio_figure(
            paired(per_run, "on_hold", "off_hold"), load_done
        ),
    }
    return {
        "figures": figures,
        "deposit_vs_raw_replay": ratio_figure(paired(per_run, "on", "raw"), load_done),
        "statements_enabled": statements["enabled"],
        "statements_disabled": statements["disabled"],
        "tracking_codes_issued": codes,
    }
