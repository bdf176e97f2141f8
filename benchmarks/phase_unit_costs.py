"""What one tracking code costs, and what one fixed statement costs through Core, through
``DriverStatement`` and on the raw driver."""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Operation, Sample, interleaved
from figures import RUNS, paired, ratio_figure, repeated, summarised
from sizes import DEFAULT_POLICY, Sizes

from opencrm_horscompte.tracking.codes import generate_tracking_code


def bench_codegen(sizes: Sizes) -> dict[str, Any]:
    policy = DEFAULT_POLICY
    for _ in range(50):
        generate_tracking_code(policy)
    load = benchlib.MachineLoad()
    per_code = []
    for _ in range(RUNS):
        started = time.thread_time_ns()
        for _ in range(sizes.codegen_count):
            generate_tracking_code(policy)
        per_code.append((time.thread_time_ns() - started) / 1e3 / sizes.codegen_count)
    figure = {**summarised(per_code), "load": load.done()}
    return {"figures": {"codegen_us": figure}, "policy": asdict(policy)}


def bench_driver_speed(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """One fixed statement (the settings version read), inside one write transaction, three
    ways: a cached Core statement through SQLAlchemy, the same through
    :class:`opencrm_horscompte.base.db.DriverStatement`, and the raw ``sqlite3`` cursor.
    Not a target: it says what running at driver speed buys, per statement."""
    from opencrm_horscompte.base.db import DriverStatement, writer
    from opencrm_horscompte.settings.store import _VERSION

    host = benchlib.build_host(benchlib.sqlite_url(workdir / "driver.sqlite3"), seed_data=True)
    driver = DriverStatement(_VERSION)
    sql = "SELECT token FROM horscompte_settings_version WHERE id = ?"
    rng = random.Random(3)

    def core(connection: Any) -> Any:
        return connection.execute(_VERSION).scalar()

    def fast(connection: Any) -> Any:
        cursor = driver.execute(connection)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def raw(connection: Any) -> Any:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            return cursor.execute(sql, (1,)).fetchone()
        finally:
            cursor.close()

    def one_run() -> dict[str, list[Sample]]:
        with writer(host.engine).begin() as connection:
            return interleaved(
                [
                    Operation("core", core, lambda _i: (connection,)),
                    Operation("driver_statement", fast, lambda _i: (connection,)),
                    Operation("raw", raw, lambda _i: (connection,)),
                ],
                sizes.codegen_count,
                rng,
            )

    try:
        per_run, load_done = repeated("driver speed", one_run)
    finally:
        host.engine.dispose()
    return {
        "statement": sql,
        "core_vs_raw": ratio_figure(paired(per_run, "core", "raw"), load_done),
        "driver_statement_vs_raw": ratio_figure(
            paired(per_run, "driver_statement", "raw"), load_done
        ),
    }
