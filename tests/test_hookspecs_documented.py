"""Every hook is documented, and the real plugin implements only specified hooks.

A hook spec's docstring is its contract for host and plugin authors: each parameter
(``:param name:``), the return (``:return:``), whether it is ``firstresult`` (stated either
way, and matching the spec's option) and whether it is historic. The README's hook table
names every hook, and the integrator's guide (docs/integrating.md) gives each one a section
with a runnable example, which these tests run and register beside the plugin. A missing
README or guide fails, never skips.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path
from typing import Any

import pluggy
import pytest

from opencrm_horscompte import plugin as plugin_module
from opencrm_horscompte.hookspecs import horscompte as horscompte_specs
from opencrm_horscompte.hookspecs import host as host_specs
from opencrm_horscompte.host_kit.loader import unknown_hooks

PROJECT = "opencrm"
SPEC_ATTR = f"{PROJECT}_spec"
IMPL_ATTR = f"{PROJECT}_impl"
SPEC_MODULES = (host_specs, horscompte_specs)
ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "integrating.md"

_NOT_FIRSTRESULT = re.compile(r"\bnot\s+firstresult\b", re.IGNORECASE)
_FIRSTRESULT = re.compile(r"\bfirstresult\b", re.IGNORECASE)
_HISTORIC = re.compile(r"\bhistoric\b", re.IGNORECASE)
_PARAM = re.compile(r":param\s+(\w+)\s*:")


def hookspecs_of(module: types.ModuleType) -> dict[str, Any]:
    """The hook specs defined in ``module``, by name (what ``HookspecMarker`` marked)."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isfunction(obj) and hasattr(obj, SPEC_ATTR) and obj.__module__ == module.__name__
    }


def documentation_problems(spec: Any) -> list[str]:
    """What the docstring of hook spec ``spec`` fails to document (empty when all is well)."""
    name = spec.__name__
    options = getattr(spec, SPEC_ATTR)
    doc = inspect.getdoc(spec)
    if not doc or not doc.strip():
        return [f"{name}: no docstring"]
    problems = []
    parameters = list(inspect.signature(spec).parameters)
    for parameter in parameters:
        if not re.search(rf":param\s+{re.escape(parameter)}\s*:", doc):
            problems.append(f"{name}: parameter {parameter!r} not documented (:param)")
    for documented in _PARAM.findall(doc):
        if documented not in parameters:
            problems.append(f"{name}: documents {documented!r}, which is not a parameter")
    if not re.search(r":returns?:", doc):
        problems.append(f"{name}: return not documented (:return:)")
    says_not_firstresult = bool(_NOT_FIRSTRESULT.search(doc))
    says_firstresult = bool(_FIRSTRESULT.search(_NOT_FIRSTRESULT.sub("", doc)))
    if options.get("firstresult"):
        if says_not_firstresult or not says_firstresult:
            problems.append(f"{name}: is firstresult, the docstring must say 'firstresult'")
    elif not says_not_firstresult or says_firstresult:
        problems.append(f"{name}: is not firstresult, the docstring must say 'Not firstresult'")
    if options.get("historic") and not _HISTORIC.search(doc):
        problems.append(f"{name}: is historic, the docstring must say so")
    return problems


ALL_SPECS = {name: spec for module in SPEC_MODULES for name, spec in hookspecs_of(module).items()}


# --------------------------------------------------------------------------- the specs


def test_the_spec_modules_define_the_expected_hooks() -> None:
    host_names = set(hookspecs_of(host_specs))
    assert {
        "opencrm_add_hookspecs",
        "opencrm_plugin_setup",
        "opencrm_admin_menu",
        "opencrm_routes",
        "opencrm_identity_step",
        "opencrm_deposit",
        "opencrm_dossier_access",
        "opencrm_mail_templates",
        "opencrm_scheduled_tasks",
    } <= host_names
    assert all(name.startswith("opencrm_") for name in host_names)
    extension_names = set(hookspecs_of(horscompte_specs))
    assert extension_names, "no extension hook found"
    assert all(name.startswith("horscompte_") for name in extension_names)
    assert getattr(host_specs.opencrm_add_hookspecs, SPEC_ATTR)["historic"] is True


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_hookspec_is_documented(name: str) -> None:
    assert documentation_problems(ALL_SPECS[name]) == []


_README_ROW = re.compile(r"^\|\s*`(?P<name>\w+)\((?P<args>[^)]*)\)`\s*\|\s*(?P<first>[^|]*)\|")


