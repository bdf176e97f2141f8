"""The plugin's settings: typed values, validation of what an admin submits.

Keys, types, defaults and bounds come from ``plugin.toml`` (see :mod:`.manifest`); a test
keeps :class:`Settings` and the manifest in step. Messages are French: they are shown next to
the field on the admin page.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .manifest import SettingSpec, load_manifest

TRACKING_CLASS_KEYS = (
    "tracking_code_digits",
    "tracking_code_uppercase",
    "tracking_code_lowercase",
    "tracking_code_special",
)
_INTEGER = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class Settings:
    check_account_exists: bool
    tracking_code_length: int
    tracking_code_digits: bool
    tracking_code_uppercase: bool
    tracking_code_lowercase: bool
    tracking_code_special: bool
    tracking_code_avoid_ambiguous: bool
    validation_code_expiry_minutes: int
    validation_code_length: int
    validation_mail_template: str

    @classmethod
    def defaults(cls) -> Settings:
        return cls(**{spec.key: spec.default for spec in load_manifest().settings})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Settings:
        return Settings(**{**self.as_dict(), **changes})


class SettingsError(ValueError):
    """Submitted settings were refused; ``errors`` maps a field key to a French message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))
        self.errors = dict(errors)


def setting_keys() -> tuple[str, ...]:
    return tuple(field.name for field in fields(Settings))


def _parse_int(spec: SettingSpec, raw: str) -> int:
    text = raw.strip()
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"Saisissez un nombre entier entre {spec.min} et {spec.max}.")
    value = int(text)
    assert spec.min is not None and spec.max is not None
    if not spec.min <= value <= spec.max:
        raise ValueError(f"La valeur doit être comprise entre {spec.min} et {spec.max}.")
    return value


def check_values(values: Mapping[str, Any], template_keys: Collection[str]) -> Settings:
    """Validate typed values (already ints and bools), raising :class:`SettingsError`."""
    errors: dict[str, str] = {}
    for spec in load_manifest().settings:
        value = values.get(spec.key)
        if spec.type == "bool" and not isinstance(value, bool):
            errors[spec.key] = "Valeur invalide : cochez ou décochez la case."
        elif spec.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                errors[spec.key] = f"Saisissez un nombre entier entre {spec.min} et {spec.max}."
            elif not spec.min <= value <= spec.max:  # type: ignore[operator]
                errors[spec.key] = f"La valeur doit être comprise entre {spec.min} et {spec.max}."
        elif spec.type == "choice" and value not in template_keys:
            errors[spec.key] = "Choisissez un modèle de mail dans la liste."
    if not errors and not any(values[key] for key in TRACKING_CLASS_KEYS):
        errors["tracking_code_classes"] = "Cochez au moins un type de caractères."
    if errors:
        raise SettingsError(errors)
    return Settings(**{key: values[key] for key in setting_keys()})


def parse_form(form: Mapping[str, str], template_keys: Collection[str]) -> Settings:
    """Turn the admin form into :class:`Settings` (an unchecked box is absent: False)."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for spec in load_manifest().settings:
        raw = form.get(spec.key, "")
        if spec.type == "bool":
            values[spec.key] = raw in ("on", "1", "true")
        elif spec.type == "int":
            try:
                values[spec.key] = _parse_int(spec, raw)
            except ValueError as error:
                errors[spec.key] = str(error)
        else:
            values[spec.key] = raw.strip()
    try:
        settings = check_values(values, template_keys) if not errors else None
    except SettingsError as error:
        errors.update(error.errors)
    if errors or settings is None:
        raise SettingsError(errors)
    return settings
