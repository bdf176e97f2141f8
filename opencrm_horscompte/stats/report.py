"""The counters aggregated per day (the last 30 days) or per ISO week (the last 52 weeks),
with the figures that tell an admin at a glance whether citizens struggle with the codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import ClassVar, Literal

from sqlalchemy import select
from sqlmodel import Session

from opencrm_horscompte.base.i18n import N_, NP_, Message
from opencrm_horscompte.base.models import DailyStat
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.stats.counters import METRICS

Period = Literal["day", "week"]
DAYS_SHOWN = 30
WEEKS_SHOWN = 52
# Below this many lookups (or validations) no ratio is judged: too few to mean anything.
ENOUGH_TO_JUDGE = 20
STRUGGLE_RATIO = 0.3

LABELS: dict[str, Message] = {
    "deposits": N_("Dépôts sans compte"),
    "proposals_shown": N_("Propositions de connexion"),
    "proposals_accepted": N_("Propositions acceptées"),
    "proposals_declined": N_("Propositions refusées"),
    "lookups": N_("Recherches de dossier"),
    "codes_sent": N_("Codes de validation envoyés"),
    "codes_resent": N_("Dont codes renvoyés à la demande"),
    "validations_ok": N_("Validations réussies"),
    "validations_failed": N_("Validations échouées"),
    "locks": N_("Blocages"),
    "throttle_refusals": N_("Limites de fréquence atteintes"),
}
assert tuple(LABELS) == METRICS


@dataclass(frozen=True)
class Bucket:
    start: date
    counts: dict[str, int]


@dataclass(frozen=True)
class Report:
    period: Period
    buckets: list[Bucket]
    totals: dict[str, int]
    hints: list[Message] = field(default_factory=list)

    @property
    def lookups_without_code(self) -> int:
        return lookups_without_code(self.totals)

    judge_threshold: ClassVar[int] = ENOUGH_TO_JUDGE

    @property
    def enough_to_judge(self) -> bool:
        """Enough lookups or validations for the hints to mean something."""
        return max(self.totals["lookups"], validations_tried(self.totals)) >= ENOUGH_TO_JUDGE


def validations_tried(totals: dict[str, int]) -> int:
    return totals["validations_ok"] + totals["validations_failed"]


def lookups_without_code(totals: dict[str, int]) -> int:
    """Lookups that mailed no code (wrong tracking code or a limit reached): a resend mails
    a code without a lookup, so resends don't offset them. Days counted before resends were
    (release 0.2's 0004) may still undercount; the figure never goes below 0."""
    return max(0, totals["lookups"] - (totals["codes_sent"] - totals["codes_resent"]))


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _range(period: Period, today: date) -> list[date]:
    if period == "day":
        return [today - timedelta(days=n) for n in range(DAYS_SHOWN - 1, -1, -1)]
    this_week = _week_start(today)
    return [this_week - timedelta(weeks=n) for n in range(WEEKS_SHOWN - 1, -1, -1)]


def build_report(session: Session, period: Period, today: date, settings: Settings) -> Report:
    """Read at most a year of daily rows (an indexed range on the primary key) and sum
    them into the period's buckets; empty days count zero."""
    starts = _range(period, today)
    table = DailyStat.__table__
    query = select(table).where(table.c.day >= starts[0], table.c.day <= today)
    buckets = {start: dict.fromkeys(METRICS, 0) for start in starts}
    for row in session.connection().execute(query):
        start = row.day if period == "day" else _week_start(row.day)
        bucket = buckets.get(start)
        if bucket is not None:
            for metric in METRICS:
                bucket[metric] += int(getattr(row, metric))
    ordered = [Bucket(start, buckets[start]) for start in starts]
    totals = {metric: sum(b.counts[metric] for b in ordered) for metric in METRICS}
    return Report(period, ordered, totals, hints(totals, settings))


def hints(totals: dict[str, int], settings: Settings) -> list[Message]:
    """What the figures suggest, in words (the page shows them above the chart)."""
    found: list[Message] = []
    lookups, unmatched = totals["lookups"], lookups_without_code(totals)
    if lookups >= ENOUGH_TO_JUDGE and unmatched / lookups > STRUGGLE_RATIO:
        share = round(100 * unmatched / lookups)
        if settings.tracking_code_avoid_ambiguous:
            found.append(
                N_(
                    "%(share)s %% des recherches n'ont pas abouti à l'envoi d'un code : "
                    "beaucoup de codes de suivi sont mal recopiés, ou des limites sont atteintes. "
                    "Un code plus court ou sans caractères spéciaux serait plus facile à "
                    "recopier.",
                    share=share,
                )
            )
        else:
            found.append(
                N_(
                    "%(share)s %% des recherches n'ont pas abouti à l'envoi d'un code : "
                    "beaucoup de codes de suivi semblent mal recopiés. Cochez « Éviter les "
                    "caractères ambigus » : les caractères qui se confondent ne seront plus "
                    "utilisés et ceux tapés par erreur seront corrigés.",
                    share=share,
                )
            )
    tried = validations_tried(totals)
    if tried >= ENOUGH_TO_JUDGE and totals["validations_failed"] / tried > STRUGGLE_RATIO:
        found.append(
            N_(
                "%(share)s %% des codes de validation saisis sont faux : vérifiez que "
                "le courriel de validation est clair et que la durée d'expiration laisse "
                "le temps de le recevoir.",
                share=round(100 * totals["validations_failed"] / tried),
            )
        )
    if totals["locks"]:
        found.append(
            NP_(
                "%(count)s blocage de dossier sur la période : un agent peut débloquer un "
                "dossier depuis la page « Assistance usagers ».",
                "%(count)s blocages de dossier sur la période : un agent peut débloquer un "
                "dossier depuis la page « Assistance usagers ».",
                totals["locks"],
            )
        )
    return found
