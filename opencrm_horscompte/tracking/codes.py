"""Tracking codes (found again with the dossier's email) and validation codes (sent by mail).

A tracking code is drawn with :mod:`secrets` from the characters of the selected classes; every
selected class appears at least once, and every valid code is equally likely (rejection
sampling, no modulo bias).

Character classes
=================

=========  ======================  ==========================================================
Class      Characters              Notes
=========  ======================  ==========================================================
digits     ``0123456789``
uppercase  ``A`` to ``Z``
lowercase  ``a`` to ``z``
special    ``! $ * = @``           Typed the same way on AZERTY and QWERTY keyboards, survive
                                   mail bodies and URLs. ``-`` and space are *not* code
                                   characters: they separate groups when a code is displayed
                                   or typed.
=========  ======================  ==========================================================

Ambiguous characters (``avoid_ambiguous``)
==========================================

These characters are never generated:

===============  ==============================================================================
Characters       Reason
===============  ==============================================================================
``o O 0``        Letter o and digit zero (the spec's own list).
``1 l I``        Digit one, lowercase L, capital i (the spec's own list).
``i``            Joins ``1 l I`` in many sans-serif fonts, and its dot gets lost in print.
``S 5``          Confused when read from a printout or a screen, or when dictated.
``Z 2``          Same: letter/digit confusion in handwriting and some fonts.
``B 8``          Same: letter/digit confusion in print and on low-resolution screens.
===============  ==============================================================================

Case twins: when *both* uppercase and lowercase are selected, these lowercase letters are
not generated either, because their glyph has the same shape as their capital and only the
size tells them apart: ``c k s u v w x y z`` (``o`` is already excluded above).

Input normalisation
===================

What a user types goes through :func:`normalize_tracking_code` before the lookup:

* whitespace (any Unicode space, including no-break spaces) and dashes (ASCII ``-``, the
  Unicode dash punctuation such as U+2010 to U+2015, the minus sign U+2212) are removed, as
  are the invisible soft hyphen and zero-width characters that copy and paste can bring;
* when case carries no meaning (the code cannot mix cases), ASCII letters are folded to the
  case the code uses;
* when the code mixes cases and was issued with ``avoid_ambiguous``, a typed case twin
  (``c``) becomes its capital (``C``), the only character it can stand for.

Other excluded characters stay as typed: they can never match. Nothing else is folded (no
NFKC, no Unicode case mapping): a fullwidth A (U+FF21) or the ligature fi (U+FB01) is kept
as typed, so the code simply does not match.
"""

from __future__ import annotations

import secrets
import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

from opencrm_horscompte.base.manifest import load_manifest
from opencrm_horscompte.settings.schema import Settings

DIGITS = string.digits
UPPERCASE = string.ascii_uppercase
LOWERCASE = string.ascii_lowercase
SPECIAL = "!$*=@"

SPEC_AMBIGUOUS = "oO01lI"
EXTRA_AMBIGUOUS = "iS5Z2B8"
AMBIGUOUS = frozenset(SPEC_AMBIGUOUS + EXTRA_AMBIGUOUS)
CASE_TWINS = frozenset("cksuvwxyz")

GROUP_SIZE = 4
GROUP_SEPARATOR = "-"
MAX_DRAWS = 1_000

_INVISIBLE_SEPARATORS = frozenset("\u00ad\u200b\u200c\u200d\u2060\ufeff")
_MINUS_SIGN = "\u2212"
_TO_UPPER = str.maketrans(LOWERCASE, UPPERCASE)
_TO_LOWER = str.maketrans(UPPERCASE, LOWERCASE)
_TWIN_TO_CAPITAL = str.maketrans({twin: twin.upper() for twin in CASE_TWINS})


class InvalidPolicy(ValueError):
    """A tracking-code policy outside the spec; the message is French, for the admin."""


