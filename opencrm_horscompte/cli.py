"""Command line: sample tracking codes, show their strength, migrate the plugin's tables
(``db upgrade|current|history``), run the demo host, serve the reference host with several
processes (``serve``) and its background process (``worker``).

``opencrm-horscompte codes sample`` draws codes with the same function the plugin uses, so an
administrator can see what users will receive before changing the settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from opencrm_horscompte.privacy.commands import add_data_commands, run_data_command
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.strength import tracking_strength
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    InvalidPolicy,
    check_policy,
    generate_tracking_code,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from opencrm_horscompte.base.migrations import MigrationSet

PROG = "opencrm-horscompte"
MAX_SAMPLE_COUNT = 100_000
DEFAULT_DEMO_PORT = 8765
DEFAULT_DEMO_DATA_DIR = "./demo-data"
DATABASE_URL_ENV = "HORSCOMPTE_DATABASE_URL"


class _Parser(argparse.ArgumentParser):
    """Errors are one line on stderr and exit status 2, without the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"nombre entier attendu : {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"doit être compris entre {low} et {high}")
        return value

    return parse


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"nombre entier attendu : {text!r}") from None


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    defaults = Settings.defaults()
    parser.add_argument(
        "--length", type=_integer, default=defaults.tracking_code_length, help="code length"
    )
    flags = {
        "digits": defaults.tracking_code_digits,
        "uppercase": defaults.tracking_code_uppercase,
        "lowercase": defaults.tracking_code_lowercase,
        "special": defaults.tracking_code_special,
        "avoid-ambiguous": defaults.tracking_code_avoid_ambiguous,
    }
    for name, default in flags.items():
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default)


