"""The 0.1 import paths still work for one release, each with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from opencrm_horscompte import _moved

OLD_PATHS = [
    *sorted(f"opencrm_horscompte.{old}" for old in _moved.MOVED_MODULES),
    "opencrm_horscompte.refhost.app",
    "opencrm_horscompte.refhost.host",
    "opencrm_horscompte.refhost.outbox",
    "opencrm_horscompte.refhost.adapter",
]
UNMOVED = [
    "opencrm_horscompte.hookspecs",
    "opencrm_horscompte.hookspecs.host",
    "opencrm_horscompte.hookspecs.horscompte",
    "opencrm_horscompte.plugin",
    "opencrm_horscompte.cli",
    "opencrm_horscompte.settings",
    "opencrm_horscompte.identity",
    "opencrm_horscompte.lookup",
]


def _fresh_import(name: str) -> object:
    for loaded in [key for key in sys.modules if key == name or key.startswith(name + ".")]:
        if _moved.new_location(loaded) is not None:
            del sys.modules[loaded]
    return importlib.import_module(name)


@pytest.mark.parametrize("old", OLD_PATHS)
def test_old_path_warns_and_gives_the_moved_module(old: str) -> None:
    new = _moved.new_location(old)
    assert new is not None
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}"):
        module = _fresh_import(old)
    target = importlib.import_module(new)
    public = [name for name in vars(target) if not name.startswith("__")]
    assert public or hasattr(target, "__path__"), new
    for name in public:
        assert getattr(module, name) is getattr(target, name)


def test_names_a_host_of_release_0_1_imports() -> None:
    for name in [key for key in sys.modules if _moved.new_location(key)]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning):
        from opencrm_horscompte.db import make_engine, writer  # noqa: F401
        from opencrm_horscompte.loader import (  # noqa: F401
            EnabledHooks,
            PluginRecord,
            PluginRefused,
            call_setup,
            check_manifest,
            load_plugins,
            make_plugin_manager,
        )
        from opencrm_horscompte.refhost.host import HostConfig, ReferenceHost  # noqa: F401
    from opencrm_horscompte.identity import DECLINE_PATH, identity_step  # noqa: F401
    from opencrm_horscompte.lookup import LOOKUP_PATH, read_input  # noqa: F401
    from opencrm_horscompte.settings import Settings, SettingsError  # noqa: F401


@pytest.mark.parametrize("name", UNMOVED)
def test_current_paths_do_not_warn(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(name)


def test_the_plugin_imports_no_host_side_code() -> None:
    import ast
    from pathlib import Path

    package = Path(_moved.__file__).parent
    for path in package.rglob("*.py"):
        if "host_kit" in path.parts or path.name in ("cli.py", "_moved.py"):
            continue  # the command line runs the reference host; it is not the plugin
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert "host_kit" not in node.module, f"{path} imports {node.module}"
