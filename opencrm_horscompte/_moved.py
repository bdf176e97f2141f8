"""Import paths of release 0.1 that moved in 0.2, kept for one release.

``import opencrm_horscompte.loader`` (or any other name below) still works: it gives the
module at its new place and emits a :class:`DeprecationWarning` naming that place. The
aliases are removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

PACKAGE = "opencrm_horscompte"
REMOVED_IN = "0.3"

#: old name (relative to the package) -> new name
MOVED_MODULES: dict[str, str] = {
    "db": "base.db",
    "models": "base.models",
    "manifest": "base.manifest",
    "i18n": "base.i18n",
    "rendering": "base.rendering",
    "tokens": "base.tokens",
    "throttle": "base.throttle",
    "limits": "base.limits",
    "audit": "base.audit",
    "emails": "base.emails",
    "settings_store": "settings.store",
    "strength": "settings.strength",
    "admin_page": "settings.admin_page",
    "mail_templates": "settings.mail_templates",
    "codes": "tracking.codes",
    "deposit": "tracking.deposit",
    "validation": "lookup.validation",
    "lookup_pages": "lookup.pages",
    "grants": "lookup.grants",
    "maintenance": "lookup.purge",
    "loader": "host_kit.loader",
    "refhost": "host_kit.refhost",
}


def new_location(fullname: str) -> str | None:
    """The module that replaces ``fullname``, or None when it did not move."""
    prefix = PACKAGE + "."
    if not fullname.startswith(prefix):
        return None
    relative = fullname[len(prefix) :]
    head, dot, rest = relative.partition(".")
    if head not in MOVED_MODULES:
        return None
    return f"{prefix}{MOVED_MODULES[head]}{dot}{rest}"


class _Alias(ModuleType):
    """The old module name: every attribute is read from the module at its new place."""

    def __init__(self, name: str, target: ModuleType) -> None:
        super().__init__(name, target.__doc__)
        self.__dict__["_target"] = target
        if hasattr(target, "__path__"):
            self.__path__: list[str] = []  # a package: its old submodules resolve too

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.__dict__["_target"], attribute)

    def __dir__(self) -> list[str]:
        return dir(self.__dict__["_target"])


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves the 0.1 names with a warning (installed by the package's ``__init__``)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if new_location(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = new_location(spec.name)
        assert new is not None
        warnings.warn(
            f"{spec.name} moved to {new}; the old name is removed in {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        return _Alias(spec.name, importlib.import_module(new))

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the alias reads the moved module."""


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
