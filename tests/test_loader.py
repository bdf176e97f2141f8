"""The plugin loader: discovery, manifest and host checks, registration, enabled dispatch.

Every plugin here is a small package written into ``tmp_path`` (an ``__init__.py`` next to
a ``plugin.toml``), reached through a hand-made ``EntryPoint``; nothing needs a database.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, PathDistribution
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

from opencrm_horscompte.hookspecs.host import MenuEntry, hookimpl
from opencrm_horscompte.host_kit.loader import (
    ENTRY_POINT_GROUP,
    EnabledHooks,
    PluginRecord,
    call_setup,
    discover_entry_points,
    load_plugins,
    make_plugin_manager,
)

HOST_VERSION = "2.6.0"

MENU_PLUGIN = """
from opencrm_horscompte.hookspecs.host import MenuEntry, hookimpl

@hookimpl
def opencrm_admin_menu(host, user):
    return [MenuEntry("Administration", "{label}", "/admin/{label}")]

@hookimpl
def opencrm_plugin_setup(host):
    host.calls.append("{label}")
"""

SPECS_MODULE = """
import pluggy

hookspec = pluggy.HookspecMarker("opencrm")

@hookspec
def fakeext_greet(name):
    '''Greet someone.'''
"""

SPECS_PLUGIN = """
from opencrm_horscompte.hookspecs.host import hookimpl

@hookimpl
def opencrm_add_hookspecs(pluginmanager):
    from . import specs
    pluginmanager.add_hookspecs(specs)

@hookimpl
def fakeext_greet(name):
    return "bonjour " + name
"""

GREET_PLUGIN = """
from opencrm_horscompte.hookspecs.host import hookimpl

@hookimpl
def fakeext_greet(name):
    return "salut " + name
