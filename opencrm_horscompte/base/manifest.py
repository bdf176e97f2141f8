"""Read ``plugin.toml``: identity, host compatibility and the typed settings schema."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from opencrm_horscompte.hookspecs.host import PROJECT as HOST_PROJECT

SettingType = Literal["bool", "int", "choice"]
MANIFEST_FILE = "plugin.toml"
HOST_DISPLAY_NAME = "Open CRM"


@dataclass(frozen=True)
class SettingSpec:
    """One declared setting: key, type, default, bounds, French label and help."""

    key: str
    type: SettingType
    default: Any
    group: str
    label: str
    help: str
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    display_name: str
    description: str
    admin_url: str
    host_project: str
    host_compatible: str
    settings: tuple[SettingSpec, ...]

    def setting(self, key: str) -> SettingSpec:
        for spec in self.settings:
            if spec.key == key:
                return spec
        raise KeyError(key)


#: The published schema of ``plugin.toml`` (JSON Schema, draft 2020-12), checked by
#: :func:`parse_manifest` with French messages. ``docs/plugin.schema.json`` is this dict;
#: a test keeps them equal. Unknown top-level keys and ``[host]`` keys are ignored (room
#: for later releases); an unknown key in a ``[[settings]]`` entry is refused.
MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://opencrm-horscompte.invalid/plugin.schema.json",
    "title": "Open CRM plugin manifest (plugin.toml)",
    "type": "object",
    "required": ["name", "display_name", "host"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z][a-z0-9_-]*$",
            "description": "The entry point's name in the opencrm.plugins group.",
        },
        "display_name": {"type": "string", "minLength": 1, "description": "Shown to admins."},
        "description": {"type": "string", "description": "One sentence for the plugin page."},
        "admin_url": {
            "type": "string",
            "pattern": "^/",
            "description": "Same-site path of the plugin's admin page.",
        },
        "host": {
            "type": "object",
            "required": ["project", "compatible"],
            "properties": {
                "project": {"type": "string", "description": 'Must be "opencrm".'},
                "compatible": {
                    "type": "string",
                    "minLength": 1,
                    "description": 'PEP 440 version specifiers, e.g. ">=2.4,<4".',
                },
            },
        },
        "settings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "type", "default", "group", "label", "help"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
                    "type": {"enum": ["bool", "int", "choice"]},
                    "default": {
                        "type": ["boolean", "integer", "string"],
                        "description": "Of the setting's type (choice: a string).",
                    },
                    "group": {"type": "string"},
                    "label": {"type": "string", "minLength": 1},
                    "help": {"type": "string"},
                    "min": {"type": "integer", "description": "Required for an int."},
                    "max": {"type": "integer", "description": "Required for an int."},
                },
            },
        },
    },
}

_TYPE_NAMES = {
    "string": "du texte",
    "integer": "un entier",
    "boolean": "un booléen (true ou false)",
    "array": "une liste ([[...]])",
    "object": "une table ([...])",
}
_SETTING_PYTHON_TYPES: dict[str, type] = {"bool": bool, "int": int, "choice": str}


class InvalidManifest(ValueError):
    """``plugin.toml`` does not follow :data:`MANIFEST_SCHEMA`; ``problems`` lists every
    reason, in French, for the admin's plugin page."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ; ".join(problems))
        self.problems = problems


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check(value: Any, schema: Mapping[str, Any], where: str, problems: list[str]) -> None:
    """The subset of JSON Schema :data:`MANIFEST_SCHEMA` uses, with French messages."""
    expected = schema.get("type")
    if expected is not None:
        allowed = [expected] if isinstance(expected, str) else list(expected)
        if _json_type(value) not in allowed:
            wanted = " ou ".join(_TYPE_NAMES[name] for name in allowed)
            problems.append(f"champ « {where} » : {wanted} attendu")
            return
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(choice) for choice in schema["enum"])
        problems.append(f"champ « {where} » : « {value} » n'est pas permis ({choices})")
        return
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"champ « {where} » : vide")
        elif "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(
                f"champ « {where} » : « {value} » ne suit pas le format {schema['pattern']}"
            )
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                problems.append(f"champ « {_join(where, name)} » manquant")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                _check(item, properties[name], _join(where, name), problems)
            elif schema.get("additionalProperties") is False:
                problems.append(f"champ « {_join(where, name)} » inconnu")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{index}]", problems)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _setting_problems(entry: Mapping[str, Any], where: str) -> list[str]:
    """What the schema cannot say: a default of the setting's type, within its bounds."""
    kind, default = entry["type"], entry["default"]
    if _json_type(default) != _json_type(_SETTING_PYTHON_TYPES[kind]()):
        return [f"réglage « {entry['key']} » ({where}) : valeur par défaut d'un autre type"]
    if kind != "int":
        if "min" in entry or "max" in entry:
            return [f"réglage « {entry['key']} » ({where}) : min et max sont pour un int"]
        return []
    if "min" not in entry or "max" not in entry:
        return [f"réglage « {entry['key']} » ({where}) : un int a besoin de min et de max"]
    if not entry["min"] <= default <= entry["max"]:
        return [f"réglage « {entry['key']} » ({where}) : valeur par défaut hors des bornes"]
    return []


