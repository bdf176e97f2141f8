"""The wheel works on its own: build it, install it in a fresh virtualenv, use it from there.

DESIGN.md section 7: hookspecs/ and templates/ are mapped into the package by
``[tool.setuptools.package-dir]`` and ``opencrm_horscompte/plugin.toml`` is a symlink listed
in package-data; an editable install hides mistakes in that recipe, so this test builds the
wheel (with build isolation, as a user's ``pip install`` would), installs it with its
dependencies from the package index into a new virtualenv, and imports it from a neutral
directory, where the source tree is not importable.

The build runs on a copy of the source tree (symlinks kept), so that it neither writes
``build/`` into the checkout nor picks up stale files a previous build left there.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path
from typing import cast

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "demo-data",
    "artifacts",
)
TIMEOUT = 600


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run quietly; on failure, fail the test with the command's output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
        cwd=cwd,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the source tree: the wheel is built from it and compared with it (others
    may be editing the checkout meanwhile)."""
    source = tmp_path_factory.mktemp("wheel-build") / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=COPY_IGNORE)
    return source


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    outdir = source.parent / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(source)])
    wheels = list(outdir.glob("opencrm_horscompte-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


# --------------------------------------------------------------------------- wheel contents


def test_wheel_ships_the_manifest_as_a_real_file(wheel: Path, source: Path) -> None:
    assert (source / "opencrm_horscompte" / "plugin.toml").is_symlink()  # the copy kept it
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("opencrm_horscompte/plugin.toml")
        mode = info.external_attr >> 16
        assert not stat.S_ISLNK(mode), "plugin.toml is stored as a symlink in the wheel"
        shipped = archive.read(info).decode("utf-8")
    assert shipped == (source / "plugin.toml").read_text("utf-8")
    assert tomllib.loads(shipped)["name"] == "horscompte"


def test_wheel_ships_the_hookspecs_and_templates_packages(
    wheel_names: set[str], source: Path
) -> None:
    for module in sorted((source / "hookspecs").glob("*.py")):
        assert f"opencrm_horscompte/hookspecs/{module.name}" in wheel_names
    assert "opencrm_horscompte/hookspecs/__init__.py" in wheel_names
    assert "opencrm_horscompte/templates/__init__.py" in wheel_names
    templates = [
        path
        for path in (source / "templates").rglob("*")
        if path.is_file() and path.suffix != ".py"
    ]
    assert templates
    for path in templates:
        name = "opencrm_horscompte/templates/" + path.relative_to(source / "templates").as_posix()
        assert name in wheel_names, f"template missing from the wheel: {name}"
    assert "opencrm_horscompte/templates/horscompte/receipt.html" in wheel_names
    assert "opencrm_horscompte/py.typed" in wheel_names


def test_wheel_ships_the_reference_host_templates_and_static(
    wheel_names: set[str], source: Path
) -> None:
    package = source / "opencrm_horscompte"
    refhost = package / "host_kit" / "refhost"
    for folder in ("templates", "static"):
        files = [path for path in (refhost / folder).rglob("*") if path.is_file()]
        assert files, folder
        for path in files:
            name = "opencrm_horscompte/" + path.relative_to(package).as_posix()
            assert name in wheel_names, f"reference host file missing from the wheel: {name}"
    assert "opencrm_horscompte/host_kit/refhost/templates/opencrm/layout.html" in wheel_names


def test_wheel_ships_the_migrations(wheel_names: set[str], source: Path) -> None:
    package = source / "opencrm_horscompte"
    for folder in (package / "migrations", package / "host_kit" / "refhost" / "migrations"):
        files = [path for path in folder.rglob("*") if path.suffix in {".py", ".mako"}]
        assert any(path.parent.name == "versions" for path in files), folder
        for path in files:
            name = "opencrm_horscompte/" + path.relative_to(package).as_posix()
            assert name in wheel_names, f"migration file missing from the wheel: {name}"
    assert (
        "opencrm_horscompte/migrations/versions/0001_initial_schema_release_0_1.py" in wheel_names
    )


def test_wheel_ships_every_module_the_entry_point_and_no_tests(
    wheel: Path, wheel_names: set[str], source: Path
) -> None:
    package = source / "opencrm_horscompte"
    for module in sorted(package.rglob("*.py")):  # a subpackage missing from `packages`?
        name = "opencrm_horscompte/" + module.relative_to(package).as_posix()
        assert name in wheel_names, f"module missing from the wheel: {name}"
    with zipfile.ZipFile(wheel) as archive:
        dist_info = next(n.split("/")[0] for n in wheel_names if n.endswith(".dist-info/WHEEL"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    assert "[opencrm.plugins]" in entry_points
    assert "horscompte = opencrm_horscompte.plugin" in entry_points
    top_levels = {name.split("/")[0] for name in wheel_names}
    assert top_levels == {"opencrm_horscompte", dist_info}, top_levels


# --------------------------------------------------------------------------- installed and used

CHECK_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from importlib import metadata, resources
    from pathlib import Path

    import jinja2
    import pluggy

    source_root = Path(sys.argv[1]).resolve()
    report = {}

    (entry_point,) = metadata.entry_points(group="opencrm.plugins", name="horscompte")
    plugin = entry_point.load()
    report["entry_point_value"] = entry_point.value
    report["dist"] = [entry_point.dist.name, entry_point.dist.version]

    import opencrm_horscompte
    from opencrm_horscompte.hookspecs import horscompte as extension_specs
    from opencrm_horscompte.hookspecs import host as host_specs

    pm = pluggy.PluginManager("opencrm")
    pm.add_hookspecs(host_specs)
    pm.hook.opencrm_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    pm.register(plugin, name="horscompte")
    pm.check_pending()
    report["extension_spec"] = pm.hook.horscompte_generate_tracking_code.has_spec()
    report["menu"] = [
        [entry.section, entry.label, entry.url]
        for entries in pm.hook.opencrm_admin_menu(host=None, user=None)
        for entry in entries
    ]

    from opencrm_horscompte.host_kit.loader import load_plugins, make_plugin_manager

    records = load_plugins(make_plugin_manager(), host_version="2.6.0")
    report["loader"] = [[r.name, r.registered, r.error, r.dist_name] for r in records]

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("opencrm_horscompte.templates", ""),
        autoescape=jinja2.select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
    )
    environment.install_null_translations(newstyle=True)
    report["receipt"] = environment.get_template("horscompte/receipt.html").render(
        tracking_code="ABCD-<EF>",
        lookup_url="/hors-compte/suivi",
        lookup_address="https://example.org/hors-compte/suivi",
    )
    report["templates"] = sorted(environment.list_templates())

    from opencrm_horscompte.base.manifest import load_manifest

    manifest = load_manifest()
    length = manifest.setting("tracking_code_length")
    report["manifest"] = {
        "name": manifest.name,
        "host_project": manifest.host_project,
        "tracking_code_length": [length.min, length.max, length.default],
    }
    manifest_resource = resources.files("opencrm_horscompte").joinpath("plugin.toml")
    report["manifest_is_symlink"] = Path(str(manifest_resource)).is_symlink()

    report["files"] = {
        "package": opencrm_horscompte.__file__,
        "hookspecs": host_specs.__file__,
        "extension_specs": extension_specs.__file__,
        "plugin": plugin.__file__,
    }
    import tempfile

    from opencrm_horscompte.base.db import make_engine
    from opencrm_horscompte.base.migrations import current_revision, head_revision, upgrade

    with tempfile.TemporaryDirectory() as folder:
        migrated = make_engine(f"sqlite:///{folder}/migrated.sqlite3")
        upgrade(migrated)
        report["migrated_to"] = [current_revision(migrated), head_revision()]
        migrated.dispose()

    report["prefix"] = sys.prefix
    report["source_root"] = str(source_root)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def installed_report(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("wheel-venv")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-input", str(wheel)])
    script = work / "check_installed.py"
    script.write_text(CHECK_SCRIPT, "utf-8")
    # -I: ignore PYTHON* variables and do not put the script's or the cwd's folder on sys.path
    result = _run([str(python), "-I", str(script), str(ROOT)], cwd=work)
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    report["venv"] = str(venv.resolve())
    return report


def test_installed_package_is_imported_from_the_fresh_venv(
    installed_report: dict[str, object],
) -> None:
    venv = Path(str(installed_report["venv"]))
    assert Path(str(installed_report["prefix"])).resolve() == venv
    files = installed_report["files"]
    assert isinstance(files, dict)
    for role, file in files.items():
        path = Path(file).resolve()
        assert path.is_relative_to(venv), f"{role} imported from {path}, not the fresh venv"
        assert not path.is_relative_to(ROOT), f"{role} imported from the source tree: {path}"
    assert installed_report["manifest_is_symlink"] is False


def test_installed_entry_point_registers_with_pluggy(
    installed_report: dict[str, object], source: Path
) -> None:
    assert installed_report["entry_point_value"] == "opencrm_horscompte.plugin"
    version = tomllib.loads((source / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    assert installed_report["dist"] == ["opencrm-horscompte", version]
    assert installed_report["extension_spec"] is True
    menu = cast(list[list[str]], installed_report["menu"])
    assert ["Administration", "Accès sans compte", "/admin/hors-compte"] in menu
    assert installed_report["loader"] == [["horscompte", True, None, "opencrm-horscompte"]]


def test_installed_templates_render(installed_report: dict[str, object]) -> None:
    receipt = str(installed_report["receipt"])
    assert "Votre code de suivi" in receipt
    assert "ABCD-&lt;EF&gt;" in receipt  # autoescaped
    assert 'href="/hors-compte/suivi"' in receipt
    templates = installed_report["templates"]
    assert isinstance(templates, list)
    assert "horscompte/mail/validation.txt" in templates
    assert "opencrm/layout.html" in templates


def test_installed_manifest_is_readable(installed_report: dict[str, object]) -> None:
    assert installed_report["manifest"] == {
        "name": "horscompte",
        "host_project": "opencrm",
        "tracking_code_length": [8, 16, 12],
    }


def test_installed_migrations_run(installed_report: dict[str, object]) -> None:
    current, head = cast(list[str | None], installed_report["migrated_to"])
    assert current == head and current is not None
