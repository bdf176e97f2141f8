"""The benchmark script keeps running: ``benchmarks/run.py --quick`` ends with one JSON object
holding every figure. Its timings are never asserted here (they depend on the machine and on
what else runs on it); only what it checks for correctness (no deposit error, one code per
deposited dossier) and that its baselines did the work they claim."""

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
sys.path.insert(0, str(ROOT / "benchmarks"))

import benchlib  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "run.py"
NUMBERS = {
    "deposit_tx_overhead",
    "deposit_ms_added",
    "deposit_overhead",
    "deposit_lock_hold_vs_raw",
    "deposit_lock_hold_overhead",
    "lookup_vs_raw",
    "verify_vs_raw",
    "lookup_page_vs_raw",
    "lookup_lock_hold_vs_raw",
    "lookup_statements",
    "verify_statements",
    "lookup_scaling",
    "deposit_scaling",
    "lookup_after_10k_wrong_same_email",
    "http_lookup_cpu_vs_bare",
    "http_lookup_post_cpu_vs_bare",
    "rss_growth_mb_per_1e4_after_warmup",
    "pg_speedup_4_workers",
    "pg_errors",
    "codegen_us",
    "stats_page_ms_1e6_events",
    "lookup_branch_cpu_ratio",
    "identity_branch_cpu_ratio",
}
KEYS = NUMBERS | {"pg_codes_equal_dossiers"}


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
    for key in NUMBERS:
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    assert isinstance(figures["lookup_statements"], int)
    assert isinstance(figures["verify_statements"], int)
    meta = figures["meta"]
    assert figures["pg_errors"] == 0, meta["postgresql"]["first_errors"]
    assert figures["pg_codes_equal_dossiers"] is True

    assert meta["quick"] is True
    # Every figure carries its spread (3 runs) and, when timed, the machine's load.
    for key in KEYS:
        figure = meta["figures"][key]
        assert figure["min"] <= figure["value"] <= figure["max"], (key, figure)
    for key in ("deposit_tx_overhead", "lookup_vs_raw", "http_lookup_cpu_vs_bare"):
        figure = meta["figures"][key]
        assert len(figure["runs"]) == 3, (key, figure)
        assert figure["wall"] > 0, (key, figure)
        assert {"machine_cores_busy", "machine_cores_stolen"} <= set(figure["load"]), figure
    # The baselines measured what they claim: real matches, granted codes, a replayed
    # attempt, fresh keys for every raw lookup, every table grown and its rows counted.
    lookup = meta["lookup"]
    assert lookup["lookups_matching"] == lookup["lookups_measured"]
    assert lookup["verify_outcomes"] == {"granted": lookup["verifies_measured"]}
    assert lookup["raw_verify_replay_took_attempt"] is True
    assert lookup["raw_lookup_fresh_keys_per_replay"] >= 4
    big = meta["scaling"]["rows"]["big"]
    assert min(big.values()) >= meta["sizes"]["big_rows"], big
    assert meta["http"]["statuses"]["lookup"] == {"200": 3 * meta["sizes"]["http_iterations"]}


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


def test_machine_load_counts_steal_apart_from_busy(tmp_path: Path) -> None:
    """On a shared VM the hypervisor's steal is neither our processes' work nor idle: the
    busy cores leave it out (and guest time, already inside user), steal is told apart."""
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(f"cpu  {7 * ticks} {ticks} {2 * ticks} 50 30 0 0 {3 * ticks} {5 * ticks} 0\n")
    times = benchlib.cpu_times(str(stat))
    assert times.busy == 10
    assert times.stolen == 3
    assert times.total == pytest.approx(13 + 80 / ticks)
    assert benchlib.cpu_times(str(tmp_path / "missing")) == benchlib.CpuTimes()


def test_machine_load_does_not_count_cores_over_a_too_short_phase() -> None:
    load = benchlib.MachineLoad().done()
    assert load["machine_cores_busy"] is None and load["machine_cores_stolen"] is None
