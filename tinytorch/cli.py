"""`tito`: the course's command line. Each area registers its sub-commands from its own small
module in `tinytorch.commands`; heavy imports (nbgrader, torch) happen only inside a handler."""
import argparse
import importlib
import sys

# Modules that define `register(subparsers)`. Kept light: importing them must not import nbgrader.
COMMAND_MODULES = (
    "tinytorch.commands.course",     # export, check
    "tinytorch.commands.grading",    # release, grade, demo
    "tinytorch.commands.student",    # test, validate
    "tinytorch.commands.training",   # train
    "tinytorch.commands.bench",      # bench
    "tinytorch.commands.quality",    # mutants
    "tinytorch.commands.lms",        # export-grades, gradescope
    "tinytorch.commands.serve",      # serve, tokens, submit
    "tinytorch.commands.integrity",  # similarity
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
