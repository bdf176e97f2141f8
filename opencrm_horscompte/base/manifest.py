"""Read ``plugin.toml``: identity, host compatibility and the typed settings schema."""

from __future__ import annotations

import tomllib
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


def parse_manifest(data: dict[str, Any]) -> Manifest:
    """Build a :class:`Manifest` from parsed TOML, refusing an incoherent schema."""
    settings = tuple(SettingSpec(**entry) for entry in data.get("settings", []))
    for spec in settings:
        if spec.type == "int" and (spec.min is None or spec.max is None):
            raise ValueError(f"setting {spec.key!r}: an int needs min and max")
        if spec.type == "int" and not spec.min <= spec.default <= spec.max:  # type: ignore[operator]
            raise ValueError(f"setting {spec.key!r}: default outside its bounds")
    return Manifest(
        name=data["name"],
        display_name=data["display_name"],
        description=data.get("description", ""),
        admin_url=data.get("admin_url", ""),
        host_project=data["host"]["project"],
        host_compatible=data["host"]["compatible"],
        settings=settings,
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
