"""Discover, check and register Open CRM plugins; dispatch hooks to the enabled ones only.

Any Open CRM host can use this module, the reference host included::

    pm = make_plugin_manager()
    records = load_plugins(pm, host_version="2.6.0")
    dispatch = EnabledHooks(pm)
    for record in records:
        if record.registered and record.name not in disabled:
            call_setup(pm, host, record)
    host.hook = dispatch.relay(disabled)  # per request: the admin's current choice

Loading never crashes the host: each entry point of the ``opencrm.plugins`` group is
handled on its own, and whatever goes wrong (import, manifest, host compatibility,
registration, setup) ends up as a one-line ``error`` on its :class:`PluginRecord`, for the
admin's plugin page, and in the log.

Enabling is the host's business (it stores the admin's choice); this module only makes the
choice effective at dispatch time: a disabled plugin stays registered, its hooks are left
out of the calls, so enabling it again needs no re-import.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata, resources
from typing import Any, cast

import pluggy
from packaging.version import Version

from opencrm_horscompte.base.manifest import (
    InvalidManifest,
    Manifest,
    check_manifest,
    parse_manifest,
)
from opencrm_horscompte.base.manifest import (
    PluginRefused as PluginRefused,  # explicit re-export: hosts catch it from the loader
)
from opencrm_horscompte.hookspecs import host as host_specs
from opencrm_horscompte.hookspecs.host import Route

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "opencrm.plugins"
MANIFEST_FILE = "plugin.toml"
ADD_HOOKSPECS_HOOK = "opencrm_add_hookspecs"
SETUP_HOOK = "opencrm_plugin_setup"
MAX_ERROR_LENGTH = 500


@dataclass
class PluginRecord:
    """What the host knows of one installed plugin, for its plugin page.

    ``plugin`` is the registered module or object, or None when the plugin could not be
    registered (then ``error`` says why). ``compatible`` is True once the manifest has
    been read and accepts this host.
    """

    name: str
    module: str
    dist_name: str | None = None
    dist_version: str | None = None
    manifest: Manifest | None = None
    error: str | None = None
    compatible: bool = False
    plugin: Any = None

    @property
    def registered(self) -> bool:
        return self.plugin is not None

    @property
    def display_name(self) -> str:
        return self.manifest.display_name if self.manifest else self.name


# --------------------------------------------------------------------------- plugin manager


def make_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with the host specs, the historic ``opencrm_add_hookspecs`` made."""
    pm = pluggy.PluginManager(host_specs.PROJECT)
    pm.add_hookspecs(host_specs)
    pm.hook.opencrm_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    return pm


def discover_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of the ``opencrm.plugins`` group."""
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def describe_error(exc: BaseException) -> str:
    """A one-line, bounded description of ``exc`` for the admin's plugin page."""
    text = str(exc) if isinstance(exc, PluginRefused) else _typed_message(exc)
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if len(line) > MAX_ERROR_LENGTH:
        line = line[: MAX_ERROR_LENGTH - 1] + "…"
    return line


