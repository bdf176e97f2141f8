"""The dossiers the lookup phases look up, drawn at random from a grown file, the fresh
client addresses each lookup comes from, and random (wrong) tracking codes."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import benchlib

from opencrm_horscompte.tracking.codes import CodePolicy


@dataclass(frozen=True)
class Target:
    dossier_id: int
    email: str
    code: str


def client_address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


_clients = itertools.count(1)


def fresh_client() -> str:
    return client_address(next(_clients))


def targets_of(path: Path, count: int, rng: random.Random) -> list[Target]:
    return [Target(*row) for row in benchlib.random_bulk_targets(str(path), count, rng)]


def draw_once(targets: list[Target]) -> Callable[[], Target]:
    """The targets one after the other, each once: a dossier looked up again within the
    plugin's repeat window keeps its code and mails nothing, less work than a lookup."""
    iterator = iter(targets)

    def next_target() -> Target:
        try:
            return next(iterator)
        except StopIteration:
            raise RuntimeError(f"all {len(targets)} lookup targets were used") from None

    return next_target


def random_code(policy: CodePolicy, rng: random.Random) -> str:
    return "".join(rng.choices(policy.alphabet, k=policy.length))
