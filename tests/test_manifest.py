"""Code and manifest in step: ``Settings`` fields, ``plugin.toml`` settings, the entry point.

``plugin.toml`` is the one source of truth for setting keys, types, defaults and bounds; the
``Settings`` dataclass spells the same keys out for type checkers. These tests fail as soon
as one moves without the other.
"""

from __future__ import annotations

import copy
import os
import tomllib
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from opencrm_horscompte.base.manifest import Manifest, load_manifest, parse_manifest
from opencrm_horscompte.hookspecs import host as host_specs
from opencrm_horscompte.settings.mail_templates import DEFAULT_VALIDATION_TEMPLATE
from opencrm_horscompte.settings.schema import (
    TRACKING_CLASS_KEYS,
    Settings,
    SettingsError,
    check_values,
    setting_keys,
)

ROOT = Path(__file__).resolve().parent.parent
TOP_MANIFEST = ROOT / "plugin.toml"
PACKAGE_MANIFEST = ROOT / "opencrm_horscompte" / "plugin.toml"
PYPROJECT = ROOT / "pyproject.toml"

PYTHON_TYPE = {"bool": bool, "int": int, "choice": str}
TEMPLATE_KEYS = frozenset({DEFAULT_VALIDATION_TEMPLATE.key})


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest()


def _raw_manifest() -> dict[str, Any]:
    return tomllib.loads(TOP_MANIFEST.read_text("utf-8"))


# --------------------------------------------------------------------------- keys and types


def test_settings_fields_are_the_manifest_settings_in_order(manifest: Manifest) -> None:
    manifest_keys = tuple(spec.key for spec in manifest.settings)
    assert tuple(field.name for field in fields(Settings)) == manifest_keys
    assert setting_keys() == manifest_keys
    assert len(set(manifest_keys)) == len(manifest_keys), "duplicate setting key"


def test_settings_field_types_match_manifest_types(manifest: Manifest) -> None:
    hints = typing.get_type_hints(Settings)
    for spec in manifest.settings:
        assert spec.type in PYTHON_TYPE, f"{spec.key}: unknown manifest type {spec.type!r}"
        expected = PYTHON_TYPE[spec.type]
        assert hints[spec.key] is expected, f"{spec.key}: {hints[spec.key]} vs {spec.type}"
        # bool is a subclass of int: an int default must not be a bool, and conversely
        assert type(spec.default) is expected, f"{spec.key}: default {spec.default!r}"


def test_every_setting_is_labelled_and_grouped(manifest: Manifest) -> None:
    for spec in manifest.settings:
        assert spec.label.strip(), spec.key
        assert spec.help.strip(), spec.key
        # the admin page (templates/horscompte/admin.html) renders these groups only
        assert spec.group in {"identity", "tracking", "validation", "retention"}, spec.key
        if spec.type == "int":
            assert spec.min is not None and spec.max is not None, spec.key
            assert spec.min <= spec.default <= spec.max, spec.key
        else:
            assert spec.min is None and spec.max is None, f"{spec.key}: bounds on a non-int"


# --------------------------------------------------------------------------- values from the spec


def test_bounds_are_those_of_the_spec(manifest: Manifest) -> None:
    tracking = manifest.setting("tracking_code_length")
    validation = manifest.setting("validation_code_length")
    assert (tracking.min, tracking.max) == (8, 16)
    assert (validation.min, validation.max) == (6, 14)
    expiry = manifest.setting("validation_code_expiry_minutes")
    assert expiry.type == "int"
    assert expiry.min is not None and expiry.min >= 1


def test_defaults_follow_the_spec_recommendations(manifest: Manifest) -> None:
    defaults = Settings.defaults()
    for key in TRACKING_CLASS_KEYS:
        assert getattr(defaults, key) is True, f"{key}: the spec recommends every class"
    assert defaults.tracking_code_avoid_ambiguous is True
    # "il est recommandé d'utiliser le nombre le plus élevé possible": not the minimum
    minimum = manifest.setting("tracking_code_length").min
    assert minimum is not None
    assert defaults.tracking_code_length > minimum
    assert set(TRACKING_CLASS_KEYS) <= set(setting_keys())