def _typed_message(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _record_failure(record: PluginRecord, exc: Exception, prefix: str = "") -> None:
    record.error = prefix + describe_error(exc)
    if isinstance(exc, PluginRefused):
        log.warning("plugin %r not loaded: %s", record.name, record.error)
    else:
        log.error("plugin %r: %s", record.name, record.error, exc_info=exc)


# --------------------------------------------------------------------------- loading


def load_plugins(
    pm: pluggy.PluginManager,
    host_version: str,
    entry_points: Iterable[metadata.EntryPoint] | None = None,
) -> list[PluginRecord]:
    """Load, check and register every plugin; one record per entry point, in their order.

    ``entry_points`` defaults to :func:`discover_entry_points`. Each plugin is handled on
    its own and its failure recorded, never raised. A malformed ``host_version`` is the
    host's bug and raises ``packaging.version.InvalidVersion``.

    Plugins that add hook specs (``opencrm_add_hookspecs``) are registered first, so that
    other plugins' implementations of those hooks are checked on their own registration.
    Implementations of hooks nobody specified leave their plugin unregistered, so
    ``pm.check_pending()`` passes afterwards.
    """
    version = Version(host_version)
    if entry_points is None:
        entry_points = discover_entry_points()
    prepared = [_prepare(entry_point, version) for entry_point in entry_points]
    records = [record for record, _ in prepared]
    loaded = [(record, plugin) for record, plugin in prepared if plugin is not None]
    loaded.sort(key=lambda item: not _adds_hookspecs(pm, item[1]))
    for record, plugin in loaded:
        _register(pm, record, plugin, records)
    _refuse_unknown_hooks(pm, records)
    return records


def _prepare(entry_point: metadata.EntryPoint, version: Version) -> tuple[PluginRecord, Any]:
    """Read and check the manifest, then import the plugin (None on any failure)."""
    record = _new_record(entry_point)
    try:
        record.manifest = read_manifest(entry_point)
        check_manifest(record.manifest, entry_point.name, version)
        record.compatible = True
        return record, _load_object(entry_point)
    except Exception as exc:
        _record_failure(record, exc)
        return record, None


def _new_record(entry_point: metadata.EntryPoint) -> PluginRecord:
    dist = getattr(entry_point, "dist", None)
    return PluginRecord(
        name=entry_point.name,
        module=entry_point.module,
        dist_name=dist.name if dist is not None else None,
        dist_version=dist.version if dist is not None else None,
    )


def _load_object(entry_point: metadata.EntryPoint) -> Any:
    plugin = entry_point.load()
    if plugin is None:
        raise PluginRefused(f"le point d'entrée « {entry_point.value} » ne désigne aucun objet")
    return plugin


def read_manifest(entry_point: metadata.EntryPoint) -> Manifest:
    """The ``plugin.toml`` of the entry point's top-level package (imports that package),
    validated against ``MANIFEST_SCHEMA``; :class:`PluginRefused` with a French reason."""
    top_package = entry_point.module.partition(".")[0]
    resource = resources.files(top_package).joinpath(MANIFEST_FILE)
    if not resource.is_file():
        raise PluginRefused(f"manifeste {MANIFEST_FILE} introuvable")
    return manifest_from_text(resource.read_text("utf-8"))


def manifest_from_text(text: str) -> Manifest:
    """Parse and validate the text of a ``plugin.toml``; :class:`PluginRefused` with every
    problem, in French, when it is not a valid manifest."""
    try:
        return parse_manifest(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise PluginRefused(f"manifeste {MANIFEST_FILE} illisible (TOML) : {exc}") from exc
    except InvalidManifest as exc:
        raise PluginRefused(f"manifeste {MANIFEST_FILE} invalide : {exc}") from exc


# --------------------------------------------------------------------------- registration


def _adds_hookspecs(pm: pluggy.PluginManager, plugin: Any) -> bool:
    """Does ``plugin`` implement ``opencrm_add_hookspecs``?"""
    try:
        for attr_name in dir(plugin):
            opts = pm.parse_hookimpl_opts(plugin, attr_name)
            if opts is not None and (opts.get("specname") or attr_name) == ADD_HOOKSPECS_HOOK:
                return True
    except Exception:  # a hostile __dir__ or descriptor: the registration will tell
        return False
    return False


def _register(
    pm: pluggy.PluginManager, record: PluginRecord, plugin: Any, records: list[PluginRecord]
) -> None:
    try:
        registered_name = pm.register(plugin, name=record.name)
    except Exception as exc:
        _undo_registration(pm, plugin, record.name)
        _blame_other_plugin(pm, exc, plugin, records)
        _record_failure(record, exc)
        return
    if registered_name is None:
        _record_failure(record, PluginRefused("enregistrement refusé : nom bloqué par l'hôte"))
        return
    record.plugin = plugin


def _undo_registration(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Remove what a registration that failed half-way left behind."""
    if pm.get_plugin(name) is plugin:
        pm.unregister(plugin=plugin, name=name)


def _blame_other_plugin(
    pm: pluggy.PluginManager, exc: Exception, plugin: Any, records: list[PluginRecord]
) -> None:
    """A plugin's new hook specs may reject an implementation registered earlier by another."""
    culprit = (
        getattr(exc, "plugin", None) if isinstance(exc, pluggy.PluginValidationError) else None
    )
    if culprit is None or culprit is plugin:
        return
    for other in records:
        if other.plugin is culprit:
            _unregister_record(pm, other, exc)


def _unregister_record(pm: pluggy.PluginManager, record: PluginRecord, exc: Exception) -> None:
    _undo_registration(pm, record.plugin, record.name)
    record.plugin = None
    _record_failure(record, exc)


def unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hooks ``plugin`` implements that no spec declares (optional hooks aside)."""
    names = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            names.append(caller.name)
    return sorted(names)


def _refuse_unknown_hooks(pm: pluggy.PluginManager, records: list[PluginRecord]) -> None:
    for record in records:
        if not record.registered:
            continue
        names = unknown_hooks(pm, record.plugin)
        if names:
            refusal = PluginRefused(f"hook inconnu de l'hôte : {', '.join(names)}")
            _unregister_record(pm, record, refusal)


def register_plugin(
    pm: pluggy.PluginManager,
    plugin: object,
    *,
    name: str | None = None,
    manifest: Manifest | Mapping[str, Any] | str | None = None,
    host_version: str | None = None,
) -> PluginRecord:
    """Register a plugin that has no entry point (a test plugin, a plugin embedded in the
    host) the way :func:`load_plugins` registers the others; its :class:`PluginRecord`.

    ``name`` defaults to the manifest's name, else pluggy's canonical name. ``manifest``
    (optional) is a :class:`Manifest`, parsed TOML or the text of a ``plugin.toml``; with
    ``host_version`` it is checked against the host like an installed plugin's. Failures
    are recorded in ``record.error`` (never raised), as for installed plugins. A plugin that
    implements another plugin's hooks (``horscompte_*``) must be registered after it.
    """
    try:
        parsed = _manifest_of(manifest)
    except PluginRefused as exc:
        record = PluginRecord(name=name or pm.get_canonical_name(plugin), module=_module(plugin))
        _record_failure(record, exc)
        return record
    if name is None:
        name = parsed.name if parsed is not None else pm.get_canonical_name(plugin)
    record = PluginRecord(name=name, module=_module(plugin), manifest=parsed)
    if parsed is not None and host_version is not None:
        try:
            check_manifest(parsed, name, Version(host_version))
        except PluginRefused as exc:
            _record_failure(record, exc)
            return record
    record.compatible = parsed is not None and host_version is not None
    _register(pm, record, plugin, [record])
    _refuse_unknown_hooks(pm, [record])
    return record


def _manifest_of(manifest: Manifest | Mapping[str, Any] | str | None) -> Manifest | None:
    if manifest is None or isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, str):
        return manifest_from_text(manifest)
    try:
        return parse_manifest(manifest)
    except InvalidManifest as exc:
        raise PluginRefused(f"manifeste {MANIFEST_FILE} invalide : {exc}") from exc


def _module(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__module__


def collect_routes(
    pm: pluggy.PluginManager, host: Any, records: Iterable[PluginRecord] = ()
) -> list[Route]:
    """Every registered plugin's ``opencrm_routes``, enabled or not, each with ``plugin``
    set to the name its implementation was registered under.

    Mount them all once; at dispatch, answer 404 when ``route.plugin`` is disabled (so a
    plugin enabled after start needs no re-mount). A plugin whose hook raises, or answers
    anything but :class:`Route` objects, contributes no route: the error is logged and
    written to its record among ``records`` (the host's plugin page), and the other plugins'
    routes are mounted all the same."""
    by_name = {record.name: record for record in records}
    routes: list[Route] = []
    for impl in pm.hook.opencrm_routes.get_hookimpls():
        arguments = {"host": host}
        try:
            answer = cast(
                "Iterable[object] | None",
                impl.function(*(arguments[name] for name in impl.argnames)),
            )
            found: list[Route] = []
            for route in answer or ():
                if not isinstance(route, Route):
                    raise TypeError(f"opencrm_routes must answer Route objects, not {route!r:.80}")
                found.append(replace(route, plugin=impl.plugin_name))
        except Exception as exc:
            record = by_name.get(impl.plugin_name) or PluginRecord(impl.plugin_name, "?")
            _record_failure(record, exc, prefix="routes : ")
            continue
        routes.extend(found)
    return routes


# --------------------------------------------------------------------------- dispatch


class EnabledHooks:
    """Hook dispatch restricted to the enabled plugins, over one plugin manager.

    ``relay(disabled)`` gives an object whose attributes are the hooks of ``pm.hook``
    without the implementations of the plugins named in ``disabled``. Subset callers are
    cached per set of disabled names and hook, each with the plugins those names named when
    it was made: it is made again once a disabled name names another plugin (or one
    registered since). Plugins registered under other names need nothing: pluggy's subset
    callers filter the hook's current implementations on every call.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._callers: dict[
            tuple[frozenset[str], str], tuple[pluggy.HookCaller, tuple[tuple[str, Any], ...]]
        ] = {}

    def relay(self, disabled: Collection[str] = ()) -> HookRelayView:
        """The hooks as seen with the plugins named in ``disabled`` switched off."""
        return HookRelayView(self, frozenset(disabled))

    def caller(self, hook_name: str, disabled: Collection[str] = ()) -> pluggy.HookCaller:
        """The caller of ``hook_name`` without the disabled plugins; AttributeError if none."""
        key = (frozenset(disabled), hook_name)
        cached = self._callers.get(key)
        get_plugin = self._pm.get_plugin
        if cached is not None:
            caller, removed = cached
            if all(get_plugin(name) is plugin for name, plugin in removed):
                return caller
        removed = tuple((name, get_plugin(name)) for name in sorted(key[0]))
        caller = self._subset_caller(
            hook_name, [plugin for _, plugin in removed if plugin is not None]
        )
        self._callers[key] = (caller, removed)
        return caller

    def _subset_caller(self, hook_name: str, plugins: list[Any]) -> pluggy.HookCaller:
        hook = None if hook_name.startswith("_") else getattr(self._pm.hook, hook_name, None)
        if not isinstance(hook, pluggy.HookCaller):
            raise AttributeError(f"no hook named {hook_name!r}")
        return self._pm.subset_hook_caller(hook_name, remove_plugins=plugins)


class HookRelayView:
    """``relay.<hook name>``: the hook caller without the disabled plugins (see EnabledHooks)."""

    __slots__ = ("_disabled", "_dispatch")

    def __init__(self, dispatch: EnabledHooks, disabled: frozenset[str]) -> None:
        self._dispatch = dispatch
        self._disabled = disabled

    @property
    def disabled(self) -> frozenset[str]:
        return self._disabled

    def __getattr__(self, name: str) -> pluggy.HookCaller:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._dispatch.caller(name, self._disabled)


# --------------------------------------------------------------------------- setup


def call_setup(pm: pluggy.PluginManager, host: Any, record: PluginRecord) -> bool:
    """Run ``opencrm_plugin_setup`` of this plugin only; record a failure instead of raising.

    Returns True on success (and clears an earlier setup error), False when the plugin is
    not registered or its setup raised; then the host should leave the plugin disabled.
    """
    if not record.registered:
        return False
    others = [plugin for plugin in pm.get_plugins() if plugin is not record.plugin]
    setup = pm.subset_hook_caller(SETUP_HOOK, remove_plugins=others)
    try:
        setup(host=host)
    except Exception as exc:
        _record_failure(record, exc, prefix="échec de la mise en place : ")
        return False
    record.error = None
    return True