@dataclass(frozen=True)
class CodePolicy:
    """How tracking codes are drawn: length, selected classes, ambiguous characters."""

    length: int
    digits: bool
    uppercase: bool
    lowercase: bool
    special: bool
    avoid_ambiguous: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> CodePolicy:
        return cls(
            length=settings.tracking_code_length,
            digits=settings.tracking_code_digits,
            uppercase=settings.tracking_code_uppercase,
            lowercase=settings.tracking_code_lowercase,
            special=settings.tracking_code_special,
            avoid_ambiguous=settings.tracking_code_avoid_ambiguous,
        )

    def excluded(self) -> frozenset[str]:
        """Characters never generated under this policy."""
        if not self.avoid_ambiguous:
            return frozenset()
        if self.uppercase and self.lowercase:
            return AMBIGUOUS | CASE_TWINS
        return AMBIGUOUS

    def classes(self) -> tuple[str, ...]:
        """The allowed characters of each selected class, in a fixed order."""
        # Module constants are read at call time so tests can shrink them.
        selected = (
            (self.digits, DIGITS),
            (self.uppercase, UPPERCASE),
            (self.lowercase, LOWERCASE),
            (self.special, SPECIAL),
        )
        excluded = self.excluded()
        return tuple(
            "".join(char for char in chars if char not in excluded)
            for is_selected, chars in selected
            if is_selected
        )

    @property
    def alphabet(self) -> str:
        return "".join(self.classes())

    @property
    def case_sensitive(self) -> bool:
        """True when codes can mix cases, so a typed letter's case matters."""
        return self.uppercase and self.lowercase


def check_policy(policy: CodePolicy) -> None:
    """Refuse a policy the spec does not allow, with a French message."""
    spec = load_manifest().setting("tracking_code_length")
    assert spec.min is not None and spec.max is not None
    if not spec.min <= policy.length <= spec.max:
        raise InvalidPolicy(
            f"La longueur du code doit être comprise entre {spec.min} et {spec.max} caractères."
        )
    classes = policy.classes()
    if not classes:
        raise InvalidPolicy("Cochez au moins un type de caractères.")
    if not all(classes):
        raise InvalidPolicy("Un type de caractères coché ne contient aucun caractère utilisable.")


@dataclass(frozen=True)
class _Drawing:
    """What drawing a code under a policy needs, computed once per policy."""

    classes: tuple[frozenset[str], ...]  # each selected class as a set
    # byte -> its character: ``alphabet[byte % size]``, for the bytes below the largest
    # multiple of the alphabet's size a byte can reach (no modulo bias) ...
    to_character: bytes
    rejected: bytes  # ... the bytes from that multiple up, dropped


@lru_cache(maxsize=64)
def _drawing(policy: CodePolicy, *constants: str) -> _Drawing:
    """``constants`` are the class strings, part of the cache key because tests shrink them."""
    check_policy(policy)
    classes = policy.classes()
    alphabet = "".join(classes)
    if len(alphabet) > 256 or not alphabet.isascii():
        raise InvalidPolicy("the alphabet must be at most 256 ASCII characters")
    limit = 256 - 256 % len(alphabet)
    to_character = bytes(ord(alphabet[byte % len(alphabet)]) for byte in range(256))
    return _Drawing(
        tuple(frozenset(chars) for chars in classes), to_character, bytes(range(limit, 256))
    )


def generate_tracking_code(policy: CodePolicy) -> str:
    """A code drawn uniformly among the codes that contain every selected class.

    Each character is one byte of :func:`secrets.token_bytes` (drawn in one call per
    attempt, not one ``os.urandom`` per character) taken modulo the alphabet's size, the
    bytes at or above the largest multiple of that size being rejected, so every
    character is equally likely and independent (``bytes.translate`` maps and rejects
    them in one pass). Whole codes missing a class are then rejected, which keeps every
    valid code equally likely.
    """
    drawing = _drawing(policy, DIGITS, UPPERCASE, LOWERCASE, SPECIAL)
    length = policy.length
    # At least 29 % of codes are accepted under every allowed policy, and at least half the
    # bytes: the bound is never reached in practice.
    for _ in range(MAX_DRAWS):
        drawn = b""
        while len(drawn) < length:
            fresh = secrets.token_bytes(2 * (length - len(drawn)) + 4)
            drawn += fresh.translate(drawing.to_character, drawing.rejected)
        code = drawn[:length].decode("ascii")
        if all(not chars_of.isdisjoint(code) for chars_of in drawing.classes):
            return code
    raise RuntimeError("could not draw a tracking code containing every selected class")


