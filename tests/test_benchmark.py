"""The benchmark script keeps running: ``benchmarks/run.py --quick`` ends with one JSON object
holding every figure. Its timings are never asserted here (they depend on the machine and on
what else runs on it); only the one correctness property it measures, duplicate codes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"
KEYS = {
    "deposit_overhead",
    "lookup_vs_raw",
    "verify_vs_raw",
    "lookup_statements",
    "verify_statements",
    "lookup_scaling",
    "pg_speedup_4_workers",
    "pg_duplicates",
    "rss_growth_mb",
    "codegen_us",
}


@pytest.mark.slow
@pytest.mark.postgresql
def test_quick_benchmark_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--pg-url", PG_ADMIN_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) > 1, "a human summary comes before the JSON line"
    figures = json.loads(lines[-1])

    assert set(figures) == KEYS | {"meta"}, sorted(set(figures) ^ (KEYS | {"meta"}))
    for key in KEYS:
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    assert isinstance(figures["lookup_statements"], int)
    assert isinstance(figures["verify_statements"], int)
    assert figures["pg_duplicates"] == 0

    meta = figures["meta"]
    assert meta["quick"] is True
    assert meta["postgresql"]["errors"] == 0, meta["postgresql"]["first_errors"]
    # The baselines measured what they claim: real matches, granted codes, a replayed attempt.
    lookup = meta["lookup"]
    assert lookup["lookups_matching"] == lookup["lookups_per_kind"]
    assert lookup["verify_outcomes"] == {"granted": lookup["lookups_per_kind"]}
    assert lookup["raw_verify_replay_took_attempt"] is True


@pytest.mark.slow
def test_benchmark_leaves_nothing_behind_on_a_bad_postgresql_url(tmp_path: Path) -> None:
    """An error (here: PostgreSQL unreachable, found before the long phases) still removes
    the temporary directory and stops the memory process, and the script exits non-zero."""
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--pg-url",
            "postgresql+psycopg://nobody@127.0.0.1:1/none",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(env_tmp)},
    )
    assert result.returncode != 0
    assert "PostgreSQL" in result.stderr
    assert list(env_tmp.iterdir()) == []
