"""Figure for the statistics page at 10^6 counted events (issue 13).

    python benchmarks/stats_page.py [--events 1000000] [--pg-url postgresql+psycopg://...]

Counts ``--events`` events through the plugin's own counter upsert
(:func:`opencrm_horscompte.stats.counters.count`'s statement, executed once per event,
spread over the last 365 days), then times the statistics page (per day and per week) and
its CSV through the reference host's Flask app, logged in as the admin. Prints a summary,
then one JSON line. Not run by the test suite (no timed assertion anywhere)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from sqlalchemy import text

from opencrm_horscompte.base.db import make_engine, writer
from opencrm_horscompte.stats.counters import METRICS, upsert_statement, utc_day

BATCH = 10_000
REPEAT = 20
ADMIN = ("admin@demoville.fr", "bench-admin-pw")


def count_events(host: Any, events: int) -> float:
    """``events`` single-metric increments, each one execution of the counter upsert."""
    today = utc_day(host.now())
    rng = random.Random(13)
    started = time.perf_counter()
    done = 0
    while done < events:
        size = min(BATCH, events - done)
        batch = []
        for _ in range(size):
            params: dict[str, Any] = dict.fromkeys(METRICS, 0)
            params[rng.choice(METRICS)] = 1
            params["day"] = today - timedelta(days=rng.randrange(365))
            batch.append(params)
        with writer(host.engine).begin() as connection:
            connection.execute(upsert_statement(), batch)
        done += size
    return time.perf_counter() - started


def timed_get(client: Any, url: str) -> float:
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return statistics.median(samples) * 1000


def measure(database_url: str, events: int) -> dict[str, Any]:
    from opencrm_horscompte.host_kit.refhost.app import create_app

    host = benchlib.build_host(database_url, seed_data=True)
    benchlib.progress(f"counting {events:,} events on {host.engine.dialect.name}")
    counting = count_events(host, events)
    with host.engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM horscompte_daily_stat")).scalar()
        total = connection.execute(
            text(f"SELECT sum({' + '.join(METRICS)}) FROM horscompte_daily_stat")
        ).scalar()
    assert total == events, (total, events)
    app = create_app(host)
    client = app.test_client()
    client.get("/connexion")
    with client.session_transaction() as session:
        token = session["csrf"]
    client.post("/connexion", data={"email": ADMIN[0], "password": ADMIN[1], "csrf_token": token})
    path = "/admin/hors-compte/statistiques"
    result = {
        "backend": host.engine.dialect.name,
        "events": events,
        "daily_rows": rows,
        "count_us_per_event": round(counting / events * 1e6, 1),
        "page_day_ms": round(timed_get(client, path), 2),
        "page_week_ms": round(timed_get(client, f"{path}?periode=semaines"), 2),
        "csv_week_ms": round(timed_get(client, f"{path}.csv?periode=semaines"), 2),
    }
    host.engine.dispose()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=None, help="also measure on this PostgreSQL")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        results.append(measure(f"sqlite:///{folder}/stats.sqlite3", args.events))
    if args.pg_url:
        admin = make_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        name = f"horscompte_bench_stats_{random.randrange(16**8):08x}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            results.append(measure(url, args.events))
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    for result in results:
        print(
            f"{result['backend']}: {result['events']:,} events in {result['daily_rows']} daily "
            f"rows; page per day {result['page_day_ms']} ms, per week {result['page_week_ms']} "
            f"ms, CSV {result['csv_week_ms']} ms (median of {REPEAT}); counting "
            f"{result['count_us_per_event']} µs/event"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