def _is_separator(char: str) -> bool:
    return (
        char.isspace()
        or char in _INVISIBLE_SEPARATORS
        or char == _MINUS_SIGN
        or unicodedata.category(char) == "Pd"
    )


_WITHOUT_ASCII_SEPARATORS = str.maketrans(
    "", "", "".join(char for char in map(chr, range(128)) if _is_separator(char))
)


def strip_separators(typed: str) -> str:
    """``typed`` without the characters that only separate groups (any policy)."""
    if typed.isascii():
        return typed.translate(_WITHOUT_ASCII_SEPARATORS)
    return "".join(char for char in typed if not _is_separator(char))


def normalize_tracking_code(typed: str, policy: CodePolicy) -> str:
    """What the user typed, in the form the code was stored in (see the module docstring)."""
    code = strip_separators(typed)
    if not policy.case_sensitive:
        only_lowercase = policy.lowercase and not policy.uppercase
        return code.translate(_TO_LOWER if only_lowercase else _TO_UPPER)
    if policy.avoid_ambiguous:
        return code.translate(_TWIN_TO_CAPITAL)
    return code


_CODE_CHARACTERS = frozenset(DIGITS + UPPERCASE + LOWERCASE + SPECIAL)


def could_be_tracking_code(typed: str) -> bool:
    """Whether ``typed``, separators aside, uses only characters a code can hold (any
    policy) and no control character: anything else is a typing or pasting mistake worth
    saying so."""
    if typed.isascii():  # ASCII's control characters are its unprintable ones
        if not typed.isprintable():
            return False
    elif any(unicodedata.category(char) == "Cc" for char in typed):
        return False
    stripped = strip_separators(typed)
    return bool(stripped) and _CODE_CHARACTERS.issuperset(stripped)


def example_tracking_code(policy: CodePolicy) -> str:
    """A code of the policy's length and classes to show as an example (never issued as
    such: it is fixed, so screens and tests stay stable). Classes take turns; within a
    class, characters are picked far apart."""
    classes = [chars for chars in policy.classes() if chars]
    if not classes:
        return ""
    picked = []
    used = [0] * len(classes)
    for index in range(policy.length):
        turn = (index * 5 // 3) % len(classes)
        chars = classes[turn]
        picked.append(chars[(used[turn] * 7 + 3) % len(chars)])
        used[turn] += 1
    return "".join(picked)


def is_findable(code: str, policy: CodePolicy) -> bool:
    """Whether a lookup can ever find ``code`` issued under ``policy``: only code characters
    (digits, ASCII letters, ``! $ * = @``) and exactly what normalising the code as typed
    gives back (no separator, no case the policy folds away). A third-party generator's
    candidate that fails this is refused at deposit."""
    return (
        bool(code)
        and _CODE_CHARACTERS.issuperset(code)
        and normalize_tracking_code(code, policy) == code
    )


def format_tracking_code(code: str) -> str:
    """Groups of four for display: ``ABCD-EFGH-JK``."""
    groups = (code[start : start + GROUP_SIZE] for start in range(0, len(code), GROUP_SIZE))
    return GROUP_SEPARATOR.join(groups)


def count_covering_strings(class_sizes: tuple[int, ...], length: int) -> int:
    """Strings of ``length`` over disjoint classes that use every class at least once.

    Inclusion-exclusion: subtract the strings that miss each subset of classes.
    """
    total = sum(class_sizes)
    count = 0
    for missing in range(len(class_sizes) + 1):
        for subset in combinations(class_sizes, missing):
            count += (-1) ** missing * (total - sum(subset)) ** length
    return count


def count_valid_codes(policy: CodePolicy) -> int:
    """The exact number of codes :func:`generate_tracking_code` can return."""
    return count_covering_strings(tuple(len(chars) for chars in policy.classes()), policy.length)


def generate_validation_code(length: int) -> str:
    """A code of ``length`` decimal digits, uniform over the ``10**length`` codes: one draw
    with :mod:`secrets`, zero-padded."""
    if length < 1:
        raise ValueError("a validation code needs at least one digit")
    return str(secrets.randbelow(10**length)).zfill(length)
