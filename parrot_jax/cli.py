"""The `parrot` command: extract, verify-corpus, grid, predict, demo.

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets
`run`; the work itself lives in the library modules.
"""

from __future__ import annotations

import argparse
import sys


def _add_extract(sub: argparse._SubParsersAction) -> None:  # issue 3
    from pathlib import Path

    from parrot_jax.corpora import CORPORA

    p = sub.add_parser("extract", help="embed a corpus with one or more encoders into the feature store")
    p.add_argument("--corpus", required=True, choices=CORPORA)
    p.add_argument("--root", type=Path, help="folder holding the corpus's audio (for csv: the CSV file or its "
                   "folder; for demo: default demo_corpus/, generated when absent)")  # fmt: skip
    p.add_argument("--encoders", default="mfcc-stats,logmel-stats", help="comma-separated registry names")
    p.add_argument("--out", type=Path, default=Path("features"), help="store: writes OUT/<corpus>/<encoder>.npy")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per batch, and per resumable chunk")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="bad audio: stop naming the file (raise), or leave it out and list it in <encoder>.rejects.tsv")  # fmt: skip
    p.add_argument("--checkpoints", type=Path, help="folder with one sub-folder per encoder name (its checkpoint)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="checkpoint folder of one encoder (overrides --checkpoints; repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        from parrot_jax.features import extract, resolve_checkpoints

        names = [n.strip() for n in args.encoders.split(",") if n.strip()]
        explicit = {}
        for item in args.checkpoint:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise SystemExit(f"parrot extract: --checkpoint expects NAME=PATH, got {item!r}")
            explicit[name.strip()] = Path(path)
        try:
            checkpoints = resolve_checkpoints(names, args.checkpoints, explicit)
            summary = extract(args.corpus, args.root, names, args.out, args.batch_size, args.on_error, checkpoints,
                              progress=not args.no_progress)  # fmt: skip
        except (ValueError, FileNotFoundError, ImportError) as error:
            print(f"parrot extract: error: {error}", file=sys.stderr)
            return 1
        print(summary.text())
        return 0

    p.set_defaults(run=run)


def _add_verify_corpus(sub: argparse._SubParsersAction) -> None:  # issue 3
    from pathlib import Path

    from parrot_jax.corpora import CORPORA

    p = sub.add_parser("verify-corpus", help="check a copy of a corpus (counts, missing/extra/corrupt files)")
    p.add_argument("--corpus", required=True, choices=CORPORA)
    p.add_argument("--root", type=Path, required=True, help="folder holding the corpus's audio")
    p.add_argument("--file-list", type=Path, help="official list (TSV: file, sha256, size_bytes), e.g. CREMA-D's: "
                   "reports missing, extra and corrupt files")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from parrot_jax.corpora import verify_corpus

        try:
            report = verify_corpus(args.corpus, args.root, args.file_list)
        except (ValueError, FileNotFoundError) as error:
            print(f"parrot verify-corpus: error: {error}", file=sys.stderr)
            return 1
        for kind, counts in report.counts.items():
            print(f"{kind}: " + ", ".join(f"{key} {n}" for key, n in counts.items()))
        problems = {"count mismatch": report.count_mismatches, "missing": report.missing, "extra": report.extra,
                    "corrupt (size or sha256 differs)": report.corrupt, "unreadable header": report.unreadable}  # fmt: skip
        for what, items in problems.items():
            if items:
                print(f"{what} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        print("OK" if report.ok else "PROBLEMS FOUND")
        return 0 if report.ok else 1

    p.set_defaults(run=run)


def _add_grid(sub: argparse._SubParsersAction) -> None:  # issue 6
    from parrot_jax import grid

    p = sub.add_parser("grid", help="run the paper's Table 1 / Table 2 grid")
    grid.add_arguments(p)
    p.set_defaults(run=grid.command)


def _add_predict(sub: argparse._SubParsersAction) -> None:  # issue 6
    from pathlib import Path

    p = sub.add_parser("predict", help="emotion and class probabilities of new recordings")
    p.add_argument("files", nargs="+", type=Path, help="audio files")
    p.add_argument("--model", type=Path, required=True,
                   help="a saved model folder; with --corpus, one is trained on that corpus and saved here")
    p.add_argument("--corpus", help="train on this corpus's stored features first (when --model holds none)")
    p.add_argument("--features", type=Path, default=Path("features"), help="the feature store (default: features)")
    p.add_argument("--kind", default="parrot", help="model kind to train (default: parrot)")
    p.add_argument("--encoders", help="comma-separated encoders to train on (default: every one stored)")
    p.add_argument("--epochs", type=int, default=50, help="training epochs (default: 50, the paper's)")
    p.add_argument("--holdout", type=float, default=0.1, help="share of the corpus kept out to score it (0.1)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the rest for early stopping (0.1)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="ENCODER=PATH",
                   help="checkpoint folder of an encoder that needs one")

    def run(args: argparse.Namespace) -> int:
        from parrot_jax import predict

        return predict.command(args)

    p.set_defaults(run=run)


def _add_demo(sub: argparse._SubParsersAction) -> None:  # issue 6
    from pathlib import Path

    p = sub.add_parser("demo", help="the whole pipeline on the built-in synthetic corpus")
    p.add_argument("--out", type=Path, default=Path("results/demo"), help="working folder (default: results/demo)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo config's epochs")

    def run(args: argparse.Namespace) -> int:
        from parrot_jax import demo

        return demo.run(args.out, epochs=args.epochs)

    p.set_defaults(run=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parrot", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", metavar="SPEC", help="devices to use: all (default), N (the first N) or "
                        "ids:i,j,... (sets PARROT_DEVICES; see README 'Multi-device and multi-host')")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_extract, _add_verify_corpus, _add_grid, _add_predict, _add_demo):
        add(sub)
    args = parser.parse_args(argv)
    _use_devices(parser, args.devices)
    return int(args.run(args) or 0)


def _use_devices(parser: argparse.ArgumentParser, spec: str | None) -> None:  # issue 7
    """Join the other hosts (jax.distributed, when launched as several processes), then check and
    record the device choice for the library (`PARROT_DEVICES`)."""
    import os

    from parrot_jax import distributed

    distributed.initialize_multihost()
    if spec is not None:
        try:
            distributed.select_devices(spec)
        except ValueError as error:
            parser.error(f"--devices: {error}")
        os.environ[distributed.ENV_DEVICES] = spec


if __name__ == "__main__":
    sys.exit(main())
