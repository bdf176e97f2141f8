"""The ``opencrm-horscompte`` command: sample codes, strength, errors, demo launcher."""

from __future__ import annotations

import importlib.abc
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from opencrm_horscompte.cli import main
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.tracking.codes import AMBIGUOUS, CodePolicy, normalize_tracking_code

DEMO_MODULE = "opencrm_horscompte.host_kit.refhost.demo"


def test_sample_uses_the_default_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codes", "sample", "--count", "25"]) == 0
    lines = capsys.readouterr().out.splitlines()
    policy = CodePolicy.from_settings(Settings.defaults())
    assert len(lines) == 25
    for code in lines:
        assert len(code) == 12
        assert set(code) <= set(policy.alphabet)
        assert normalize_tracking_code(code, policy) == code


def test_sample_follows_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["codes", "sample", "--length", "16", "--no-uppercase", "--no-lowercase"]
    assert main([*argv, "--no-special", "--no-avoid-ambiguous", "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(len(code) == 16 and code.isdigit() for code in lines)


def test_sample_avoids_ambiguous_characters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codes", "sample", "--avoid-ambiguous", "--count", "200"]) == 0
    assert not set(capsys.readouterr().out) & AMBIGUOUS


def test_strength_prints_bits_then_a_french_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codes", "strength"]) == 0
    bits, summary = capsys.readouterr().out.splitlines()
    assert bits == "65.0 bits"
    assert summary.startswith("Très robuste")


def test_strength_of_a_weak_policy(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["codes", "strength", "--length", "8", "--no-uppercase", "--no-lowercase"]
    assert main([*argv, "--no-special"]) == 0
    bits, summary = capsys.readouterr().out.splitlines()
    assert bits == "18.6 bits"
    assert summary.startswith("Faible")


POLICY_ERRORS = [
    (["--length", "7"], "entre 8 et 16"),
    (["--length", "17"], "entre 8 et 16"),
    (["--no-digits", "--no-uppercase", "--no-lowercase", "--no-special"], "au moins un"),
    (["--length", "abc"], "--length"),
]
INVALID_COMMANDS = [
    *(
        (["codes", command, *options], message)
        for command in ("sample", "strength")
        for options, message in POLICY_ERRORS
    ),
    (["codes", "sample", "--count", "0"], "--count"),
    (["codes", "sample", "--count", "100001"], "--count"),
    (["codes", "sample", "--count", "2.5"], "--count"),
]


@pytest.mark.parametrize(("argv", "message"), INVALID_COMMANDS)
def test_invalid_options_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("opencrm-horscompte: error: ")
    assert message in lines[0]


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codes", "sample", "--help"]) == 0
    assert "--no-avoid-ambiguous" in capsys.readouterr().out


def test_demo_calls_run_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType(DEMO_MODULE)
    fake.run_demo = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, DEMO_MODULE, fake)
    assert main(["demo"]) == 0
    assert main(["demo", "--port", "9000", "--data-dir", "/tmp/x"]) == 0
    assert calls == [
        {"port": 8765, "data_dir": Path("./demo-data")},
        {"port": 9000, "data_dir": Path("/tmp/x")},
    ]


class _NoFlask(importlib.abc.MetaPathFinder):
    """Importing the demo module fails as it would without the [demo] extra."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == DEMO_MODULE:
            raise ModuleNotFoundError("No module named 'flask'", name="flask")


def test_demo_without_flask_prints_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, DEMO_MODULE, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoFlask(), *sys.meta_path])
    assert main(["demo"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "opencrm-horscompte[demo]" in lines[0]


def test_demo_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def test_installed_script() -> None:
    script = shutil.which("opencrm-horscompte", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is not installed next to the interpreter"
    result = subprocess.run(
        [script, "codes", "sample", "--count", "3"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all(len(code) == 12 for code in lines)
