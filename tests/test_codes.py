"""Tracking and validation codes: every policy the spec allows, normalisation, counting."""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from itertools import product
from typing import TypeVar, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opencrm_horscompte.base.i18n import translate
from opencrm_horscompte.base.manifest import load_manifest
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.strength import (
    HOURS_PER_YEAR,
    readable_duration,
    readable_number,
    tracking_strength,
    validation_strength,
)
from opencrm_horscompte.tracking import codes
from opencrm_horscompte.tracking.codes import (
    AMBIGUOUS,
    CASE_TWINS,
    CodePolicy,
    InvalidPolicy,
    check_policy,
    count_valid_codes,
    format_tracking_code,
    generate_tracking_code,
    generate_validation_code,
    normalize_tracking_code,
)

LENGTHS = range(8, 17)
# the four class flags (digits, uppercase, lowercase, special), at least one set
ClassFlags = tuple[bool, bool, bool, bool]
CLASS_SUBSETS = [
    cast(ClassFlags, flags) for flags in product([False, True], repeat=4) if any(flags)
]
ALL_POLICIES = [
    CodePolicy(length, *flags, avoid_ambiguous=avoid)
    for length in LENGTHS
    for flags in CLASS_SUBSETS
    for avoid in (False, True)
]
CLASS_CHARS = (string.digits, string.ascii_uppercase, string.ascii_lowercase, "!$*=@")
DASHES = ["-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212"]
SPACES = [" ", "\t", "\u00a0", "\u202f", "\u2007", "\u3000"]
SAMPLES_PER_POLICY = 20


def _policy_id(policy: CodePolicy) -> str:
    names = ("digits", "upper", "lower", "special")
    flags = (policy.digits, policy.uppercase, policy.lowercase, policy.special)
    selected = "+".join(name for name, on in zip(names, flags, strict=True) if on)
    return f"{policy.length}-{selected}-{'avoid' if policy.avoid_ambiguous else 'all'}"


def _selected_chars(policy: CodePolicy) -> list[str]:
    flags = (policy.digits, policy.uppercase, policy.lowercase, policy.special)
    return [chars for chars, on in zip(CLASS_CHARS, flags, strict=True) if on]


def _mixes_cases(policy: CodePolicy) -> bool:
    return policy.case_sensitive


def _maps_twins(policy: CodePolicy) -> bool:
    return policy.case_sensitive and policy.avoid_ambiguous


@st.composite
def policies_and_codes(
    draw: st.DrawFn, keep: Callable[[CodePolicy], bool] = lambda policy: True
) -> tuple[CodePolicy, str]:
    """A policy and a valid code for it, built by hypothesis (so failures shrink)."""
    policy = draw(st.sampled_from([policy for policy in ALL_POLICIES if keep(policy)]))
    classes = policy.classes()
    required = [draw(st.sampled_from(chars)) for chars in classes]
    size = policy.length - len(classes)
    rest = draw(st.lists(st.sampled_from(policy.alphabet), min_size=size, max_size=size))
    return policy, "".join(draw(st.permutations(required + rest)))


# --- Policies ---------------------------------------------------------------------------------


def test_default_settings_give_the_recommended_policy() -> None:
    policy = CodePolicy.from_settings(Settings.defaults())
    assert policy == CodePolicy(12, True, True, True, True, avoid_ambiguous=True)
    check_policy(policy)


def test_exact_character_sets_when_avoiding_ambiguous_characters() -> None:
    policy = CodePolicy(12, True, True, True, True, avoid_ambiguous=True)
    assert policy.classes() == ("34679", "ACDEFGHJKLMNPQRTUVWXY", "abdefghjmnpqrt", "!$*=@")
    assert set("oO01lIiS5Z2B8") == AMBIGUOUS
    assert set("cksuvwxyz") == CASE_TWINS


def test_case_twins_are_only_excluded_when_both_cases_are_selected() -> None:
    lower_only = CodePolicy(12, True, False, True, False, avoid_ambiguous=True)
    assert lower_only.classes()[1] == "abcdefghjkmnpqrstuvwxyz"
    assert not lower_only.case_sensitive
    assert CodePolicy(12, False, True, True, False, avoid_ambiguous=True).case_sensitive


def test_no_exclusion_without_avoid_ambiguous() -> None:
    policy = CodePolicy(8, True, True, True, True, avoid_ambiguous=False)
    assert policy.alphabet == "".join(CLASS_CHARS)


@pytest.mark.parametrize("length", [0, 7, 17, 100])
def test_length_outside_the_manifest_bounds_is_refused(length: int) -> None:
    with pytest.raises(InvalidPolicy, match="entre 8 et 16"):
        check_policy(CodePolicy(length, True, True, True, True, avoid_ambiguous=True))