Handler = Callable[[argparse.ArgumentParser, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """One ``_add_*`` function per command group; each sets the ``handler`` it runs."""
    parser = _Parser(prog=PROG, description="Tools for the opencrm-horscompte plugin.")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_codes, _add_db, _add_demo, _add_serve, _add_worker, _add_data):
        add(commands)
    return parser


# --------------------------------------------------------------------------- codes


def _add_codes(commands: Any) -> None:
    codes = commands.add_parser("codes", help="tracking codes")
    code_commands = codes.add_subparsers(dest="codes_command", required=True)
    sample = code_commands.add_parser("sample", help="print sample tracking codes")
    _add_policy_options(sample)
    sample.add_argument("--count", type=_bounded_int(1, MAX_SAMPLE_COUNT), default=1)
    sample.set_defaults(handler=_run_codes)
    strength = code_commands.add_parser("strength", help="print the strength of a policy")
    _add_policy_options(strength)
    strength.set_defaults(handler=_run_codes)


def _policy(args: argparse.Namespace) -> CodePolicy:
    policy = CodePolicy(
        length=args.length,
        digits=args.digits,
        uppercase=args.uppercase,
        lowercase=args.lowercase,
        special=args.special,
        avoid_ambiguous=args.avoid_ambiguous,
    )
    check_policy(policy)
    return policy


def _run_codes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        policy = _policy(args)
    except InvalidPolicy as error:
        parser.error(str(error))
    if args.codes_command == "sample":
        return _sample(policy, args.count)
    return _strength(policy)


def _sample(policy: CodePolicy, count: int) -> int:
    sys.stdout.write("".join(generate_tracking_code(policy) + "\n" for _ in range(count)))
    return 0


def _strength(policy: CodePolicy) -> int:
    strength = tracking_strength(policy)
    print(f"{strength.bits:.1f} bits")
    print(strength.summary_fr)
    return 0


# --------------------------------------------------------------------------- db


def _add_db(commands: Any) -> None:
    db = commands.add_parser("db", help="the plugin's database schema (Alembic migrations)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    helps = {
        "upgrade": "bring the schema up to date (safe to repeat; locked on PostgreSQL)",
        "current": "print the revision the database is at",
        "history": "list the revisions shipped, oldest first",
    }
    for name, text in helps.items():
        command = db_commands.add_parser(name, help=text)
        command.add_argument(
            "--database-url",
            default=os.environ.get(DATABASE_URL_ENV),
            help=f"SQLAlchemy URL (default: ${DATABASE_URL_ENV})"
            + ("; if given, marks the revision the database is at" if name == "history" else ""),
        )
        command.add_argument(
            "--refhost",
            action="store_true",
            help="the reference host's own tables (host_*) instead of the plugin's",
        )
        command.set_defaults(handler=_run_db)


def _run_db(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from opencrm_horscompte.base import migrations
    from opencrm_horscompte.base.db import database_error_line, engine_for_typed_url

    chosen = migrations.PLUGIN_MIGRATIONS
    if args.refhost:
        from opencrm_horscompte.host_kit.refhost.migrate import HOST_MIGRATIONS

        chosen = HOST_MIGRATIONS
    if not args.database_url and args.db_command != "history":
        parser.error(f"--database-url or {DATABASE_URL_ENV} is needed")
    try:
        engine = engine_for_typed_url(args.database_url) if args.database_url else None
    except ValueError as error:
        parser.error(f"invalid database URL: {error}")
    try:
        return _db_command(args.db_command, chosen, engine)
    except SQLAlchemyError as error:
        print(f"{PROG}: error: database: {database_error_line(error)}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.dispose()


def _db_command(command: str, chosen: MigrationSet, engine: Engine | None) -> int:
    from opencrm_horscompte.base import migrations

    head = migrations.head_revision(chosen)
    if command == "history":
        current = migrations.current_revision(engine, chosen) if engine is not None else None
        for revision, message in migrations.history(chosen):
            marks = ["head"] * (revision == head) + ["current"] * (revision == current)
            suffix = f" ({', '.join(marks)})" if marks else ""
            print(f"{revision}{suffix}: {message}")
        return 0
    assert engine is not None
    if command == "upgrade":
        before = migrations.current_revision(engine, chosen)
        migrations.upgrade(engine, chosen)
        after = migrations.current_revision(engine, chosen)
        print(f"{chosen.name}: {before or 'vide'} -> {after}")
    else:
        current = migrations.current_revision(engine, chosen)
        state = "à jour" if current == head else f"en retard, dernière : {head}"
        print(f"{chosen.name}: {current or 'aucune'} ({state})")
    return 0


# --------------------------------------------------------------------------- reference host


def _add_host_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--port", type=_bounded_int(1, 65535), default=DEFAULT_DEMO_PORT)
    command.add_argument("--data-dir", default=DEFAULT_DEMO_DATA_DIR)


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the demo host (needs the [demo] extra)")
    _add_host_options(demo)
    demo.set_defaults(handler=lambda _parser, args: _demo(args.port, args.data_dir))


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="serve the reference host with gunicorn, N processes (the [demo] extra)"
    )
    _add_host_options(serve)
    serve.add_argument("--workers", type=_bounded_int(1, 64), default=2)
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="do not start the background process (run `worker` elsewhere)",
    )
    serve.set_defaults(handler=_run_serve)


def _add_worker(commands: Any) -> None:
    worker = commands.add_parser(
        "worker", help="deliver the reference host's mail and run its scheduled tasks"
    )
    _add_host_options(worker)
    worker.add_argument(
        "--parent-pid",
        type=_bounded_int(1, 2**22),
        default=None,
        help="stop when this process is gone (`serve` passes its own)",
    )
    worker.set_defaults(handler=_run_worker)


def _missing_flask(error: ImportError) -> int:
    if (error.name or "").partition(".")[0] not in {"flask", "gunicorn"}:
        raise error
    print(
        f"{PROG}: error: l'hôte de référence a besoin de Flask et gunicorn : "
        "pip install 'opencrm-horscompte[demo]'",
        file=sys.stderr,
    )
    return 2


def _demo(port: int, data_dir: str) -> int:
    try:
        from opencrm_horscompte.host_kit.refhost.demo import run_demo
    except ImportError as error:
        return _missing_flask(error)
    return _host_command(lambda: run_demo(port=port, data_dir=Path(data_dir)))


def _host_command(run: Callable[[], int | None]) -> int:
    """Runs a command of the served host: a configuration mistake is one line and exit 2,
    a database that can't be reached at start one line and exit 1 (not a traceback)."""
    from sqlalchemy.exc import SQLAlchemyError

    from opencrm_horscompte.base.db import database_error_line
    from opencrm_horscompte.host_kit.refhost.environment import ConfigError

    try:
        return run() or 0
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        print(f"{PROG}: error: database: {database_error_line(error)}", file=sys.stderr)
        return 1


def _run_serve(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        from opencrm_horscompte.host_kit.refhost.serve import run_serve
    except ImportError as error:
        return _missing_flask(error)
    return _host_command(
        lambda: run_serve(
            args.workers, args.port, Path(args.data_dir), args.bind, with_worker=not args.no_worker
        )
    )


def _run_worker(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return _host_command(lambda: _worker(Path(args.data_dir), args.port, args.parent_pid))


def _worker(data_dir: Path, port: int, parent_pid: int | None = None) -> int:
    import logging

    from opencrm_horscompte.host_kit.refhost.environment import host_config, mail_transport
    from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
    from opencrm_horscompte.host_kit.refhost.runner import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    transport = mail_transport(data_dir)  # checked before "ready"
    config, _ = host_config(data_dir, port)
    host = ReferenceHost(config)
    print(f"{PROG} worker: ready (pid {os.getpid()})", flush=True)
    run_worker(host, transport, parent_pid=parent_pid)
    host.engine.dispose()
    return 0


def _add_data(commands: Any) -> None:
    add_data_commands(commands)
    commands.choices["data"].set_defaults(
        handler=lambda _parser, args: run_data_command(args, PROG)
    )


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    return handler(parser, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return _run(parser, args)
    except SystemExit as exit_:
        return _exit_status(exit_)


def _exit_status(exit_: SystemExit) -> int:
    if exit_.code is None:
        return 0
    return exit_.code if isinstance(exit_.code, int) else 1


if __name__ == "__main__":
    raise SystemExit(main())
