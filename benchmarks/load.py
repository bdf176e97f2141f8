"""Load test of the served reference host on PostgreSQL: 1, 2 and 4 web processes.

    python benchmarks/load.py            # the full run (about a minute per N)
    python benchmarks/load.py --quick    # a short run (well under 5 minutes), for the tests

For each N it creates a PostgreSQL database, starts ``opencrm-horscompte serve --workers N``
(gunicorn, plus the background worker that delivers mail) and a loopback SMTP server, then
drives it from several client processes over loopback HTTP. Each client repeats a bounded
scenario: deposit a dossier without an account (identity screen, form, receipt), look it up
(email + tracking code), wait for the validation mail, verify the code and open the dossier.
Every client request carries its own ``X-Forwarded-For`` address (the host is started with
``HORSCOMPTE_TRUSTED_PROXIES=1``), as the citizens behind a reverse proxy would.

Reported per N: request latency p50 / p95, requests per second, and the machine's CPU busy
fraction during the traffic (all cores: 1.0 means every core busy, so a 2-core machine's limit
shows), the hypervisor's steal apart (``cpu_stolen``, in ``details``: the fraction it ran other
machines; busy + stolen near 1.0 is a saturated machine).
Checked afterwards: every deposited dossier has exactly one tracking code, no code is
duplicated, every mail queued was delivered exactly once (by Message-ID). Any unexpected
status, failed check or missing mail counts as an error. The last line printed is one JSON
object: ``{"errors": 0, "workers": {"1": {"p50_ms": ..., "p95_ms": ...,
"requests_per_s": ..., "cpu_busy": ...}, ...}, ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import http.client
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from benchlib import cpu_times, temporary_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from opencrm_horscompte.base.db import make_engine  # noqa: E402

DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SLUG = "signalement-voirie"
HANG_GUARD = 180.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_TOKEN = re.compile(r'name="token" value="([^"]+)"')
_TRACKING = re.compile(r'data-testid="tracking-code"><strong>([^<]+)</strong>')
_CODE_LINE = re.compile(r"^\s*(\d{6,14})\s*$", re.MULTILINE)


# --------------------------------------------------------------------------- SMTP


class MailDrop:
    """aiosmtpd handler: each accepted mail is written to ``folder`` (clients read it) and
    its Message-ID counted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.message_ids: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.message_ids[str(message["Message-ID"])] += 1
            number = sum(self.message_ids.values())
        recipient = envelope.rcpt_tos[0]
        path = self.folder / f"{recipient}.{number}.eml"
        path.with_suffix(".tmp").write_bytes(envelope.content)
        path.with_suffix(".tmp").rename(path)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------- HTTP client


