"""The ``medisee`` command line: a thin layer over the library.

Every failure a user can cause ends in one line on stderr and a non-zero exit status
(2 for bad input, 1 for anything unexpected; ``--debug`` shows the traceback)."""

from __future__ import annotations

import argparse
import logging
import sys

from .commands import calibrate, convert, demo_data, evaluate, info, predict, sample_study, train

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medisee",
        description="MediSee: ask a question about a medical image, get an answer, masks and boxes.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (predict, info, convert, train, evaluate, calibrate, demo_data, sample_study):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="[medisee] %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("medisee: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, IndexError, PermissionError, IsADirectoryError) as err:
        if args.debug:
            raise
        print(f"medisee: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # the last line of defence: one line, not a traceback
        if args.debug:
            raise
        print(f"medisee: internal error: {type(err).__name__}: {err} (run with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