def test_defaults_pass_validation() -> None:
    defaults = Settings.defaults()
    assert defaults.validation_mail_template == DEFAULT_VALIDATION_TEMPLATE.key
    assert check_values(defaults.as_dict(), TEMPLATE_KEYS) == defaults


def test_check_values_enforces_the_manifest_bounds(manifest: Manifest) -> None:
    defaults = Settings.defaults().as_dict()
    for spec in manifest.settings:
        if spec.type != "int":
            continue
        assert spec.min is not None and spec.max is not None
        for good in (spec.min, spec.max):
            accepted = check_values({**defaults, spec.key: good}, TEMPLATE_KEYS)
            assert getattr(accepted, spec.key) == good
        for bad in (spec.min - 1, spec.max + 1):
            with pytest.raises(SettingsError) as caught:
                check_values({**defaults, spec.key: bad}, TEMPLATE_KEYS)
            assert set(caught.value.errors) == {spec.key}


# --------------------------------------------------------------------------- identity


def test_manifest_name_is_the_entry_point_name(manifest: Manifest) -> None:
    pyproject = tomllib.loads(PYPROJECT.read_text("utf-8"))
    entry_points = pyproject["project"]["entry-points"]["opencrm.plugins"]
    assert list(entry_points) == [manifest.name] == ["horscompte"]
    # the loader reads plugin.toml from the entry point's top-level package
    assert entry_points[manifest.name].partition(".")[0] == "opencrm_horscompte"
    assert manifest.admin_url.startswith("/")


def test_manifest_targets_this_host(manifest: Manifest) -> None:
    assert manifest.host_project == host_specs.PROJECT == "opencrm"
    compatible = SpecifierSet(manifest.host_compatible)
    assert compatible.contains("2.4")  # the spec documents Open CRM 2.4


def test_loaded_manifest_is_the_top_level_file(manifest: Manifest) -> None:
    assert parse_manifest(_raw_manifest()) == manifest


# --------------------------------------------------------------------------- parse_manifest


def _with_setting(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(_raw_manifest())
    entry = next(item for item in data["settings"] if item["key"] == "tracking_code_length")
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return data


@pytest.mark.parametrize(
    "changes",
    [{"min": None, "max": None}, {"min": None}, {"max": None}],
    ids=["no-bounds", "no-min", "no-max"],
)
def test_parse_manifest_refuses_an_int_without_bounds(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="tracking_code_length"):
        parse_manifest(_with_setting(**changes))


@pytest.mark.parametrize("default", [7, 17])
def test_parse_manifest_refuses_a_default_outside_bounds(default: int) -> None:
    with pytest.raises(ValueError, match="tracking_code_length"):
        parse_manifest(_with_setting(default=default))


def test_parse_manifest_accepts_defaults_on_the_bounds() -> None:
    for default in (8, 16):
        parsed = parse_manifest(_with_setting(default=default))
        assert parsed.setting("tracking_code_length").default == default


# --------------------------------------------------------------------------- one file, two paths


def test_package_manifest_is_a_symlink_to_the_top_level_file() -> None:
    assert TOP_MANIFEST.is_file() and not TOP_MANIFEST.is_symlink()
    assert PACKAGE_MANIFEST.is_symlink(), "opencrm_horscompte/plugin.toml must be a symlink"
    # relative, so that it survives a checkout anywhere else
    assert os.readlink(PACKAGE_MANIFEST) == "../plugin.toml"
    assert PACKAGE_MANIFEST.resolve() == TOP_MANIFEST.resolve()
    assert PACKAGE_MANIFEST.samefile(TOP_MANIFEST)
