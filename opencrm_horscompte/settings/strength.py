"""How hard the configured codes are to guess, in words an administrator can act on.

The estimates use the rate limits the plugin enforces (the constants below), so the admin
page and the lookup throttling cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from opencrm_horscompte.base.i18n import N_, NP_, Message, Number
from opencrm_horscompte.base.limits import ATTEMPTS_PER_CODE, LOCK_AFTER_FAILURES, LOOKUP_EMAIL
from opencrm_horscompte.tracking.codes import CodePolicy, count_valid_codes

TRACKING_WEAK_BELOW_BITS = 40.0
# NIST SP 800-63B asks for 6 decimal digits, "approximately 20 bits" (6 * log2(10) = 19.93).
VALIDATION_WEAK_BELOW_BITS = 19.9

HOURS_PER_DAY = 24
HOURS_PER_MONTH = 24 * 30.4375
HOURS_PER_YEAR = 24 * 365.25
MAX_READABLE_YEARS = 1e12


# Plain-words levels, strongest first: a tracking code at the enforced lookup rate.
VERY_STRONG_YEARS = 1e6
STRONG_YEARS = 100.0
# A validation code: the chance that guesses succeed before the lock.
VERY_STRONG_CHANCE = 1e-4

VERY_STRONG = N_("Très robuste")
STRONG = N_("Robuste")
ENOUGH = N_("Suffisante")
WEAK = N_("Faible")


@dataclass(frozen=True)
class Strength:
    """A code setting's strength; ``summary`` is shown on the admin page, translated. It
    leads with ``level`` in plain words; ``bits`` is for the curious (in a detail).

    ``years_to_guess`` is the mean time of an online search at the enforced rate; it is
    infinite for validation codes, whose dossier locks first (see ``success_chance``).
    """

    bits: float
    weak: bool
    years_to_guess: float
    summary: Message
    success_chance: float | None = None
    level: Message = ENOUGH

    @property
    def summary_fr(self) -> str:
        return str(self.summary)


def _round_significant(value: float, digits: int = 2) -> float:
    if value <= 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(value)))


def readable_number(value: float) -> Message | Number:
    """Two significant digits: ``3 500``, ``1,5 million``, ``34 milliards`` (in French)."""
    rounded = _round_significant(value)
    if rounded >= 10**9:
        mantissa = rounded / 10**9
        if mantissa < 2:
            return N_("%(number)s milliard", number=Number(mantissa))
        return N_("%(number)s milliards", number=Number(mantissa))
    if rounded >= 10**6:
        mantissa = rounded / 10**6
        if mantissa < 2:
            return N_("%(number)s million", number=Number(mantissa))
        return N_("%(number)s millions", number=Number(mantissa))
    return Number(rounded)


def _readable_years(years: float) -> Message:
    if years >= MAX_READABLE_YEARS:
        return N_("plus de mille milliards d'années")
    rounded = _round_significant(years)
    number = readable_number(years)
    if rounded >= 10**6:
        return N_("environ %(number)s d'années", number=number)
    if rounded < 2:
        return N_("environ %(number)s an", number=number)
    return N_("environ %(number)s ans", number=number)


def readable_duration(hours: float) -> Message:
    """A duration in words: ``moins d'une heure``, ``environ 3 millions d'années``."""
    if hours < 1:
        return N_("moins d'une heure")
    count = round(hours)
    if count < 48:
        return NP_("environ %(count)s heure", "environ %(count)s heures", count)
    days = round(hours / HOURS_PER_DAY)
    if days < 60:
        return NP_("environ %(count)s jour", "environ %(count)s jours", days)
    months = round(hours / HOURS_PER_MONTH)
    if months < 24:
        return NP_("environ %(count)s mois", "environ %(count)s mois", months)
    return _readable_years(hours / HOURS_PER_YEAR)


def _tracking_level(weak: bool, years: float) -> Message:
    if weak:
        return WEAK
    if years >= VERY_STRONG_YEARS:
        return VERY_STRONG
    return STRONG if years >= STRONG_YEARS else ENOUGH


def _tracking_summary(level: Message, weak: bool, hours: float) -> Message:
    duration = readable_duration(hours)
    rate = LOOKUP_EMAIL.limit
    if not weak:
        return N_(
            "%(level)s : %(duration)s en moyenne pour deviner le code de suivi d'un dossier "
            "au rythme autorisé (%(rate)s essais par heure pour une même adresse "
            "électronique).",
            level=level,
            duration=duration,
            rate=rate,
        )
    return N_(
        "%(level)s : %(duration)s en moyenne pour deviner le code de suivi d'un dossier au "
        "rythme autorisé (%(rate)s essais par heure pour une même adresse électronique). "
        "Augmentez la longueur du code ou cochez d'autres types de caractères.",
        level=level,
        duration=duration,
        rate=rate,
    )


def tracking_strength(policy: CodePolicy) -> Strength:
    """Mean time to find one dossier's code: half the codes, at the per-email lookup limit."""
    count = count_valid_codes(policy)
    bits = math.log2(count) if count > 0 else 0.0
    hours = count / 2 / LOOKUP_EMAIL.limit
    weak = bits < TRACKING_WEAK_BELOW_BITS
    years = hours / HOURS_PER_YEAR
    level = _tracking_level(weak, years)
    summary = _tracking_summary(level, weak, hours)
    return Strength(bits, weak, years, summary, level=level)


def _validation_summary(level: Message, weak: bool, codes: int) -> Message:
    params = {
        "level": level,
        "odds": readable_number(codes / LOCK_AFTER_FAILURES),
        "failures": LOCK_AFTER_FAILURES,
        "attempts": ATTEMPTS_PER_CODE,
    }
    if not weak:
        return N_(
            "%(level)s : un attaquant a 1 chance sur %(odds)s de trouver le code de "
            "validation avant que la recherche du dossier soit bloquée (%(failures)s erreurs "
            "au plus, %(attempts)s par code envoyé).",
            **params,
        )
    return N_(
        "%(level)s : un attaquant a 1 chance sur %(odds)s de trouver le code de validation "
        "avant que la recherche du dossier soit bloquée (%(failures)s erreurs au plus, "
        "%(attempts)s par code envoyé). Augmentez la longueur du code.",
        **params,
    )


def validation_strength(length: int) -> Strength:
    """Chance that guesses succeed before the dossier locks (one guess hits 1 in 10**length)."""
    codes = 10**length
    bits = length * math.log2(10)
    weak = bits < VALIDATION_WEAK_BELOW_BITS
    chance = min(1.0, LOCK_AFTER_FAILURES / codes)
    level = WEAK if weak else VERY_STRONG if chance <= VERY_STRONG_CHANCE else STRONG
    summary = _validation_summary(level, weak, codes)
    return Strength(bits, weak, math.inf, summary, success_chance=chance, level=level)
