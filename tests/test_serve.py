"""``opencrm-horscompte serve``: gunicorn with N web processes and one background worker, on
PostgreSQL, driven over loopback HTTP; SIGTERM stops everything cleanly. And the
``X-Forwarded-For`` switch (``HORSCOMPTE_TRUSTED_PROXIES``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from aiosmtpd.controller import Controller
from conftest import PG_ADMIN_URL, empty_public_schema
from processes import HANG_GUARD_SECONDS
from smtp_faults import wait_for
from sqlalchemy import text

from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.demo import trusted_proxies

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import load  # noqa: E402


def _waiting_on_a_lock(connection: Any) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(connection.execute(text(query)).scalar_one())


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live child processes of ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and state != "Z":
            found.append((int(entry.name), command))
    return found


def _start_serve(
    workers: int, port: int, data_dir: Path, environment: dict[str, str]
) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """``serve`` in a process of its own, its log read into a list by a thread."""
    command = [sys.executable, "-m", "opencrm_horscompte.cli", "serve", "--workers", str(workers)]
    command += ["--port", str(port), "--data-dir", str(data_dir)]
    server = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    stderr = server.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: log.extend(stderr), daemon=True)
    reader.start()
    return server, log, reader


def _worker_pids(pid: int) -> list[int]:
    return [child for child, line in _children(pid) if " worker " in line]


@pytest.fixture
def fresh_pg(pg_database_url: str) -> Iterator[str]:
    empty_public_schema(pg_database_url)
    yield pg_database_url
    empty_public_schema(pg_database_url)


@pytest.mark.postgresql
@pytest.mark.slow
def test_serve_runs_n_web_processes_and_one_worker(fresh_pg: str, tmp_path: Path) -> None:
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    drop = load.MailDrop(mail_dir)
    smtp_port, http_port = load.free_port(), load.free_port()
    smtp = Controller(drop, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HORSCOMPTE_DATABASE_URL": fresh_pg,
        "HORSCOMPTE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "HORSCOMPTE_TRUSTED_PROXIES": "1",
    }
    server, log, reader = _start_serve(2, http_port, tmp_path / "data", environment)
    try:
        load._wait_ready(http_port, server)
        wait_for(lambda: len(_children(server.pid)) == 3)
        children = _children(server.pid)
        workers = [pid for pid, line in children if " worker " in line]
        assert len(workers) == 1, children  # mail and tasks: one process, not one per web worker

        for index in range(3):  # whole round trips: deposit, lookup, mail, verify
            client = load.Client(http_port, f"10.9.0.{index + 1}")
            load.scenario(client, mail_dir, f"serve{index}")
            client.close()
            assert client.errors == [], client.errors
        assert load._check(fresh_pg, drop) == []

        # The background worker killed: the master starts another, and mail goes again.
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: _worker_pids(server.pid) not in ([], workers), HANG_GUARD_SECONDS)
        assert len(_worker_pids(server.pid)) == 1
        client = load.Client(http_port, "10.9.0.9")
        load.scenario(client, mail_dir, "serve-after-kill")  # needs its validation mail
        client.close()
        assert client.errors == [], client.errors
        assert any("background worker exited" in line for line in log)
        children = _children(server.pid)

        # A request in flight when SIGTERM comes finishes: a lookup waits on a table lock
        # held here, the server is told to stop, then the lock is released.
        client = load.Client(http_port, "10.9.1.1")
        page = client.get("lookup", "/hors-compte/suivi")
        answers: list[Any] = []
        blocker = make_engine(fresh_pg)
        with blocker.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("LOCK TABLE horscompte_throttle IN ACCESS EXCLUSIVE MODE"))
            typed = {"email": "personne@exemple.fr", "tracking_code": "ABCD-EFGH-JKLM"}
            thread = threading.Thread(
                target=lambda: answers.append(
                    client.post("lookup", "/hors-compte/suivi", typed, page, 303)
                )
            )
            thread.start()
            wait_for(lambda: _waiting_on_a_lock(connection))
            server.send_signal(signal.SIGTERM)
            # gunicorn took the signal (its workers now finish what they have, then exit)
            wait_for(lambda: any("Handling signal: term" in line for line in log))
            transaction.commit()
        blocker.dispose()
        thread.join(HANG_GUARD_SECONDS)
        assert answers and client.errors == [], client.errors

        assert server.wait(HANG_GUARD_SECONDS) == 0, "".join(log)[-3000:]
        reader.join(HANG_GUARD_SECONDS)
        assert not any(Path(f"/proc/{pid}").exists() for pid, _ in children), children
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        smtp.stop()


# --------------------------------------------------------------------------- X-Forwarded-For


def _address_app(host: Any) -> Any:
    app = create_app(host)
    app.add_url_rule("/_client_addr", "client_addr", lambda: flask.request.remote_addr or "")
    app.config["TESTING"] = True
    return app.test_client()


def test_forwarded_for_is_ignored_by_default(host_factory: Any) -> None:
    client = _address_app(host_factory())
    response = client.get("/_client_addr", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.text == "127.0.0.1"


def test_trusted_proxy_gives_the_client_address(host_factory: Any) -> None:
    client = _address_app(host_factory(trusted_proxies=1))
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}  # a forged first hop
    response = client.get("/_client_addr", headers=forwarded)
    assert response.text == "203.0.113.9"  # what the one trusted proxy saw


@pytest.mark.parametrize(
    ("value", "expected"), [("", 0), ("0", 0), ("1", 1), (" 2 ", 2), ("x", None), ("-1", None)]
)
def test_trusted_proxies_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    monkeypatch.setenv("HORSCOMPTE_TRUSTED_PROXIES", value)
    if expected is None:
        with pytest.raises(ValueError, match="HORSCOMPTE_TRUSTED_PROXIES"):
            trusted_proxies()
    else:
        assert trusted_proxies() == expected


# --------------------------------------------------------------------------- load benchmark


@pytest.mark.postgresql
@pytest.mark.slow
def test_quick_load_benchmark_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--quick", "--pg-url", PG_ADMIN_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # hang guard
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0
    assert set(report["workers"]) == {"1", "2", "4"}
    for figures in report["workers"].values():
        assert set(figures) == {"p50_ms", "p95_ms", "requests_per_s", "cpu_busy"}
        assert all(isinstance(value, int | float) for value in figures.values()), figures


def _load_databases() -> set[str]:
    admin = make_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as connection:
            query = "SELECT datname FROM pg_database WHERE datname LIKE 'horscompte_load_%'"
            return set(connection.execute(text(query)).scalars())
    finally:
        admin.dispose()


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.parametrize("failing", ["start", "answer"])
def test_load_run_cleans_up_whatever_step_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failing: str
) -> None:
    """A failure before the traffic (the served host can't start, or never answers) still
    drops the run's database, stops what was started and removes the work directory."""
    started: list[subprocess.Popen[Any]] = []

    def cannot_start(*_args: Any, **_kwargs: Any) -> subprocess.Popen[Any]:
        raise OSError("cannot start the served host")

    def never_ready(_port: int, server: subprocess.Popen[Any]) -> None:
        started.append(server)
        raise OSError("the served host never answered")

    if failing == "start":
        monkeypatch.setattr(subprocess, "Popen", cannot_start)
    else:
        monkeypatch.setattr(load, "_wait_ready", never_ready)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = _load_databases()
    with pytest.raises(OSError, match="served host"):
        load.run_one(1, PG_ADMIN_URL, clients=1, rounds=1, log=print)
    assert _load_databases() == before
    assert list(tmp_path.iterdir()) == []
    assert all(server.poll() is not None for server in started)  # stopped


def test_the_supervisor_starts_a_dead_worker_again_until_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opencrm_horscompte.host_kit.refhost import serve

    monkeypatch.setattr(serve, "RESTART_FIRST_DELAY", 0.01)
    supervised = serve.Supervised([sys.executable, "-c", "raise SystemExit(3)"])
    wait_for(lambda: supervised.restarts >= 3)  # each exit is followed by a new start
    supervised.stop(timeout=HANG_GUARD_SECONDS)
    stopped_at = supervised.restarts
    assert supervised.process.poll() is not None
    assert not supervised._watcher.is_alive()  # nothing left to start it again
    assert supervised.restarts == stopped_at


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_serve_killed_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL on ``serve`` (the OOM killer, ``kill -9``) left its background worker running
    forever, adopted by init, still sending mail for a server that was gone. It now stops
    once its parent is gone, as gunicorn's web processes do."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HORSCOMPTE_")}
    environment["PYTHONPATH"] = str(ROOT)
    http_port = load.free_port()
    server, log, reader = _start_serve(1, http_port, tmp_path / "data", environment)
    children: list[tuple[int, str]] = []
    try:
        load._wait_ready(http_port, server)
        wait_for(lambda: len(_children(server.pid)) == 2)
        children = _children(server.pid)
        assert len(_worker_pids(server.pid)) == 1, children
        server.kill()
        server.wait()
        wait_for(lambda: not any(_alive(pid) for pid, _ in children))
        reader.join(HANG_GUARD_SECONDS)
        assert any("parent process" in line and "is gone" in line for line in log), log[-20:]
    finally:
        for pid, _ in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if server.poll() is None:
            server.kill()
            server.wait()
