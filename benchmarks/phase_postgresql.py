"""Deposits on PostgreSQL with 1 and 4 worker processes (see ``run.py``)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import benchlib
from benchlib import progress
from figures import exact_figure, median, median_known, summarised
from sizes import Sizes
from sqlalchemy import text

from opencrm_horscompte.base.db import make_engine


def check_postgresql(pg_url: str) -> str:
    """The server's version; fails at once (not after the long phases) when unreachable."""
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    except Exception as error:
        raise SystemExit(f"PostgreSQL unreachable at {pg_url}: {error}") from error
    finally:
        admin.dispose()


def bench_postgresql(sizes: Sizes, pg_url: str) -> dict[str, Any]:
    with benchlib.temporary_database(pg_url, "horscompte_bench") as url:
        host = benchlib.build_host(url, seed_data=True)
        with host.engine.connect() as connection:
            server_version = connection.execute(text("SHOW server_version")).scalar_one()
        host.engine.dispose()
        pool = benchlib.WorkerPool(multiprocessing.get_context("spawn"), url, 4, sizes.pg_warmup)
        runs: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
        load = benchlib.MachineLoad()
        try:
            progress("postgresql: starting 4 worker processes")
            pool.start()
            for repeat in range(sizes.pg_repeats):
                for workers in (1, 4) if repeat % 2 == 0 else (4, 1):
                    progress(
                        f"postgresql: repeat {repeat + 1} of {sizes.pg_repeats}, {workers} "
                        f"process(es) x {sizes.pg_deposits_per_worker} deposits"
                    )
                    runs[workers].append(pool.run(workers, sizes.pg_deposits_per_worker))
        finally:
            pool.close()
        load_done = load.done()
        engine = make_engine(url)
        with engine.connect() as connection:
            total, distinct, per_dossier = connection.execute(
                text(
                    "SELECT COUNT(*), COUNT(DISTINCT code), COUNT(DISTINCT dossier_id) "
                    "FROM horscompte_tracking_code"
                )
            ).one()
            dossiers = connection.execute(
                text("SELECT COUNT(*) FROM host_dossier WHERE status = 'deposited'")
            ).scalar_one()
        engine.dispose()
    speedups = [four["rate"] / one["rate"] for one, four in zip(runs[1], runs[4], strict=True)]
    errors = [error for results in runs.values() for run in results for error in run["errors"]]
    kept = (
        "deposited",
        "seconds",
        "rate",
        "client_cpu_ms_per_deposit",
        "client_cores_busy",
        "machine_cores_busy",
        "machine_cores_stolen",
    )
    busy = {
        str(workers): {
            "client_cores_busy": median_known([run["client_cores_busy"] for run in results]),
            "machine_cores_busy": median_known([run["machine_cores_busy"] for run in results]),
            "machine_cores_stolen": median_known([run["machine_cores_stolen"] for run in results]),
        }
        for workers, results in runs.items()
    }
    speedup = {**summarised(speedups), "cores_busy": busy, "load": load_done}
    return {
        "figures": {
            "pg_speedup_4_workers": speedup,
            "pg_errors": exact_figure(len(errors), load_done),
            "pg_codes_equal_dossiers": exact_figure(
                bool(total == dossiers == distinct == per_dossier), load_done
            ),
        },
        "deposits_per_second": {
            str(w): median([run["rate"] for run in results]) for w, results in runs.items()
        },
        "runs": {
            str(workers): [{key: run[key] for key in kept} for run in results]
            for workers, results in runs.items()
        },
        "tracking_codes": int(total),
        "distinct_codes": int(distinct),
        "deposited_dossiers": int(dossiers),
        "first_errors": errors[:3],
        "server_version": server_version,
    }
