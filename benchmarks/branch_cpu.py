"""CPU time of the two branches of each enumeration-sensitive step (issue 8, finding 4).

    python benchmarks/branch_cpu.py [--rounds 200]

* ``lookup_branch_cpu_ratio``: the lookup handler's work (``start_lookup``) for a right pair
  over a pair that matches nothing (a decoy);
* ``identity_branch_cpu_ratio``: the identity step in discreet mode for an address with an
  account over one without.

Target for both: 1.0 +- 0.1. CPU time (``time.process_time``) of this process, so the
database server's own work (PostgreSQL) and I/O waits are left out; SQLite runs in-process
and counts. Rounds alternate the two branches, each on fresh inputs so that no limit is
reached (a limit changes what is written, not the branch's work); the figure is the ratio
of the medians. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from opencrm_horscompte.hookspecs.host import IdentityDecision, Request
from opencrm_horscompte.identity.step import identity_step
from opencrm_horscompte.lookup.start import LookupInput, Started, start_lookup
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import save_settings


def cpu(action: Callable[[], Any]) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started


def ratio(first: list[float], second: list[float]) -> float:
    return statistics.median(first) / statistics.median(second)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds)))
    return 0


def measure(rounds: int) -> dict[str, Any]:
    """Both ratios over ``rounds`` alternated rounds (benchmarks/run.py calls it too)."""
    with tempfile.TemporaryDirectory() as workdir:
        host = benchlib.build_host(f"sqlite:///{workdir}/branches.sqlite3", seed_data=True)
        demarche = benchlib.the_demarche(host)
        from sqlmodel import Session

        from opencrm_horscompte.base.models import TrackingCode
        from opencrm_horscompte.host_kit.refhost.accounts import create_account

        with Session(host.engine) as session, session.begin():
            save_settings(
                host, session, Settings.defaults().replace(identity_discreet_mode=True), "bench"
            )
        lookups: dict[str, list[float]] = {"match": [], "miss": []}
        identity: dict[str, list[float]] = {"account": [], "none": []}
        for index in range(rounds + 5):
            dossier = benchlib.deposit_one(host, demarche, f"lookup-{index}")
            with Session(host.engine) as session:
                row = session.get(TrackingCode, dossier.id)
                assert row is not None
            client = f"10.0.{index // 256}.{index % 256}"
            match = LookupInput(row.email, row.code)
            miss = LookupInput(row.email, "ABCD-EFGH-JKLM")
            with Session(host.engine) as session, session.begin():
                create_account(session, f"compte-{index}@exemple.fr", "bench-password", "B")
            request = Request("POST", "/", client_addr=client, session={})
            branches = [("match", match), ("miss", miss)]
            steps = [
                ("account", f"compte-{index}@exemple.fr"),
                ("none", f"personne-{index}@exemple.fr"),
            ]
            if index % 2:
                branches.reverse()
                steps.reverse()
            for name, typed in branches:

                def look_up(typed: LookupInput = typed, client: str = client) -> Started:
                    return start_lookup(host, typed, client, "fr")

                seconds = cpu(look_up)
                if index >= 5:  # warm-up rounds are not counted
                    lookups[name].append(seconds)
            for name, email in steps:
                fields = {"email": email, "draft": f"d-{index}-{name}", "continue_url": "/f"}

                def step(
                    fields: dict[str, str] = fields, request: Request = request
                ) -> IdentityDecision | None:
                    return identity_step(host, request, demarche, fields)

                seconds = cpu(step)
                if index >= 5:
                    identity[name].append(seconds)
        host.engine.dispose()
    return {
        "lookup_branch_cpu_ratio": round(ratio(lookups["match"], lookups["miss"]), 3),
        "identity_branch_cpu_ratio": round(ratio(identity["account"], identity["none"]), 3),
        "rounds": rounds,
    }


if __name__ == "__main__":
    sys.exit(main())