def test_bounds_come_from_the_manifest() -> None:
    spec = load_manifest().setting("tracking_code_length")
    base = CodePolicy(12, True, False, False, False, avoid_ambiguous=True)
    assert spec.min is not None and spec.max is not None
    check_policy(replace(base, length=spec.min))
    check_policy(replace(base, length=spec.max))


def test_a_policy_without_any_class_is_refused() -> None:
    with pytest.raises(InvalidPolicy, match="au moins un type"):
        check_policy(CodePolicy(12, False, False, False, False, avoid_ambiguous=False))
    with pytest.raises(InvalidPolicy):
        generate_tracking_code(CodePolicy(12, False, False, False, False, avoid_ambiguous=True))


# --- Generation, for every allowed policy ------------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=_policy_id)
def test_generated_codes_follow_the_policy(policy: CodePolicy) -> None:
    check_policy(policy)
    alphabet = set(policy.alphabet)
    for _ in range(SAMPLES_PER_POLICY):
        code = generate_tracking_code(policy)
        assert len(code) == policy.length
        assert set(code) <= alphabet
        for chars in policy.classes():
            assert set(code) & set(chars)
        if policy.avoid_ambiguous:
            assert not set(code) & AMBIGUOUS
            if policy.case_sensitive:
                assert not set(code) & CASE_TWINS
        assert normalize_tracking_code(format_tracking_code(code), policy) == code


@pytest.mark.parametrize("policy", ALL_POLICIES[: len(CLASS_SUBSETS) * 2], ids=_policy_id)
def test_classes_are_the_selected_characters_minus_exclusions(policy: CodePolicy) -> None:
    excluded = policy.excluded()
    expected = tuple(
        "".join(c for c in chars if c not in excluded) for chars in _selected_chars(policy)
    )
    assert policy.classes() == expected
    assert all(policy.classes())
    assert "-" not in policy.alphabet
    assert " " not in policy.alphabet


# --- Normalisation of what users type ----------------------------------------------------------


@given(policies_and_codes())
def test_normalize_undoes_format(policy_and_code: tuple[CodePolicy, str]) -> None:
    policy, code = policy_and_code
    assert normalize_tracking_code(format_tracking_code(code), policy) == code
    assert normalize_tracking_code(code, policy) == code


@given(policies_and_codes(), st.data())
def test_spaces_and_dashes_anywhere_are_ignored(
    policy_and_code: tuple[CodePolicy, str], data: st.DataObject
) -> None:
    policy, code = policy_and_code
    separators = st.lists(st.sampled_from(DASHES + SPACES), max_size=3).map("".join)
    pieces = [data.draw(separators)]
    for char in code:
        pieces += [char, data.draw(separators)]
    assert normalize_tracking_code("".join(pieces), policy) == code


def _swap_some(code: str, swaps: list[bool], twins_only: bool = False) -> str:
    return "".join(
        char.swapcase() if swap and (not twins_only or char.lower() in CASE_TWINS) else char
        for char, swap in zip(code, swaps, strict=True)
    )


@given(policies_and_codes(lambda policy: not _mixes_cases(policy)), st.data())
def test_case_is_ignored_when_codes_cannot_mix_cases(
    policy_and_code: tuple[CodePolicy, str], data: st.DataObject
) -> None:
    policy, code = policy_and_code
    swaps = data.draw(st.lists(st.booleans(), min_size=len(code), max_size=len(code)))
    typed = " " + format_tracking_code(_swap_some(code, swaps)).replace("-", " ") + " "
    assert normalize_tracking_code(typed, policy) == code


@given(policies_and_codes(_maps_twins), st.data())
def test_typed_case_twins_map_to_their_capital(
    policy_and_code: tuple[CodePolicy, str], data: st.DataObject
) -> None:
    policy, code = policy_and_code
    swaps = data.draw(st.lists(st.booleans(), min_size=len(code), max_size=len(code)))
    assert normalize_tracking_code(_swap_some(code, swaps, twins_only=True), policy) == code


@given(policies_and_codes(_mixes_cases))
def test_case_matters_when_codes_mix_cases(policy_and_code: tuple[CodePolicy, str]) -> None:
    policy, code = policy_and_code
    typed = code.swapcase()
    if any(char.isalpha() and char.lower() not in CASE_TWINS for char in code):
        assert normalize_tracking_code(typed, policy) != code


