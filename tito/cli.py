"""`tito`: the course's command line. Each area registers its sub-commands from its own small
module in `tito.commands`; heavy imports (nbgrader, torch) happen only inside a handler."""
import argparse
import importlib
import sys

# Modules that define `register(subparsers)`. Kept light: importing them must not import nbgrader.
COMMAND_MODULES = (
    "tito.commands.course",     # export, check
    "tito.commands.grading",    # release, grade, demo
    "tito.commands.student",    # test, validate
    "tito.commands.training",   # train
    "tito.commands.bench",      # bench
    "tito.commands.mutants",    # mutants
    "tito.commands.lms",        # export-grades, gradescope
    "tito.commands.serve",      # serve, tokens, submit
    "tito.commands.integrity",  # similarity
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tito", description="TinyTorch Module 09: build, release, grade, train and benchmark.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("tito: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
