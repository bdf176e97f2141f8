"""What the integrator's guide promises beyond the hooks: the published manifest schema and
its French refusals, ``register_plugin``, ``collect_routes`` (routes that name their plugin),
``Request.header`` and template loaders contributed by other plugins."""

from __future__ import annotations

import json
import tomllib
import types
from pathlib import Path
from typing import Any

import jinja2
import pytest

from opencrm_horscompte import plugin as plugin_module
from opencrm_horscompte.base.manifest import (
    MANIFEST_SCHEMA,
    InvalidManifest,
    manifest_problems,
    parse_manifest,
)
from opencrm_horscompte.base.rendering import render_fragment
from opencrm_horscompte.hookspecs.host import MenuEntry, Request, Response, Route, hookimpl
from opencrm_horscompte.host_kit.loader import (
    collect_routes,
    make_plugin_manager,
    manifest_from_text,
    register_plugin,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "docs" / "plugin.schema.json"
HOST_VERSION = "2.4.0"


def _manifest(**changes: Any) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "plugin.toml").read_text("utf-8"))
    data.update(changes)
    return data


# --------------------------------------------------------------------------- manifest schema


def test_the_published_schema_is_the_one_the_loader_applies() -> None:
    assert json.loads(SCHEMA_FILE.read_text("utf-8")) == MANIFEST_SCHEMA


def test_the_plugins_own_manifest_follows_the_schema() -> None:
    assert manifest_problems(_manifest()) == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": 3}, "champ « name » : du texte attendu"),
        ({"name": "Mon Plugin"}, "champ « name » : « Mon Plugin » ne suit pas le format"),
        ({"display_name": ""}, "champ « display_name » : vide"),
        ({"admin_url": "admin"}, "champ « admin_url » : « admin » ne suit pas le format ^/"),
        ({"host": {"project": "opencrm"}}, "champ « host.compatible » manquant"),
        ({"host": "opencrm"}, "champ « host » : une table ([...]) attendu"),
        ({"settings": {"key": "x"}}, "champ « settings » : une liste ([[...]]) attendu"),
    ],
)
def test_schema_violations_are_named_in_french(changes: dict[str, Any], problem: str) -> None:
    problems = manifest_problems(_manifest(**changes))
    assert any(found.startswith(problem) for found in problems), problems
    with pytest.raises(InvalidManifest):
        parse_manifest(_manifest(**changes))


def _setting(**entry: Any) -> dict[str, Any]:
    base = {"key": "k", "type": "int", "default": 3, "min": 1, "max": 5}
    base.update({"group": "g", "label": "L", "help": ""}, **entry)
    return _manifest(settings=[base])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"type": "float"}, "« float » n'est pas permis (bool, int, choice)"),
        ({"colour": "red"}, "champ « settings[0].colour » inconnu"),
        ({"default": True}, "valeur par défaut d'un autre type"),
        ({"default": 9}, "valeur par défaut hors des bornes"),
        ({"type": "bool", "default": True}, "min et max sont pour un int"),
        ({"label": ""}, "champ « settings[0].label » : vide"),
    ],
)
def test_setting_problems_are_named_in_french(entry: dict[str, Any], problem: str) -> None:
    problems = manifest_problems(_setting(**entry))
    assert any(problem in found for found in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidManifest) as raised:
        parse_manifest({"name": "x", "host": {}})
    assert raised.value.problems == [
        "champ « display_name » manquant",
        "champ « host.project » manquant",
        "champ « host.compatible » manquant",
    ]


def test_unreadable_toml_is_refused_in_french() -> None:
    from opencrm_horscompte.base.manifest import PluginRefused

    with pytest.raises(PluginRefused, match=r"^manifeste plugin.toml illisible \(TOML\) : "):
        manifest_from_text('name = "x"\nname = ')


# --------------------------------------------------------------------------- register_plugin

MENU = MenuEntry("Administration", "Embarqué", "/embarque")


def _embedded(name: str = "embarque") -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def opencrm_admin_menu(host: Any, user: Any) -> list[MenuEntry]:
        return [MENU]

    module.opencrm_admin_menu = opencrm_admin_menu  # type: ignore[attr-defined]
    return module


EMBEDDED_MANIFEST = """
name = "embarque"
display_name = "Module embarqué"
[host]
project = "opencrm"
compatible = ">=2.4,<3"
"""


def test_register_plugin_without_entry_point_or_manifest() -> None:
    pm = make_plugin_manager()
    record = register_plugin(pm, _embedded(), name="embarque")
    assert record.registered and record.error is None and record.name == "embarque"
    assert pm.get_plugin("embarque") is record.plugin
    assert pm.hook.opencrm_admin_menu(host=None, user=None) == [[MENU]]


def test_register_plugin_takes_its_name_from_the_manifest_and_checks_the_host() -> None:
    pm = make_plugin_manager()
    record = register_plugin(pm, _embedded(), manifest=EMBEDDED_MANIFEST, host_version="2.4.0")
    assert record.registered and record.compatible and record.name == "embarque"
    assert record.display_name == "Module embarqué"

    refused = register_plugin(
        make_plugin_manager(), _embedded(), manifest=EMBEDDED_MANIFEST, host_version="3.1"
    )
    assert not refused.registered
    assert refused.error == "incompatible : nécessite Open CRM >=2.4,<3, hôte 3.1"