def test_case_twin_mapping_examples() -> None:
    mixed = CodePolicy(8, True, True, True, True, avoid_ambiguous=True)
    assert normalize_tracking_code("cKuv-wxy3", mixed) == "CKUVWXY3"
    assert normalize_tracking_code("abdE", mixed) == "abdE"
    no_avoid = replace(mixed, avoid_ambiguous=False)
    assert normalize_tracking_code("cKuv", no_avoid) == "cKuv"
    upper_only = CodePolicy(8, True, True, False, False, avoid_ambiguous=True)
    assert normalize_tracking_code("acd-efg 3", upper_only) == "ACDEFG3"
    lower_only = CodePolicy(8, True, False, True, False, avoid_ambiguous=True)
    assert normalize_tracking_code("ACD-EFG 3", lower_only) == "acdefg3"


def test_excluded_characters_stay_as_typed() -> None:
    mixed = CodePolicy(8, True, True, True, True, avoid_ambiguous=True)
    assert normalize_tracking_code("o0Il1i", mixed) == "o0Il1i"


def test_unicode_look_alikes_are_not_folded() -> None:
    policy = CodePolicy(8, True, True, False, False, avoid_ambiguous=True)
    assert normalize_tracking_code("\uff21\uff23", policy) == "\uff21\uff23"  # fullwidth AC
    assert normalize_tracking_code("\ufb01", policy) == "\ufb01"  # fi ligature
    assert normalize_tracking_code("\u00df", policy) == "\u00df"  # sharp s stays one char


def test_invisible_separators_from_copy_paste_are_removed() -> None:
    policy = CodePolicy(8, True, True, False, False, avoid_ambiguous=True)
    assert normalize_tracking_code("\ufeffAC\u200bDE\u00adFG\u2060", policy) == "ACDEFG"


def test_format_groups_by_four() -> None:
    assert format_tracking_code("ABCDEFGHJK") == "ABCD-EFGH-JK"
    assert format_tracking_code("ABCDEFGH") == "ABCD-EFGH"
    assert format_tracking_code("ABCDEFGHJKLMNPQR") == "ABCD-EFGH-JKLM-NPQR"


# --- Counting ---------------------------------------------------------------------------------


def _brute_force_count(policy: CodePolicy) -> int:
    classes = policy.classes()
    return sum(
        all(set(candidate) & set(chars) for chars in classes)
        for candidate in product(policy.alphabet, repeat=policy.length)
    )


@pytest.mark.parametrize(("flags", "avoid"), list(product(CLASS_SUBSETS, [False, True])))
def test_count_matches_brute_force_on_tiny_alphabets(
    monkeypatch: pytest.MonkeyPatch, flags: ClassFlags, avoid: bool
) -> None:
    monkeypatch.setattr(codes, "DIGITS", "0134")
    monkeypatch.setattr(codes, "UPPERCASE", "ABC")
    monkeypatch.setattr(codes, "LOWERCASE", "abc")
    monkeypatch.setattr(codes, "SPECIAL", "!")
    for length in range(1, 5):
        policy = CodePolicy(length, *flags, avoid_ambiguous=avoid)
        assert count_valid_codes(policy) == _brute_force_count(policy)


def _count_by_dynamic_programming(sizes: list[int], length: int) -> int:
    """Independent check: count strings by the set of classes already used."""
    ways = {0: 1}
    for _ in range(length):
        following: Counter[int] = Counter()
        for used, count in ways.items():
            for index, size in enumerate(sizes):
                following[used | 1 << index] += count * size
        ways = dict(following)
    return ways.get((1 << len(sizes)) - 1, 0)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=_policy_id)
def test_count_matches_an_independent_computation(policy: CodePolicy) -> None:
    sizes = [len(chars) for chars in policy.classes()]
    assert count_valid_codes(policy) == _count_by_dynamic_programming(sizes, policy.length)
    assert tracking_strength(policy).bits == pytest.approx(math.log2(count_valid_codes(policy)))


def test_single_class_count_is_a_power() -> None:
    policy = CodePolicy(8, True, False, False, False, avoid_ambiguous=True)
    assert count_valid_codes(policy) == 5**8


# --- Uniformity (generous bounds: a real bias is far beyond them) -------------------------------


Key = TypeVar("Key")


def _chi_square(observed: Counter[Key], expected: dict[Key, float]) -> float:
    return sum((observed[key] - value) ** 2 / value for key, value in expected.items())


def test_single_class_characters_are_uniform_at_every_position() -> None:
    policy = CodePolicy(8, True, False, False, False, avoid_ambiguous=True)
    draws = 4000
    samples = [generate_tracking_code(policy) for _ in range(draws)]
    alphabet = policy.alphabet
    for position in range(policy.length):
        observed = Counter(code[position] for code in samples)
        expected = {char: draws / len(alphabet) for char in alphabet}
        # 4 degrees of freedom: P(chi2 > 40) is about 4e-8.
        assert _chi_square(observed, expected) < 40