def manifest_problems(data: Mapping[str, Any]) -> list[str]:
    """Every reason, in French, why ``data`` (parsed ``plugin.toml``) is not a valid
    manifest; empty when it is."""
    problems: list[str] = []
    _check(data, MANIFEST_SCHEMA, "", problems)
    if problems:
        return problems
    seen: set[str] = set()
    for index, entry in enumerate(data.get("settings", [])):
        where = f"settings[{index}]"
        problems += _setting_problems(entry, where)
        if entry["key"] in seen:
            problems.append(f"réglage « {entry['key']} » ({where}) : clé déjà déclarée")
        seen.add(entry["key"])
    return problems


def parse_manifest(data: Mapping[str, Any]) -> Manifest:
    """Build a :class:`Manifest` from parsed TOML; :class:`InvalidManifest` (every problem,
    in French) when it does not follow :data:`MANIFEST_SCHEMA`."""
    problems = manifest_problems(data)
    if problems:
        raise InvalidManifest(problems)
    return Manifest(
        name=data["name"],
        display_name=data["display_name"],
        description=data.get("description", ""),
        admin_url=data.get("admin_url", ""),
        host_project=data["host"]["project"],
        host_compatible=data["host"]["compatible"],
        settings=tuple(SettingSpec(**entry) for entry in data.get("settings", [])),
    )


@cache
def load_manifest() -> Manifest:
    """The manifest shipped in the package (a symlink to the top-level ``plugin.toml``)."""
    text = resources.files("opencrm_horscompte").joinpath("plugin.toml").read_text("utf-8")
    return parse_manifest(tomllib.loads(text))


class PluginRefused(Exception):
    """A plugin turned down for a reason already worded for the admin (in French)."""


def check_manifest(manifest: Manifest, entry_point_name: str, host_version: Version) -> None:
    """Raise :class:`PluginRefused` unless the manifest names this plugin and accepts the host."""
    if manifest.name != entry_point_name:
        raise PluginRefused(
            f"le manifeste déclare le nom « {manifest.name} », "
            f"le point d'entrée s'appelle « {entry_point_name} »"
        )
    if manifest.host_project != HOST_PROJECT:
        raise PluginRefused(
            f"incompatible : plugin pour « {manifest.host_project} », pas pour {HOST_DISPLAY_NAME}"
        )
    if not _host_specifier(manifest).contains(host_version, prereleases=True):
        raise PluginRefused(
            f"incompatible : nécessite {HOST_DISPLAY_NAME} {manifest.host_compatible}, "
            f"hôte {host_version}"
        )


def _host_specifier(manifest: Manifest) -> SpecifierSet:
    try:
        return SpecifierSet(manifest.host_compatible)
    except InvalidSpecifier as exc:
        raise PluginRefused(
            f"manifeste {MANIFEST_FILE} invalide : contrainte de version "
            f"« {manifest.host_compatible} » illisible"
        ) from exc
