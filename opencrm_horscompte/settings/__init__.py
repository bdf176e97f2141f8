"""CRM > Administration > Hors-compte: the typed settings (:mod:`.schema`), their storage
(:mod:`.store`), their strength in words (:mod:`.strength`), the validation mail templates
(:mod:`.mail_templates`) and the admin page (:mod:`.admin_page`)."""

from opencrm_horscompte.settings.schema import (
    TRACKING_CLASS_KEYS,
    Settings,
    SettingsError,
    check_values,
    parse_form,
    setting_keys,
)

__all__ = [
    "TRACKING_CLASS_KEYS",
    "Settings",
    "SettingsError",
    "check_values",
    "parse_form",
    "setting_keys",
]