def test_rejection_sampling_has_no_bias_between_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two classes: the number of specials in a code follows the exact distribution.

    Forcing one character of each class then filling the rest would skew it a lot.
    """
    monkeypatch.setattr(codes, "DIGITS", "34")
    monkeypatch.setattr(codes, "SPECIAL", "!")
    policy = CodePolicy(8, True, False, False, True, avoid_ambiguous=True)
    valid = count_valid_codes(policy)
    assert valid == 3**8 - 2**8 - 1
    draws = 12000
    observed = Counter(generate_tracking_code(policy).count("!") for _ in range(draws))
    expected = {k: draws * math.comb(8, k) * 2 ** (8 - k) / valid for k in range(1, 8)}
    assert set(observed) <= set(expected)
    # 6 degrees of freedom: P(chi2 > 50) is about 5e-9; forcing classes gives several hundred.
    assert _chi_square(observed, expected) < 50


# --- Validation codes ------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(6, 15))
def test_validation_codes_are_digits_of_the_right_length(length: int) -> None:
    for _ in range(50):
        code = generate_validation_code(length)
        assert len(code) == length
        assert code.isascii() and code.isdigit()


def test_validation_code_digits_all_appear() -> None:
    assert set("".join(generate_validation_code(14) for _ in range(100))) == set(string.digits)


# --- Strength ---------------------------------------------------------------------------------


def test_default_tracking_policy_is_strong() -> None:
    strength = tracking_strength(CodePolicy.from_settings(Settings.defaults()))
    assert strength.bits == pytest.approx(65.05, abs=0.01)
    assert not strength.weak
    assert strength.summary_fr.startswith("Très robuste : ")  # plain words first (issue 12)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=_policy_id)
def test_tracking_strength_is_weak_below_40_bits(policy: CodePolicy) -> None:
    strength = tracking_strength(policy)
    assert strength.bits == pytest.approx(math.log2(count_valid_codes(policy)))
    assert strength.weak == (strength.bits < 40)
    assert strength.summary_fr.startswith("Faible : ") == strength.weak
    hours = count_valid_codes(policy) / 2 / 10
    assert strength.years_to_guess == pytest.approx(hours / HOURS_PER_YEAR)


def test_weak_tracking_summary_explains_what_to_do() -> None:
    strength = tracking_strength(CodePolicy(8, True, False, False, False, avoid_ambiguous=True))
    assert strength.weak
    assert "environ 2,2 ans" in strength.summary_fr
    assert "Augmentez la longueur" in strength.summary_fr


def test_validation_strength() -> None:
    six = validation_strength(6)
    assert six.bits == pytest.approx(19.93, abs=0.01)
    assert not six.weak  # NIST's "6 digits, approximately 20 bits"
    assert six.success_chance == pytest.approx(20 / 10**6)
    assert "1 chance sur 50\u202f000" in six.summary_fr  # Babel: narrow no-break space
    assert "1 chance sur 5 milliards" in validation_strength(11).summary_fr
    assert validation_strength(5).weak


@pytest.mark.parametrize(
    ("hours", "text"),
    [
        (0, "moins d'une heure"),
        (0.99, "moins d'une heure"),
        (1, "environ 1 heure"),
        (5.4, "environ 5 heures"),
        (47, "environ 47 heures"),
        (72, "environ 3 jours"),
        (24 * 45, "environ 45 jours"),
        (24 * 30.4375 * 5, "environ 5 mois"),
        (HOURS_PER_YEAR * 3, "environ 3 ans"),
        (HOURS_PER_YEAR * 3456, "environ 3\u202f500 ans"),
        (HOURS_PER_YEAR * 1e6, "environ 1 million d'années"),
        (HOURS_PER_YEAR * 1.5e6, "environ 1,5 million d'années"),
        (HOURS_PER_YEAR * 3.04e6, "environ 3 millions d'années"),
        (HOURS_PER_YEAR * 999_999, "environ 1 million d'années"),
        (HOURS_PER_YEAR * 13.8e9, "environ 14 milliards d'années"),
        (HOURS_PER_YEAR * 1e15, "plus de mille milliards d'années"),
    ],
)
def test_durations_read_in_french(hours: float, text: str) -> None:
    assert translate(readable_duration(hours), "fr") == text


def test_numbers_read_in_french() -> None:
    assert translate(readable_number(50_000), "fr") == "50\u202f000"
    assert translate(readable_number(2e6), "fr") == "2 millions"
    assert translate(readable_number(5e12), "fr") == "5\u202f000 milliards"
