"""The served host's configuration (``demo``, ``serve``, ``worker``): every mistake stops the
start with one line that names the variable or the file, before anything runs. Before,
``serve`` with a bad mail URL answered citizens while its worker crashed in a loop and no
mail ever left, and the rest were tracebacks or silent defaults."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from opencrm_horscompte.cli import main
from opencrm_horscompte.host_kit.refhost import environment
from opencrm_horscompte.host_kit.refhost.serve import Supervised

VARIABLES = (
    "HORSCOMPTE_DATABASE_URL",
    "HORSCOMPTE_SMTP_URL",
    "HORSCOMPTE_PUBLIC_URL",
    "HORSCOMPTE_TRUSTED_PROXIES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("opencrm-horscompte: error: ")
    assert "ready" not in captured.out
    return line


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("HORSCOMPTE_SMTP_URL", "smpt://127.0.0.1:25", "HORSCOMPTE_SMTP_URL: unsupported mail"),
        ("HORSCOMPTE_SMTP_URL", "smtp://", "HORSCOMPTE_SMTP_URL: mail URL 'smtp://' has no host"),
        ("HORSCOMPTE_SMTP_URL", "127.0.0.1:25", "HORSCOMPTE_SMTP_URL: unsupported mail URL"),
        ("HORSCOMPTE_SMTP_URL", "smtp://127.0.0.1:notaport", "HORSCOMPTE_SMTP_URL: invalid port"),
        ("HORSCOMPTE_SMTP_URL", " ", "HORSCOMPTE_SMTP_URL is set but empty"),
        ("HORSCOMPTE_DATABASE_URL", "nonsense://", "HORSCOMPTE_DATABASE_URL: base de données"),
        ("HORSCOMPTE_DATABASE_URL", "not a url", "HORSCOMPTE_DATABASE_URL: not a database URL"),
        ("HORSCOMPTE_DATABASE_URL", "mysql://root@127.0.0.1/x", "non prise en charge : mysql"),
        ("HORSCOMPTE_DATABASE_URL", "", "HORSCOMPTE_DATABASE_URL is set but empty"),
        ("HORSCOMPTE_TRUSTED_PROXIES", "abc", "HORSCOMPTE_TRUSTED_PROXIES must be a number"),
        ("HORSCOMPTE_TRUSTED_PROXIES", "-1", "HORSCOMPTE_TRUSTED_PROXIES must be between 0"),
        ("HORSCOMPTE_PUBLIC_URL", "crm.ville.fr", "HORSCOMPTE_PUBLIC_URL must be http://"),
        ("HORSCOMPTE_PUBLIC_URL", "ftp://crm.ville.fr", "HORSCOMPTE_PUBLIC_URL must be http://"),
        ("HORSCOMPTE_PUBLIC_URL", "https://crm.ville.fr:x", "HORSCOMPTE_PUBLIC_URL: invalid port"),
        ("HORSCOMPTE_PUBLIC_URL", "https://crm.ville.fr/?a=1", "the site's address only"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker", "demo"])
def test_a_bad_variable_stops_the_start_in_one_line(
    command: str,
    name: str,
    value: str,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    data_dir = tmp_path / "data"
    assert main([command, "--data-dir", str(data_dir), "--port", "8799"]) == 2
    assert reason in one_error_line(capsys)
    assert not (data_dir / "crm.sqlite3").exists()  # nothing migrated, nothing seeded


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "a JSON object is expected"),
        ('{"admin_password": "x", "citizen_password": "y"}', "'secret_keys' must be a list"),
        ('{"secret_keys": [], "admin_password": "x", "citizen_password": "y"}', "at least one"),
        ('{"secret_keys": ["zz"], "admin_password": "x", "citizen_password": "y"}', "hexadecimal"),
        ('{"secret_keys": [""], "admin_password": "x", "citizen_password": "y"}', "hexadecimal"),
        ('{"secret_keys": ["00ff"], "citizen_password": "y"}', "'admin_password' is missing"),
    ],
)
def test_a_bad_secrets_file_is_named_in_one_line(
    content: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secrets.json").write_text(content)
    assert main(["worker", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'secrets.json'}: " in line and reason in line


def test_a_data_dir_that_cannot_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["worker", "--data-dir", str(blocker / "data")]) == 2
    assert f"data dir {blocker / 'data'}: " in one_error_line(capsys)


def test_an_unreachable_database_at_start_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HORSCOMPTE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    assert main(["serve", "--data-dir", str(tmp_path), "--workers", "1"]) == 1
    assert "error: database: OperationalError: " in one_error_line(capsys)


def test_the_public_url_is_where_links_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HORSCOMPTE_PUBLIC_URL", "https://crm.ville.fr/")
    config, _ = environment.host_config(tmp_path, 8765)
    assert config.base_url == "https://crm.ville.fr"
    monkeypatch.delenv("HORSCOMPTE_PUBLIC_URL")
    config, _ = environment.host_config(tmp_path, 8765)
    assert config.base_url == "http://127.0.0.1:8765"


def test_secrets_are_made_once_readable_by_their_owner_only(tmp_path: Path) -> None:
    made = environment.load_or_create_secrets(tmp_path)
    assert os.stat(tmp_path / "secrets.json").st_mode & 0o777 == 0o600
    assert environment.load_or_create_secrets(tmp_path) == made
    assert json.loads((tmp_path / "secrets.json").read_text()) == made


def test_the_background_worker_has_a_session_of_its_own() -> None:
    """Ctrl+C in the terminal signals the foreground group: the master, not the worker,
    which the master stops once gunicorn is done (the worker used to exit first, and be
    restarted in the middle of the shutdown)."""
    supervised = Supervised([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert os.getpgid(supervised.process.pid) != os.getpgid(0)
        os.killpg(os.getpgid(0), 0)  # the test's own group is still signalable
    finally:
        supervised.stop(timeout=10)
    assert supervised.process.returncode == -signal.SIGTERM
    assert supervised.restarts == 0
