"""How hard the configured codes are to guess, in words an administrator can act on.

The estimates use the rate limits the plugin enforces (the constants below), so the admin
page and the lookup throttling cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .codes import CodePolicy, count_valid_codes
from .limits import ATTEMPTS_PER_CODE, LOCK_AFTER_FAILURES, LOOKUP_EMAIL

TRACKING_WEAK_BELOW_BITS = 40.0
# NIST SP 800-63B asks for 6 decimal digits, "approximately 20 bits" (6 * log2(10) = 19.93).
VALIDATION_WEAK_BELOW_BITS = 19.9

HOURS_PER_DAY = 24
HOURS_PER_MONTH = 24 * 30.4375
HOURS_PER_YEAR = 24 * 365.25
MAX_READABLE_YEARS = 1e12
NBSP = "\u00a0"
_SCALES = ((10**9, "milliard"), (10**6, "million"))


@dataclass(frozen=True)
class Strength:
    """A code setting's strength: ``summary_fr`` is shown as is on the admin page.

    ``years_to_guess`` is the mean time of an online search at the enforced rate; it is
    infinite for validation codes, whose dossier locks first (see ``success_chance``).
    """

    bits: float
    weak: bool
    years_to_guess: float
    summary_fr: str
    success_chance: float | None = None


def _round_significant(value: float, digits: int = 2) -> float:
    if value <= 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(value)))


def _group_thousands(number: int) -> str:
    return f"{number:,}".replace(",", NBSP)


def _decimal_fr(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return _group_thousands(round(value))
    return f"{value:.1f}".replace(".", ",")


def format_number_fr(value: float) -> str:
    """Two significant digits, French style: ``3 500``, ``1,5 million``, ``34 milliards``."""
    rounded = _round_significant(value)
    for scale, word in _SCALES:
        if rounded >= scale:
            mantissa = rounded / scale
            plural = "s" if mantissa >= 2 else ""
            return f"{_decimal_fr(mantissa)} {word}{plural}"
    return _decimal_fr(rounded)


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count < 2 else plural}"


def _format_years_fr(years: float) -> str:
    if years >= MAX_READABLE_YEARS:
        return "plus de mille milliards d'années"
    number = format_number_fr(years)
    if _round_significant(years) >= 10**6:
        return f"environ {number} d'années"
    return f"environ {number} {'an' if _round_significant(years) < 2 else 'ans'}"


def format_duration_fr(hours: float) -> str:
    """A duration in readable French: ``moins d'une heure``, ``environ 3 millions d'années``."""
    if hours < 1:
        return "moins d'une heure"
    if round(hours) < 48:
        return "environ " + _plural(round(hours), "heure", "heures")
    if round(hours / HOURS_PER_DAY) < 60:
        return "environ " + _plural(round(hours / HOURS_PER_DAY), "jour", "jours")
    if round(hours / HOURS_PER_MONTH) < 24:
        return f"environ {round(hours / HOURS_PER_MONTH)} mois"
    return _format_years_fr(hours / HOURS_PER_YEAR)


def _tracking_summary_fr(weak: bool, hours: float) -> str:
    estimate = (
        f"il faudrait en moyenne {format_duration_fr(hours)} pour deviner le code de suivi "
        f"d'un dossier, à raison de {LOOKUP_EMAIL.limit} essais par heure "
        "pour une même adresse e-mail."
    )
    if not weak:
        return f"Robustesse suffisante : {estimate}"
    return (
        f"Code de suivi faible (moins de {TRACKING_WEAK_BELOW_BITS:.0f} bits) : {estimate} "
        "Augmentez la longueur du code ou cochez d'autres types de caractères."
    )


def tracking_strength(policy: CodePolicy) -> Strength:
    """Mean time to find one dossier's code: half the codes, at the per-email lookup limit."""
    count = count_valid_codes(policy)
    bits = math.log2(count) if count > 0 else 0.0
    hours = count / 2 / LOOKUP_EMAIL.limit
    weak = bits < TRACKING_WEAK_BELOW_BITS
    return Strength(bits, weak, hours / HOURS_PER_YEAR, _tracking_summary_fr(weak, hours))


def _validation_summary_fr(weak: bool, codes: int) -> str:
    odds = format_number_fr(codes / LOCK_AFTER_FAILURES)
    estimate = (
        f"un attaquant a 1 chance sur {odds} de trouver le code de validation avant le "
        f"verrouillage du dossier ({LOCK_AFTER_FAILURES} erreurs au plus, "
        f"{ATTEMPTS_PER_CODE} par code envoyé)."
    )
    if not weak:
        return f"Robustesse suffisante : {estimate}"
    return f"Code de validation faible : {estimate} Augmentez la longueur du code."


def validation_strength(length: int) -> Strength:
    """Chance that guesses succeed before the dossier locks (one guess hits 1 in 10**length)."""
    codes = 10**length
    bits = length * math.log2(10)
    weak = bits < VALIDATION_WEAK_BELOW_BITS
    chance = min(1.0, LOCK_AFTER_FAILURES / codes)
    summary = _validation_summary_fr(weak, codes)
    return Strength(bits, weak, math.inf, summary, success_chance=chance)