class Client:
    """One citizen's browser: a keep-alive connection, the session cookie, a forwarded
    address; records (kind, milliseconds, ok) for every request."""

    def __init__(self, port: int, address: str) -> None:
        self.port = port
        self.address = address
        self.cookie = ""
        self.samples: list[tuple[str, float, bool]] = []
        self.errors: list[str] = []
        self._connection: http.client.HTTPConnection | None = None

    def _request(
        self, kind: str, method: str, path: str, form: dict[str, str] | None, expect: int
    ) -> tuple[int, dict[str, str], str]:
        from urllib.parse import urlencode

        body = urlencode(form) if form is not None else None
        headers = {"X-Forwarded-For": self.address, "Connection": "keep-alive"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            headers["Cookie"] = self.cookie
        started = time.perf_counter()
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                page = response.read().decode("utf-8", "replace")
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        elapsed = (time.perf_counter() - started) * 1000
        ok = response.status == expect
        self.samples.append((kind, elapsed, ok))
        if not ok:
            self.errors.append(f"{kind} {method} {path}: {response.status} (expected {expect})")
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("session="):
                self.cookie = value.split(";", 1)[0]
        return response.status, {k.lower(): v for k, v in response.getheaders()}, page

    def get(self, kind: str, path: str, expect: int = 200) -> str:
        return self._request(kind, "GET", path, None, expect)[2]

    def post(
        self, kind: str, path: str, form: dict[str, str], csrf_from: str, expect: int
    ) -> tuple[dict[str, str], str]:
        match = _CSRF.search(csrf_from)
        token = match.group(1) if match else ""
        _, headers, page = self._request(kind, "POST", path, {**form, "csrf_token": token}, expect)
        return headers, page

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _wait_for_code(mail_dir: Path, recipient: str, seen: int) -> str | None:
    """The validation code of the newest mail to ``recipient`` (after ``seen`` mails)."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        found = sorted(mail_dir.glob(f"{recipient}.*.eml"), key=lambda p: int(p.suffixes[-2][1:]))
        for path in found[seen:]:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            part = message.get_body(preferencelist=("plain",))
            match = _CODE_LINE.search(str(part.get_content()) if part else "")
            if match:
                return match.group(1)
        time.sleep(0.05)
    return None


def scenario(client: Client, mail_dir: Path, tag: str) -> None:
    """Deposit, look up, verify: the citizen's whole round trip."""
    recipient = f"usager.{tag}@exemple.fr"
    start = f"/demarches/{SLUG}/nouveau"
    page = client.get("identity", start)
    identity = {"last_name": "Charge", "first_name": "Test", "email": recipient}
    headers, _ = client.post("identity", start, identity, page, 303)
    form_url = urlsplit(headers.get("location", "")).path
    if not form_url.startswith("/brouillons/"):
        client.errors.append(f"identity step went to {form_url!r}")
        return
    page = client.get("form", form_url)
    answers = {"subject": "Nid-de-poule", "message": f"Rue {tag}.", "action": "deposit"}
    headers, _ = client.post("deposit", form_url, answers, page, 303)
    receipt = client.get("receipt", urlsplit(headers.get("location", "")).path)
    tracking = _TRACKING.search(receipt)
    if not tracking:
        client.errors.append("no tracking code on the receipt")
        return
    page = client.get("lookup", "/hors-compte/suivi")
    typed = {"email": recipient, "tracking_code": tracking.group(1)}
    client.post("lookup", "/hors-compte/suivi", typed, page, 303)  # to the code entry page
    page = client.get("code page", "/hors-compte/validation")
    token = _TOKEN.search(page)
    code = _wait_for_code(mail_dir, recipient, 0)
    if not token or not code:
        client.errors.append(f"no validation {'mail' if token else 'page'} for {recipient}")
        return
    verify = {"token": token.group(1), "code": code, "action": "verify"}
    headers, _ = client.post("verify", "/hors-compte/validation", verify, page, 303)
    client.get("dossier", urlsplit(headers.get("location", "")).path)


def client_process(port: int, mail_dir: str, index: int, rounds: int, results: Any) -> None:
    samples: list[tuple[str, float, bool]] = []
    errors: list[str] = []
    for round_ in range(rounds):
        address = f"10.{index}.{round_ // 250}.{round_ % 250 + 1}"
        client = Client(port, address)
        try:
            scenario(client, Path(mail_dir), f"c{index}r{round_}{secrets.token_hex(2)}")
        except Exception as error:  # a refused connection, a timeout: an error, reported
            client.errors.append(f"{type(error).__name__}: {error}")
        finally:
            client.close()
        samples.extend(client.samples)
        errors.extend(client.errors)
    results.put((samples, errors))


# --------------------------------------------------------------------------- one N


def _wait_ready(port: int, server: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serve exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the served host never answered")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _stop(server: subprocess.Popen[Any]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(HANG_GUARD)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run_one(workers: int, pg_admin: str, clients: int, rounds: int, log: Any) -> dict[str, Any]:
    """One N. What it creates or starts is removed or stopped at the end in reverse order
    (the served host, the SMTP server, the work directory, the database), also when a step
    fails half-way."""
    with contextlib.ExitStack() as cleanup:
        url = cleanup.enter_context(temporary_database(pg_admin, "horscompte_load"))
        work = Path(tempfile.mkdtemp(prefix="horscompte-load-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        mail_dir = work / "mail"
        mail_dir.mkdir()
        drop = MailDrop(mail_dir)
        smtp_port, http_port = free_port(), free_port()
        smtp = Controller(drop, hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        cleanup.callback(smtp.stop)
        environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HORSCOMPTE_DATABASE_URL": url,
            "HORSCOMPTE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "HORSCOMPTE_TRUSTED_PROXIES": "1",
        }
        command = [sys.executable, "-m", "opencrm_horscompte.cli", "serve"]
        command += ["--workers", str(workers), "--port", str(http_port), "--data-dir", str(work)]
        server = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        cleanup.callback(_stop, server)
        _wait_ready(http_port, server)
        figures, errors = _drive(http_port, mail_dir, clients, rounds)
        errors += _check(url, drop)
        figures["errors"] = len(errors)
        for error in errors[:10]:
            log(f"  error: {error}")
        return figures


def _drive(
    http_port: int, mail_dir: Path, clients: int, rounds: int
) -> tuple[dict[str, Any], list[str]]:
    """``clients`` processes play their scenario ``rounds`` times: the figures, the errors."""
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    processes = [
        context.Process(
            target=client_process, args=(http_port, str(mail_dir), index, rounds, results)
        )
        for index in range(clients)
    ]
    times_before = cpu_times()
    started = time.perf_counter()
    try:
        for process in processes:
            process.start()
        collected = [results.get(timeout=HANG_GUARD * rounds) for _ in processes]
        seconds = time.perf_counter() - started
        spent = cpu_times() - times_before
        for process in processes:
            process.join(HANG_GUARD)
    finally:  # a client left running (a timeout, an error) would hold the script's exit
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(HANG_GUARD)
    samples = [sample for part, _ in collected for sample in part]
    errors = [error for _, part in collected for error in part]
    latencies = [ms for _, ms, _ in samples]
    figures = {
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(_percentile(latencies, 0.95), 1),
        "requests_per_s": round(len(samples) / seconds, 1) if seconds else None,
        "cpu_busy": round(spent.busy / spent.total, 2) if spent.total > 0 else None,
        # the hypervisor's steal: our cores running other machines
        "cpu_stolen": round(spent.stolen / spent.total, 2) if spent.total > 0 else None,
        "requests": len(samples),
        "scenarios": clients * rounds,
        "seconds": round(seconds, 1),
    }
    return figures, errors


def _check(url: str, drop: MailDrop) -> list[str]:
    """One code per dossier, no duplicate, every mail delivered once (waits for the worker
    to finish delivering, within the hang guard)."""
    problems: list[str] = []
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + HANG_GUARD
        while True:
            with engine.connect() as connection:
                pending = connection.execute(
                    text(
                        "SELECT count(*) FROM host_mail_outbox WHERE sent_at IS NULL "
                        "AND dead_at IS NULL AND dropped_at IS NULL"
                    )
                ).scalar_one()
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        with engine.connect() as connection:
            deposited = connection.execute(
                text("SELECT count(*) FROM host_dossier WHERE status <> 'draft'")
            ).scalar_one()
            codes = connection.execute(
                text("SELECT count(*), count(DISTINCT code) FROM horscompte_tracking_code")
            ).one()
            per_dossier = connection.execute(
                text(
                    "SELECT count(*) FROM host_dossier d LEFT JOIN horscompte_tracking_code t "
                    "ON t.dossier_id = d.id WHERE d.status <> 'draft' AND t.code IS NULL"
                )
            ).scalar_one()
            states = connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), "
                    "count(*) FILTER (WHERE dead_at IS NOT NULL), count(*) FROM host_mail_outbox"
                )
            ).one()
    finally:
        engine.dispose()
    if pending:
        problems.append(f"{pending} mail(s) still pending")
    if codes[0] != deposited or per_dossier:
        problems.append(f"{deposited} dossiers but {codes[0]} codes ({per_dossier} without)")
    if codes[0] != codes[1]:
        problems.append(f"duplicated tracking codes: {codes[0] - codes[1]}")
    sent, dead, _total = states
    if dead:
        problems.append(f"{dead} dead mail(s)")
    with drop.lock:
        delivered = dict(drop.message_ids)
    if len(delivered) != sent or any(count != 1 for count in delivered.values()):
        twice = sum(1 for count in delivered.values() if count > 1)
        problems.append(f"{sent} mails sent, {len(delivered)} received, {twice} more than once")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 5 minutes)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_ADMIN, help="an admin database URL")
    parser.add_argument("--workers", default="1,2,4", help="web process counts to measure")
    args = parser.parse_args(argv)
    clients, rounds = (3, 2) if args.quick else (4, 12)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    for workers in [int(value) for value in args.workers.split(",")]:
        log(f"N={workers}: {clients} client processes x {rounds} scenarios")
        figures = run_one(workers, args.pg_url, clients, rounds, log)
        log(f"  {figures}")
        results[str(workers)] = figures
    report = {
        "errors": sum(figures["errors"] for figures in results.values()),
        "workers": {
            n: {key: figures[key] for key in ("p50_ms", "p95_ms", "requests_per_s", "cpu_busy")}
            for n, figures in results.items()
        },
        "details": results,
        "cores": os.cpu_count(),
        "mode": "quick" if args.quick else "full",
    }
    print(json.dumps(report), flush=True)
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