def readme_hook_reference() -> str:
    """The ``## Hook reference`` section of README.md (up to the next ``## `` heading)."""
    assert README.is_file(), f"{README} is missing: the hook reference can't be checked"
    text = README.read_text("utf-8")
    match = re.search(r"^## Hook reference\s*$(?P<body>.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "README.md has no '## Hook reference' section"
    return match.group("body")


def test_readme_hook_reference_names_every_hook() -> None:
    section = readme_hook_reference()
    missing = [name for name in sorted(ALL_SPECS) if not re.search(rf"\b{name}\b", section)]
    assert missing == [], f"hooks missing from the README hook reference: {missing}"


def test_readme_hook_table_rows_match_the_specs() -> None:
    """Rows ``| `hook(args)` | yes/no ... |`` give the spec's arguments and firstresult."""
    rows = [m for line in readme_hook_reference().splitlines() if (m := _README_ROW.match(line))]
    assert rows, "no '| `hook(args)` | firstresult | ...' row in the README hook reference"
    for row in rows:
        name = row["name"]
        assert name in ALL_SPECS, f"README documents {name!r}, which is not a hook spec"
        spec = ALL_SPECS[name]
        args = [arg.strip() for arg in row["args"].split(",") if arg.strip()]
        assert args == list(inspect.signature(spec).parameters), f"README arguments of {name}"
        first = row["first"].strip().lower()
        assert first.startswith(("yes", "no")), f"{name}: firstresult column {first!r}"
        assert first.startswith("yes") == bool(getattr(spec, SPEC_ATTR)["firstresult"]), name
        if getattr(spec, SPEC_ATTR)["historic"]:
            assert "historic" in first, f"{name} is historic, the README row must say so"


# --------------------------------------------------------------------------- the checker itself

_meta_spec = pluggy.HookspecMarker(PROJECT)


def _undocumented_module() -> types.ModuleType:
    module = types.ModuleType("fake_undocumented_specs")

    @_meta_spec
    def fake_no_docstring(host):  # type: ignore[no-untyped-def]
        pass

    @_meta_spec
    def fake_missing_param(host, dossier):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :return: nothing.

        Not firstresult.
        """

    @_meta_spec
    def fake_missing_return(host):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.

        Not firstresult.
        """

    @_meta_spec(firstresult=True)
    def fake_firstresult_says_not(host):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :return: a value.

        Not firstresult.
        """

    @_meta_spec
    def fake_silent_on_firstresult(host):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :return: nothing.
        """

    @_meta_spec
    def fake_claims_firstresult(host):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :return: nothing.

        firstresult: the first answer wins.
        """

    @_meta_spec(historic=True)
    def fake_historic_unsaid(host):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :return: nothing.

        Not firstresult.
        """

    @_meta_spec
    def fake_stale_param(host):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :param request: renamed away long ago.
        :return: nothing.

        Not firstresult.
        """

    @_meta_spec(firstresult=True, historic=False)
    def fake_good(host, dossier):  # type: ignore[no-untyped-def]
        """Something.

        :param host: the host.
        :param dossier: the dossier.
        :return: a value, or None.

        firstresult: the first non-None answer wins.
        """

    def not_a_spec(host):  # type: ignore[no-untyped-def]
        pass

    for function in (
        fake_no_docstring,
        fake_missing_param,
        fake_missing_return,
        fake_firstresult_says_not,
        fake_silent_on_firstresult,
        fake_claims_firstresult,
        fake_historic_unsaid,
        fake_stale_param,
        fake_good,
        not_a_spec,
    ):
        function.__module__ = module.__name__
        setattr(module, function.__name__, function)
    return module


def test_checker_flags_undocumented_hookspecs() -> None:
    specs = hookspecs_of(_undocumented_module())
    assert "not_a_spec" not in specs
    problems = {name: documentation_problems(spec) for name, spec in specs.items()}
    assert problems.pop("fake_good") == []
    expected_fragment = {
        "fake_no_docstring": "no docstring",
        "fake_missing_param": "'dossier' not documented",
        "fake_missing_return": "return not documented",
        "fake_firstresult_says_not": "must say 'firstresult'",
        "fake_silent_on_firstresult": "must say 'Not firstresult'",
        "fake_claims_firstresult": "must say 'Not firstresult'",
        "fake_historic_unsaid": "is historic",
        "fake_stale_param": "'request', which is not a parameter",
    }
    assert set(problems) == set(expected_fragment)
    for name, fragment in expected_fragment.items():
        assert len(problems[name]) == 1, problems[name]
        assert fragment in problems[name][0], problems[name]


# --------------------------------------------------------------------------- the real plugin


def _plugin_manager_with_plugin() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(host_specs)
    pm.hook.opencrm_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    pm.register(plugin_module, name="horscompte")
    return pm


def _hookimpls_of_plugin() -> dict[str, str]:
    """Hook implementations of the plugin module: attribute name -> hook name."""
    impls = {}
    for name, obj in vars(plugin_module).items():
        options = getattr(obj, IMPL_ATTR, None)
        if options is not None and inspect.isfunction(obj):
            impls[name] = options.get("specname") or name
    return impls


def test_plugin_registers_and_check_pending_passes() -> None:
    pm = _plugin_manager_with_plugin()
    pm.check_pending()
    assert pm.get_plugin("horscompte") is plugin_module
    assert unknown_hooks(pm, plugin_module) == []
    # the plugin's opencrm_add_hookspecs ran (historic call): its extension specs are there
    for name in hookspecs_of(horscompte_specs):
        assert getattr(pm.hook, name).has_spec(), name


def test_every_hookimpl_of_the_plugin_has_a_spec() -> None:
    impls = _hookimpls_of_plugin()
    assert "opencrm_add_hookspecs" in impls.values()
    assert "opencrm_deposit" in impls.values()
    unspecified = sorted(hook for hook in impls.values() if hook not in ALL_SPECS)
    assert unspecified == [], f"hookimpls without a spec: {unspecified}"
    pm = _plugin_manager_with_plugin()
    for attribute, hook in impls.items():
        caller = getattr(pm.hook, hook)
        assert caller.has_spec(), hook
        assert any(
            impl.plugin is plugin_module and impl.function is getattr(plugin_module, attribute)
            for impl in caller.get_hookimpls()
        ), hook
        spec_args = set(inspect.signature(ALL_SPECS[hook]).parameters)
        impl_args = set(inspect.signature(getattr(plugin_module, attribute)).parameters)
        assert impl_args <= spec_args, f"{hook}: {impl_args - spec_args} not in the spec"


# --------------------------------------------------------------------------- the guide

_PYTHON_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```$", re.M | re.S)


def guide_text() -> str:
    assert GUIDE.is_file(), f"{GUIDE} is missing: the integrator's guide can't be checked"
    return GUIDE.read_text("utf-8")


def guide_hook_sections() -> dict[str, str]:
    """``#### hook_name`` sections of the guide's hook reference, by hook name."""
    reference = guide_text().partition("\n## Hook reference\n")[2]
    assert reference, "docs/integrating.md has no '## Hook reference' section"
    parts = re.split(r"^#### (\w+)\s*$", reference, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def run_example(code: str, name: str) -> types.ModuleType:
    """Execute a guide example as a module of its own."""
    module = types.ModuleType(f"guide_example_{name}")
    exec(compile(code, f"docs/integrating.md ({name})", "exec"), module.__dict__)
    return module


def test_the_guide_gives_every_hook_a_section_with_an_example() -> None:
    sections = guide_hook_sections()
    assert sorted(sections) == sorted(ALL_SPECS)
    for name, section in sections.items():
        spec = ALL_SPECS[name]
        signature = f"`{name}({', '.join(inspect.signature(spec).parameters)})`"
        assert signature in section, f"{name}: the section must give {signature}"
        first = "firstresult" if getattr(spec, SPEC_ATTR)["firstresult"] else "not firstresult"
        assert f"`, {first}" in section or f"`, historic, {first}" in section, name
        assert "Called:" in section and "Returns" in section, name
        assert _PYTHON_BLOCK.search(section), f"{name}: no example"


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_the_guide_example_of_each_hook_registers_beside_the_plugin(name: str) -> None:
    section = guide_hook_sections()[name]
    [block] = _PYTHON_BLOCK.findall(section)
    example = run_example(block, name)
    pm = _plugin_manager_with_plugin()
    pm.register(example, name="example")
    pm.check_pending()
    assert unknown_hooks(pm, example) == []
    assert any(impl.plugin is example for impl in getattr(pm.hook, name).get_hookimpls())


def test_every_other_guide_example_runs() -> None:
    reference_start = guide_text().index("\n## Hook reference\n")
    blocks = [
        match["code"]
        for match in _PYTHON_BLOCK.finditer(guide_text())
        if match.start() < reference_start
    ]
    assert len(blocks) >= 4, "the guide's setup, register_plugin, routes and db examples"
    for index, block in enumerate(blocks):
        run_example(block, f"block{index}")
