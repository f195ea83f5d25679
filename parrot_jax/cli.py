"""The `parrot` command: extract, verify-corpus, grid, predict, demo.

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets
`run`; the work itself lives in the library modules.
"""

from __future__ import annotations

import argparse
import sys


def _add_extract(sub: argparse._SubParsersAction) -> None:  # issue 3
    p = sub.add_parser("extract", help="embed a corpus with one or more encoders into the feature store")
    p.set_defaults(run=lambda args: _not_built("extract"))


def _add_verify_corpus(sub: argparse._SubParsersAction) -> None:  # issue 3
    p = sub.add_parser("verify-corpus", help="check a copy of a corpus (counts, missing/extra/corrupt files)")
    p.set_defaults(run=lambda args: _not_built("verify-corpus"))


def _add_grid(sub: argparse._SubParsersAction) -> None:  # issue 6
    p = sub.add_parser("grid", help="run the paper's Table 1 / Table 2 grid")
    p.set_defaults(run=lambda args: _not_built("grid"))


def _add_predict(sub: argparse._SubParsersAction) -> None:  # issue 6
    p = sub.add_parser("predict", help="emotion and class probabilities of new recordings")
    p.set_defaults(run=lambda args: _not_built("predict"))


def _add_demo(sub: argparse._SubParsersAction) -> None:  # issue 6
    p = sub.add_parser("demo", help="the whole pipeline on the built-in synthetic corpus")
    p.set_defaults(run=lambda args: _not_built("demo"))


def _not_built(command: str) -> int:
    print(f"parrot {command}: not built yet", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parrot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_extract, _add_verify_corpus, _add_grid, _add_predict, _add_demo):
        add(sub)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