def test_register_plugin_records_an_invalid_manifest() -> None:
    record = register_plugin(make_plugin_manager(), _embedded(), manifest={"name": "embarque"})
    assert not record.registered
    assert record.error is not None
    assert record.error.startswith("manifeste plugin.toml invalide : champ « display_name »")


def test_register_plugin_refuses_hooks_nobody_specified() -> None:
    module = types.ModuleType("extension")

    @hookimpl
    def horscompte_generate_tracking_code(host: Any, settings: Any) -> str:
        return "0000"

    module.horscompte_generate_tracking_code = horscompte_generate_tracking_code  # type: ignore[attr-defined]
    early = make_plugin_manager()
    record = register_plugin(early, module)
    assert not record.registered
    assert record.error == "hook inconnu de l'hôte : horscompte_generate_tracking_code"
    # registered after the plugin that adds the spec, it is accepted
    pm = make_plugin_manager()
    assert register_plugin(pm, plugin_module, name="horscompte").registered
    assert register_plugin(pm, module).registered


# --------------------------------------------------------------------------- routes


def test_collect_routes_names_the_owner_of_every_route() -> None:
    pm = make_plugin_manager()
    register_plugin(pm, plugin_module, name="horscompte")
    other = types.ModuleType("autre")

    def page(host: Any, request: Request) -> Response:
        return Response.html("autre")

    @hookimpl
    def opencrm_routes() -> list[Route]:  # fewer arguments than the spec
        return [Route(("GET",), "/autre", page, plugin="un-nom-faux")]

    other.opencrm_routes = opencrm_routes  # type: ignore[attr-defined]
    register_plugin(pm, other, name="autre")
    owners = {route.path: route.plugin for route in collect_routes(pm, host=None)}
    assert owners["/autre"] == "autre"
    assert owners["/hors-compte/suivi"] == "horscompte"
    assert set(owners.values()) == {"autre", "horscompte"}


@pytest.mark.parametrize("answer", ["raise", [{"path": "/x"}], ["/x"]])
def test_a_plugin_whose_routes_fail_is_recorded_and_the_others_still_mount(
    answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    """One broken plugin, enabled or not, used to stop the host from mounting any route."""
    pm = make_plugin_manager()
    records = [register_plugin(pm, plugin_module, name="horscompte")]
    broken = types.ModuleType("casse")

    @hookimpl
    def opencrm_routes(host: Any) -> object:
        if answer == "raise":
            raise RuntimeError("routes exploded")
        return answer

    broken.opencrm_routes = opencrm_routes  # type: ignore[attr-defined]
    records.append(register_plugin(pm, broken, name="casse"))
    routes = collect_routes(pm, None, records)
    assert {route.plugin for route in routes} == {"horscompte"}
    assert "/hors-compte/suivi" in {route.path for route in routes}
    error = records[1].error or ""
    assert error.startswith("routes : ")
    assert ("routes exploded" if answer == "raise" else "must answer Route objects") in error
    assert records[0].error is None
    assert any("plugin 'casse'" in record.getMessage() for record in caplog.records)


# --------------------------------------------------------------------------- request


def test_request_headers_are_read_whatever_their_case() -> None:
    request = Request("GET", "/", headers={"accept-language": "en", "X-Forwarded-For": "1.2.3.4"})
    assert request.header("Accept-Language") == "en"
    assert request.header("x-forwarded-for") == "1.2.3.4"
    assert request.header("Cookie") == "" and request.header("Cookie", "none") == "none"


# --------------------------------------------------------------------------- template loaders

EXTENSION_TEMPLATES = jinja2.DictLoader(
    {
        "ville/essai.txt": "{% if locale == 'en' %}Code{% else %}Code de suivi{% endif %} "
        "{{ code }}",
        "horscompte/receipt.html": "remplacé par l'extension",
    }
)
HOST_TEMPLATES = jinja2.DictLoader({"horscompte/receipt.html": "remplacé par l'hôte"})


class _Host:
    def __init__(self, pm: Any, loader: jinja2.BaseLoader | None) -> None:
        self.hook = pm.hook
        self.template_loader = loader


def _host_with_extension(host_loader: jinja2.BaseLoader | None) -> _Host:
    pm = make_plugin_manager()
    register_plugin(pm, plugin_module, name="horscompte")
    extension = types.ModuleType("ville")

    @hookimpl
    def horscompte_template_loader(host: Any) -> jinja2.BaseLoader:
        return EXTENSION_TEMPLATES

    extension.horscompte_template_loader = horscompte_template_loader  # type: ignore[attr-defined]
    assert register_plugin(pm, extension).registered
    return _Host(pm, host_loader)


def test_an_extension_ships_templates_the_plugin_renders() -> None:
    host: Any = _host_with_extension(None)
    assert render_fragment(host, "ville/essai.txt", {"code": "123"}, "fr") == "Code de suivi 123"
    assert render_fragment(host, "ville/essai.txt", {"code": "123"}, "en") == "Code 123"
    # searched before the plugin's own templates...
    assert render_fragment(host, "horscompte/receipt.html", {}) == "remplacé par l'extension"


def test_the_host_loader_stays_first() -> None:
    host: Any = _host_with_extension(HOST_TEMPLATES)
    assert render_fragment(host, "horscompte/receipt.html", {}) == "remplacé par l'hôte"
    assert render_fragment(host, "ville/essai.txt", {"code": "1"}, "fr") == "Code de suivi 1"
