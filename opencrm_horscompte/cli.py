"""Command line: sample tracking codes, show their strength, run the demo host.

``opencrm-horscompte codes sample`` draws codes with the same function the plugin uses, so an
administrator can see what users will receive before changing the settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from opencrm_horscompte.privacy.commands import add_data_commands, run_data_command
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.strength import tracking_strength
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    InvalidPolicy,
    check_policy,
    generate_tracking_code,
)

PROG = "opencrm-horscompte"
MAX_SAMPLE_COUNT = 100_000
DEFAULT_DEMO_PORT = 8765
DEFAULT_DEMO_DATA_DIR = "./demo-data"


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Tools for the opencrm-horscompte plugin.")
    commands = parser.add_subparsers(dest="command", required=True)
    codes = commands.add_parser("codes", help="tracking codes")
    code_commands = codes.add_subparsers(dest="codes_command", required=True)
    sample = code_commands.add_parser("sample", help="print sample tracking codes")
    _add_policy_options(sample)
    sample.add_argument("--count", type=_bounded_int(1, MAX_SAMPLE_COUNT), default=1)
    strength = code_commands.add_parser("strength", help="print the strength of a policy")
    _add_policy_options(strength)
    demo = commands.add_parser("demo", help="run the demo host (needs the [demo] extra)")
    demo.add_argument("--port", type=_bounded_int(1, 65535), default=DEFAULT_DEMO_PORT)
    demo.add_argument("--data-dir", default=DEFAULT_DEMO_DATA_DIR)
    add_data_commands(commands)
    return parser


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


def _sample(policy: CodePolicy, count: int) -> int:
    sys.stdout.write("".join(generate_tracking_code(policy) + "\n" for _ in range(count)))
    return 0


def _strength(policy: CodePolicy) -> int:
    strength = tracking_strength(policy)
    print(f"{strength.bits:.1f} bits")
    print(strength.summary_fr)
    return 0


def _demo(port: int, data_dir: str) -> int:
    try:
        from opencrm_horscompte.host_kit.refhost.demo import run_demo
    except ImportError as error:
        if (error.name or "").partition(".")[0] != "flask":
            raise
        print(
            f"{PROG}: error: la démo a besoin de Flask : pip install 'opencrm-horscompte[demo]'",
            file=sys.stderr,
        )
        return 2
    run_demo(port=port, data_dir=Path(data_dir))
    return 0


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args.port, args.data_dir)
    if args.command == "data":
        return run_data_command(args, PROG)
    try:
        policy = _policy(args)
    except InvalidPolicy as error:
        parser.error(str(error))
    if args.codes_command == "sample":
        return _sample(policy, args.count)
    return _strength(policy)


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