"""

PluginFactory = Callable[..., EntryPoint]


def manifest_text(name: str, compatible: str = ">=2.4,<4", project: str = "opencrm") -> str:
    return textwrap.dedent(
        f"""
        name = "{name}"
        display_name = "Démo {name}"

        [host]
        project = "{project}"
        compatible = "{compatible}"
        """
    )


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginFactory]:
    """Write a plugin package into ``tmp_path``; return its entry point. Unimported after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    packages: list[str] = []

    def factory(
        package: str,
        source: str = "",
        *,
        name: str | None = None,
        manifest: str | None = None,
        modules: dict[str, str] | None = None,
        value: str | None = None,
    ) -> EntryPoint:
        directory = tmp_path / package
        directory.mkdir()
        (directory / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        for module, module_source in (modules or {}).items():
            (directory / f"{module}.py").write_text(textwrap.dedent(module_source), "utf-8")
        entry_name = name or package
        if manifest is None:
            manifest = manifest_text(entry_name)
        if manifest:
            (directory / "plugin.toml").write_text(manifest, encoding="utf-8")
        packages.append(package)
        importlib.invalidate_caches()
        return EntryPoint(name=entry_name, value=value or package, group=ENTRY_POINT_GROUP)

    yield factory
    for module_name in list(sys.modules):
        if module_name.partition(".")[0] in packages:
            del sys.modules[module_name]


@pytest.fixture
def pm() -> pluggy.PluginManager:
    return make_plugin_manager()


def menu_plugin(make_plugin: PluginFactory, package: str) -> EntryPoint:
    return make_plugin(package, MENU_PLUGIN.format(label=package))


def by_name(records: list[PluginRecord]) -> dict[str, PluginRecord]:
    return {record.name: record for record in records}


def menu_labels(entries: list[list[MenuEntry]]) -> list[str]:
    return sorted(entry.label for group in entries for entry in group)


# --------------------------------------------------------------------------- loading


def test_good_plugin_is_registered_and_pending_check_passes(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    entry_point = menu_plugin(make_plugin, "fakecrm_alpha")

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error is None
    assert record.compatible
    assert record.module == "fakecrm_alpha"
    assert record.manifest is not None and record.display_name == "Démo fakecrm_alpha"
    assert record.plugin is sys.modules["fakecrm_alpha"]
    assert pm.get_plugin("fakecrm_alpha") is record.plugin
    pm.check_pending()
    assert menu_labels(pm.hook.opencrm_admin_menu(host=None, user=None)) == ["fakecrm_alpha"]


def test_entry_point_may_name_an_object_inside_a_subpackage(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    impl = """
    from opencrm_horscompte.hookspecs.host import hookimpl

    class Plugin:
        @hookimpl
        def opencrm_routes(self, host):
            return ["route"]

    plugin = Plugin()
    """
    entry_point = make_plugin(
        "fakecrm_obj", name="obj", modules={"impl": impl}, value="fakecrm_obj.impl:plugin"
    )

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error is None
    assert record.module == "fakecrm_obj.impl"
    assert record.plugin is sys.modules["fakecrm_obj.impl"].plugin
    assert pm.hook.opencrm_routes(host=None) == [["route"]]


def test_distribution_name_and_version_are_recorded(
    pm: pluggy.PluginManager, make_plugin: PluginFactory, tmp_path: Path
) -> None:
    menu_plugin(make_plugin, "fakecrm_dist")
    dist_info = tmp_path / "fakecrm_dist-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakecrm-dist\nVersion: 1.2.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nfakecrm_dist = fakecrm_dist\n"
    )
    entry_points = PathDistribution(dist_info).entry_points.select(group=ENTRY_POINT_GROUP)

    [record] = load_plugins(pm, HOST_VERSION, entry_points)

    assert (record.dist_name, record.dist_version) == ("fakecrm-dist", "1.2.3")
    assert record.registered


def test_installed_entry_points_are_discovered() -> None:
    names = {entry_point.name for entry_point in discover_entry_points()}
    assert "horscompte" in names


def test_plugin_adds_its_own_hookspecs_after_the_historic_call(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    # The plugin implementing the extension hook comes first: it must still be checked.
    user = make_plugin("fakecrm_user", GREET_PLUGIN)
    ext = make_plugin("fakecrm_ext", SPECS_PLUGIN, modules={"specs": SPECS_MODULE})

    records = load_plugins(pm, HOST_VERSION, [user, ext])

    assert [record.error for record in records] == [None, None]
    assert [record.name for record in records] == ["fakecrm_user", "fakecrm_ext"]
    assert pm.hook.fakeext_greet.has_spec()
    pm.check_pending()
    assert sorted(pm.hook.fakeext_greet(name="Anne")) == ["bonjour Anne", "salut Anne"]


def test_bad_implementation_of_an_extension_hook_is_refused(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    bad = """
    from opencrm_horscompte.hookspecs.host import hookimpl

    @hookimpl
    def fakeext_greet(name, mood):
        return mood
    """
    user = make_plugin("fakecrm_rude", bad)
    ext = make_plugin("fakecrm_ext", SPECS_PLUGIN, modules={"specs": SPECS_MODULE})

    records = by_name(load_plugins(pm, HOST_VERSION, [user, ext]))

    assert records["fakecrm_ext"].error is None
    assert records["fakecrm_rude"].error is not None
    assert "mood" in records["fakecrm_rude"].error
    assert not records["fakecrm_rude"].registered
    pm.check_pending()
    assert pm.hook.fakeext_greet(name="Anne") == ["bonjour Anne"]


def test_import_error_is_recorded_and_other_plugins_still_load(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    broken = make_plugin(
        "fakecrm_broken",
        modules={"impl": "import fakecrm_does_not_exist\n"},
        value="fakecrm_broken.impl",
    )
    good = menu_plugin(make_plugin, "fakecrm_alpha")

    records = by_name(load_plugins(pm, HOST_VERSION, [broken, good]))

    broken_record = records["fakecrm_broken"]
    assert broken_record.error == ("ModuleNotFoundError: No module named 'fakecrm_does_not_exist'")
    assert not broken_record.registered
    assert broken_record.compatible  # the manifest was fine; the code was not
    assert records["fakecrm_alpha"].registered
    assert pm.get_plugin("fakecrm_broken") is None
    pm.check_pending()


def test_exception_raised_at_import_is_recorded_on_one_line(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    entry_point = make_plugin(
        "fakecrm_boom",
        modules={"impl": "raise RuntimeError('ligne 1\\nligne 2')\n"},
        value="fakecrm_boom.impl",
    )

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error == "RuntimeError: ligne 1 ligne 2"


def test_missing_manifest_is_recorded(pm: pluggy.PluginManager, make_plugin: PluginFactory) -> None:
    entry_point = make_plugin("fakecrm_nomanifest", MENU_PLUGIN.format(label="x"), manifest="")

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error == "manifeste plugin.toml introuvable"
    assert record.manifest is None
    assert not record.compatible
    assert not record.registered


def test_invalid_manifest_is_recorded(pm: pluggy.PluginManager, make_plugin: PluginFactory) -> None:
    entry_point = make_plugin("fakecrm_badtoml", manifest='name = "fakecrm_badtoml"\n')

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error == (
        "manifeste plugin.toml invalide : champ « display_name » manquant ; champ « host » manquant"
    )
    assert not record.registered


def test_manifest_name_must_match_the_entry_point_name(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    entry_point = make_plugin("fakecrm_named", manifest=manifest_text("autre"))

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error == (
        "le manifeste déclare le nom « autre », le point d'entrée s'appelle « fakecrm_named »"
    )
    assert not record.registered
    assert pm.get_plugin("fakecrm_named") is None


def test_incompatible_host_version_is_recorded_and_not_registered(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    entry_point = make_plugin(
        "fakecrm_old", modules={"impl": MENU_PLUGIN.format(label="old")}, value="fakecrm_old.impl"
    )

    [record] = load_plugins(pm, "2.3.0", [entry_point])

    assert record.error == "incompatible : nécessite Open CRM >=2.4,<4, hôte 2.3.0"
    assert not record.compatible
    assert record.manifest is not None
    assert not record.registered
    assert pm.get_plugin("fakecrm_old") is None
    assert "fakecrm_old.impl" not in sys.modules  # its code was never imported


def test_plugin_for_another_project_is_incompatible(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    entry_point = make_plugin(
        "fakecrm_other", manifest=manifest_text("fakecrm_other", project="autrecrm")
    )

    [record] = load_plugins(pm, HOST_VERSION, [entry_point])

    assert record.error == "incompatible : plugin pour « autrecrm », pas pour Open CRM"
    assert not record.compatible


def test_prerelease_host_within_bounds_is_compatible(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    [record] = load_plugins(pm, "3.1.0rc1", [menu_plugin(make_plugin, "fakecrm_alpha")])

    assert record.error is None and record.registered


def test_invalid_hookimpl_is_recorded_and_manager_stays_valid(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    bad = """
    from opencrm_horscompte.hookspecs.host import hookimpl

    @hookimpl
    def opencrm_admin_menu(host, user):
        return []

    @hookimpl
    def opencrm_routes(host, nonsense):
        return []
    """
    bad_entry = make_plugin("fakecrm_invalid", bad)
    good_entry = menu_plugin(make_plugin, "fakecrm_alpha")

    records = by_name(load_plugins(pm, HOST_VERSION, [bad_entry, good_entry]))

    error = records["fakecrm_invalid"].error
    assert error is not None
    assert error.startswith("PluginValidationError: ")
    assert "nonsense" in error and "\n" not in error
    assert not records["fakecrm_invalid"].registered
    assert pm.get_plugin("fakecrm_invalid") is None
    assert records["fakecrm_alpha"].registered
    pm.check_pending()
    assert menu_labels(pm.hook.opencrm_admin_menu(host=None, user=None)) == ["fakecrm_alpha"]


def test_unknown_hook_is_recorded_and_pending_check_passes(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    source = """
    from opencrm_horscompte.hookspecs.host import hookimpl

    @hookimpl
    def opencrm_does_not_exist(host):
        return 1
    """
    [record] = load_plugins(pm, HOST_VERSION, [make_plugin("fakecrm_unknown", source)])

    assert record.error == "hook inconnu de l'hôte : opencrm_does_not_exist"
    assert not record.registered
    pm.check_pending()


def test_optional_unknown_hook_is_accepted(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    source = """
    from opencrm_horscompte.hookspecs.host import hookimpl

    @hookimpl(optionalhook=True)
    def someother_hook(host):
        return 1
    """
    [record] = load_plugins(pm, HOST_VERSION, [make_plugin("fakecrm_optional", source)])

    assert record.error is None and record.registered
    pm.check_pending()


def test_duplicate_entry_point_name_is_recorded(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    first = make_plugin("fakecrm_one", MENU_PLUGIN.format(label="one"), name="same")
    second = make_plugin("fakecrm_two", MENU_PLUGIN.format(label="two"), name="same")

    records = load_plugins(pm, HOST_VERSION, [first, second])

    assert records[0].registered and records[0].error is None
    assert records[1].error is not None and records[1].error.startswith("ValueError: ")
    assert not records[1].registered
    assert pm.get_plugin("same") is records[0].plugin


# --------------------------------------------------------------------------- dispatch


def test_disabled_plugin_hooks_are_not_called_and_reenabling_restores_them(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    entry_points = [menu_plugin(make_plugin, name) for name in ("fakecrm_alpha", "fakecrm_beta")]
    load_plugins(pm, HOST_VERSION, entry_points)
    dispatch = EnabledHooks(pm)

    disabled = dispatch.relay({"fakecrm_alpha"})
    assert menu_labels(disabled.opencrm_admin_menu(host=None, user=None)) == ["fakecrm_beta"]
    assert pm.get_plugin("fakecrm_alpha") is not None  # still registered

    enabled = dispatch.relay(())
    assert menu_labels(enabled.opencrm_admin_menu(host=None, user=None)) == [
        "fakecrm_alpha",
        "fakecrm_beta",
    ]


def test_subset_callers_are_cached_per_set_of_disabled_names(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    load_plugins(pm, HOST_VERSION, [menu_plugin(make_plugin, "fakecrm_alpha")])
    dispatch = EnabledHooks(pm)

    first = dispatch.caller("opencrm_admin_menu", ["fakecrm_alpha"])
    again = dispatch.relay(("fakecrm_alpha", "fakecrm_alpha")).opencrm_admin_menu

    assert again is first
    assert dispatch.caller("opencrm_admin_menu", ()) is not first


def test_cache_follows_plugins_registered_later(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    load_plugins(pm, HOST_VERSION, [menu_plugin(make_plugin, "fakecrm_alpha")])
    dispatch = EnabledHooks(pm)
    relay = dispatch.relay({"late"})
    assert menu_labels(relay.opencrm_admin_menu(host=None, user=None)) == ["fakecrm_alpha"]

    class Late:
        @hookimpl
        def opencrm_admin_menu(self, host: object, user: object) -> list[MenuEntry]:
            return [MenuEntry("Administration", "late", "/late")]

    pm.register(Late(), name="late")

    assert menu_labels(relay.opencrm_admin_menu(host=None, user=None)) == ["fakecrm_alpha"]
    assert menu_labels(dispatch.relay().opencrm_admin_menu(host=None, user=None)) == [
        "fakecrm_alpha",
        "late",
    ]


def test_cache_follows_a_disabled_name_registered_again_and_others_added(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    def menu(label: str) -> object:
        class Menu:
            @hookimpl
            def opencrm_admin_menu(self, host: object, user: object) -> list[MenuEntry]:
                return [MenuEntry("Administration", label, f"/{label}")]

        return Menu()

    load_plugins(pm, HOST_VERSION, [menu_plugin(make_plugin, "fakecrm_alpha")])
    pm.register(menu("off-1"), name="off")
    relay = EnabledHooks(pm).relay({"off"})
    assert menu_labels(relay.opencrm_admin_menu(host=None, user=None)) == ["fakecrm_alpha"]

    pm.unregister(name="off")
    pm.register(menu("off-2"), name="off")  # the disabled name, another object
    pm.register(menu("other"), name="other")  # an enabled plugin, after the cache was made

    assert menu_labels(relay.opencrm_admin_menu(host=None, user=None)) == [
        "fakecrm_alpha",
        "other",
    ]


def test_unknown_hook_name_raises_attribute_error(pm: pluggy.PluginManager) -> None:
    relay = EnabledHooks(pm).relay()

    with pytest.raises(AttributeError):
        _ = relay.opencrm_no_such_hook
    with pytest.raises(AttributeError):
        _ = relay._private
    assert relay.opencrm_routes(host=None) == []


# --------------------------------------------------------------------------- setup


def test_setup_runs_one_plugin_only(pm: pluggy.PluginManager, make_plugin: PluginFactory) -> None:
    entry_points = [menu_plugin(make_plugin, name) for name in ("fakecrm_alpha", "fakecrm_beta")]
    records = by_name(load_plugins(pm, HOST_VERSION, entry_points))
    host = SimpleNamespace(calls=[])

    assert call_setup(pm, host, records["fakecrm_beta"])

    assert host.calls == ["fakecrm_beta"]
    assert records["fakecrm_beta"].error is None


def test_setup_failure_is_recorded_not_raised(
    pm: pluggy.PluginManager, make_plugin: PluginFactory
) -> None:
    failing = """
    from opencrm_horscompte.hookspecs.host import hookimpl

    @hookimpl
    def opencrm_plugin_setup(host):
        raise RuntimeError("table impossible à créer")
    """
    entry_points = [make_plugin("fakecrm_failing", failing), menu_plugin(make_plugin, "fakecrm_ok")]
    records = by_name(load_plugins(pm, HOST_VERSION, entry_points))
    host = SimpleNamespace(calls=[])

    assert not call_setup(pm, host, records["fakecrm_failing"])
    assert call_setup(pm, host, records["fakecrm_ok"])

    assert records["fakecrm_failing"].error == (
        "échec de la mise en place : RuntimeError: table impossible à créer"
    )
    assert records["fakecrm_failing"].registered  # the host decides to leave it disabled
    assert records["fakecrm_ok"].error is None
    assert host.calls == ["fakecrm_ok"]


def test_setup_of_an_unregistered_plugin_does_nothing(pm: pluggy.PluginManager) -> None:
    record = PluginRecord(name="absent", module="absent", error="manifeste plugin.toml introuvable")

    assert not call_setup(pm, SimpleNamespace(calls=[]), record)
    assert record.error == "manifeste plugin.toml introuvable"


def test_the_plugin_refuses_an_incompatible_host_at_setup() -> None:
    """Hosts that skip this loader still get the manifest's compatibility check."""
    from types import SimpleNamespace

    from opencrm_horscompte import plugin
    from opencrm_horscompte.host_kit.loader import PluginRefused

    with pytest.raises(PluginRefused, match="nécessite"):
        plugin.opencrm_plugin_setup(host=SimpleNamespace(version="2.3.0"))


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ([], "au moins une"),
        (b"one-key-not-a-list", "au moins une"),
        ("one-key-as-text", "au moins une"),
        (["a-key-as-text-" + "0" * 18], "la clé n° 1 est de type str"),
        ([b"old-key-" + b"0" * 24, "new-key-as-text"], "la clé n° 2 est de type str"),
        ([b"old-key-" + b"0" * 24, b""], "la clé n° 2 est vide"),
        ([bytearray(b"0" * 32)], "la clé n° 1 est de type bytearray"),  # unhashable: no cache
    ],
)
def test_the_plugin_refuses_unusable_secret_keys_at_setup(keys: Any, reason: str) -> None:
    """Text keys would sign tokens but fail the first HMAC (the first lookup): refused at
    setup instead, with what is wrong, before anything touches the database."""
    from opencrm_horscompte import plugin
    from opencrm_horscompte.host_kit.loader import PluginRefused

    host = SimpleNamespace(version=HOST_VERSION, secret_keys=keys)  # no engine to touch
    with pytest.raises(PluginRefused, match=reason):
        plugin.opencrm_plugin_setup(host=host)


def test_a_reference_host_with_text_keys_leaves_the_plugin_disabled(tmp_path: Path) -> None:
    """Enabling the plugin on a host configured with text keys fails with the reason, as
    the admin's plugin page shows it; nothing is enabled."""
    from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost

    text_keys: Any = ["text"]
    host = ReferenceHost(
        HostConfig(database_url=f"sqlite:///{tmp_path / 'crm.sqlite3'}", secret_keys=text_keys)
    )
    with pytest.raises(RuntimeError, match="la clé n° 1 est de type str"):
        host.set_enabled("horscompte", True, actor="admin@exemple.fr")
    assert not host.is_enabled("horscompte")
    record = host.plugin_record("horscompte")
    assert record is not None and "la clé n° 1 est de type str" in (record.error or "")


def _host_on(dialect: str) -> SimpleNamespace:
    """A host whose engine is only a dialect name: setup must refuse before using it."""
    engine = SimpleNamespace(dialect=SimpleNamespace(name=dialect))
    return SimpleNamespace(version=HOST_VERSION, secret_keys=[b"0" * 32], engine=engine)


@pytest.mark.parametrize("dialect", ["mysql", "mariadb", "mssql", "oracle"])
def test_the_plugin_refuses_an_unsupported_database_at_setup(dialect: str) -> None:
    from opencrm_horscompte import plugin
    from opencrm_horscompte.host_kit.loader import PluginRefused

    with pytest.raises(PluginRefused, match=f"non prise en charge : {dialect}"):
        plugin.opencrm_plugin_setup(host=_host_on(dialect))


def test_the_plugin_refuses_a_sqlite_without_returning_at_setup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqlite3

    from opencrm_horscompte import plugin
    from opencrm_horscompte.host_kit.loader import PluginRefused

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(PluginRefused, match=r"SQLite 3\.34\.1 est trop ancien"):
        plugin.opencrm_plugin_setup(host=_host_on("sqlite"))
