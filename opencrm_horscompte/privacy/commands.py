"""``opencrm-horscompte data export|erase --email ADDRESS``: the right of access and the
right to erasure from the command line (for the DPO or an administrator with database
access). Both print JSON on stdout and are audited (actor ``cli:<login>`` unless
``--actor`` names the person acting)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from opencrm_horscompte.base.db import database_error_line, engine_for_typed_url, writer
from opencrm_horscompte.privacy.subjects import UnknownAddress, erase_subject, export_subject

DATABASE_URL_ENV = "HORSCOMPTE_DATABASE_URL"


def add_data_commands(commands: Any) -> None:
    """Add ``data export`` and ``data erase`` to the CLI's subcommands."""
    data = commands.add_parser("data", help="personal data: right of access and erasure")
    actions = data.add_subparsers(dest="data_command", required=True)
    export = actions.add_parser("export", help="print, as JSON, what is held about an address")
    erase = actions.add_parser("erase", help="erase what may be erased about an address")
    erase.add_argument(
        "--tracking-codes",
        action="store_true",
        help="also delete the tracking codes (only once the host has deleted the dossiers)",
    )
    for parser in (export, erase):
        parser.add_argument("--email", required=True, help="the person's address")
        parser.add_argument(
            "--database-url", default=None, help=f"database URL (default: ${DATABASE_URL_ENV})"
        )
        parser.add_argument("--actor", default=None, help="who asks (recorded in the audit)")


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)[:320]
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run_data_command(args: argparse.Namespace, prog: str) -> int:
    url = args.database_url or os.environ.get(DATABASE_URL_ENV, "")
    if not url:
        print(f"{prog}: error: --database-url or ${DATABASE_URL_ENV} is needed", file=sys.stderr)
        return 2
    try:
        engine = engine_for_typed_url(url)
    except ValueError as error:
        print(f"{prog}: error: invalid database URL: {error}", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    try:
        with Session(writer(engine)) as session, session.begin():
            if args.data_command == "export":
                result: Any = export_subject(session, args.email, _actor(args), now)
            else:
                result = erase_subject(
                    session, args.email, _actor(args), now, tracking_codes=args.tracking_codes
                )
    except UnknownAddress:
        print(f"{prog}: error: not an e-mail address: {args.email!r}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        print(f"{prog}: error: database: {database_error_line(error)}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0
