"""How much each phase of ``benchmarks/run.py`` does (the full run and ``--quick``), and the
code policy its deposits and wrong lookups draw tracking codes from."""

from __future__ import annotations

from dataclasses import dataclass

from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.tracking.codes import CodePolicy

DEFAULT_POLICY = CodePolicy.from_settings(Settings.defaults())


@dataclass(frozen=True)
class Sizes:
    codegen_count: int
    deposit_iterations: int
    lookup_iterations: int
    small_rows: int
    big_rows: int
    scaling_iterations: int
    wrong_lookups: int
    wrong_iterations: int
    http_iterations: int
    pg_repeats: int
    pg_deposits_per_worker: int
    pg_warmup: int
    rss_deposits: int
    rss_warmup: int
    rss_budget: float


FULL = Sizes(
    codegen_count=3_000,
    deposit_iterations=120,
    lookup_iterations=100,
    small_rows=2_000,  # the lookup phase looks 1,510 of them up, each once
    big_rows=1_000_000,
    scaling_iterations=80,
    wrong_lookups=10_000,
    wrong_iterations=40,
    http_iterations=120,
    pg_repeats=3,
    pg_deposits_per_worker=300,
    pg_warmup=20,
    rss_deposits=40_000,
    rss_warmup=2_000,
    rss_budget=150.0,
)
QUICK = Sizes(
    codegen_count=200,
    deposit_iterations=6,
    lookup_iterations=6,
    small_rows=1_000,
    big_rows=5_000,
    scaling_iterations=5,
    wrong_lookups=200,
    wrong_iterations=4,
    http_iterations=6,
    pg_repeats=1,
    pg_deposits_per_worker=20,
    pg_warmup=3,
    rss_deposits=1_000,
    rss_warmup=200,
    rss_budget=0.0,
)
