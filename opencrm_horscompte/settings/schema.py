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

from opencrm_horscompte.base.i18n import N_, Message
from opencrm_horscompte.base.manifest import SettingSpec, load_manifest

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
    identity_discreet_mode: bool
    tracking_code_length: int
    tracking_code_digits: bool
    tracking_code_uppercase: bool
    tracking_code_lowercase: bool
    tracking_code_special: bool
    tracking_code_avoid_ambiguous: bool
    validation_code_expiry_minutes: int
    validation_code_length: int
    validation_mail_template: str
    # Added after 0.1: defaults keep settings saved before them loading.
    retention_audit_personal_days: int = 365
    retention_identity_choice_days: int = 90
    retention_spent_state_days: int = 1

    @classmethod
    def defaults(cls) -> Settings:
        return cls(**{spec.key: spec.default for spec in load_manifest().settings})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Settings:
        return Settings(**{**self.as_dict(), **changes})


class SettingsError(ValueError):
    """Submitted settings were refused; ``errors`` maps a field key to its message."""

    def __init__(self, errors: Mapping[str, Message]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))
        self.errors = dict(errors)


def setting_keys() -> tuple[str, ...]:
    return tuple(field.name for field in fields(Settings))


def _typed(spec: SettingSpec, raw: str) -> Any:
    """The form value in the setting's type; an unreadable number stays a string, which
    :func:`check_values` then refuses."""
    if spec.type == "bool":
        return raw in ("on", "1", "true")
    text = raw.strip()
    if spec.type == "int":
        return int(text) if _INTEGER.fullmatch(text) else text
    return text


def check_values(values: Mapping[str, Any], template_keys: Collection[str]) -> Settings:
    """Validate typed values (already ints and bools), raising :class:`SettingsError`."""
    errors: dict[str, Message] = {}
    for spec in load_manifest().settings:
        value = values.get(spec.key)
        if spec.type == "bool" and not isinstance(value, bool):
            errors[spec.key] = N_("Valeur invalide : cochez ou décochez la case.")
        elif spec.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                errors[spec.key] = N_(
                    "Saisissez un nombre entier entre %(min)s et %(max)s.",
                    min=spec.min,
                    max=spec.max,
                )
            elif not spec.min <= value <= spec.max:  # type: ignore[operator]
                errors[spec.key] = N_(
                    "La valeur doit être comprise entre %(min)s et %(max)s.",
                    min=spec.min,
                    max=spec.max,
                )
        elif spec.type == "choice" and value not in template_keys:
            errors[spec.key] = N_("Choisissez un modèle de courriel dans la liste.")
    if not any(values.get(key) is True for key in TRACKING_CLASS_KEYS):
        errors["tracking_code_classes"] = N_("Cochez au moins un type de caractères.")
    if errors:
        raise SettingsError(errors)
    return Settings(**{key: values[key] for key in setting_keys()})


def parse_form(form: Mapping[str, str], template_keys: Collection[str]) -> Settings:
    """Turn the admin form into :class:`Settings` (an unchecked box is absent: False)."""
    values = {spec.key: _typed(spec, form.get(spec.key, "")) for spec in load_manifest().settings}
    return check_values(values, template_keys)
