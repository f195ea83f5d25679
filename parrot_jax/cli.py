"""The `parrot` command: extract, verify-corpus, grid, predict, demo.

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets
`handler`; the work itself lives in the library modules. All argument parsing of the project is here.
Library errors (bad values, missing files) become one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def _add_extract(sub: argparse._SubParsersAction) -> None:
    from parrot_jax.corpora import CORPORA

    p = sub.add_parser("extract", help="embed a corpus with one or more encoders into the feature store")
    p.add_argument("--corpus", required=True, choices=CORPORA)
    p.add_argument("--root", type=Path, help="folder holding the corpus's audio (for csv: the CSV file or its "
                   "folder; for demo: default demo_corpus/, generated when absent)")  # fmt: skip
    p.add_argument("--encoders", type=_encoder_specs, default="mfcc-stats,logmel-stats",
                   help="comma-separated registry names, each optionally followed by its options, e.g. "
                   "'wavlm-base:layer=6,pooling=mean+std,ssam-base' (a layer mix: layer=w0/w1/...)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("features"), help="store: writes OUT/<corpus>/<encoder>.npy")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per batch, and per resumable chunk")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="bad audio: stop naming the file (raise), or leave it out and list it in <encoder>.rejects.tsv")  # fmt: skip
    p.add_argument("--checkpoints", type=Path, help="folder with one sub-folder per encoder name (its checkpoint)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="checkpoint folder of one encoder (overrides --checkpoints; repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        from parrot_jax.extraction import extract

        try:
            explicit = _name_paths(args.checkpoint, "--checkpoint")
            checkpoints = resolve_checkpoints([spec.name for spec in args.encoders], args.checkpoints, explicit)
            summary = extract(args.corpus, args.root, args.encoders, args.out, args.batch_size, args.on_error,
                              checkpoints, progress=not args.no_progress)  # fmt: skip
        except (ValueError, FileNotFoundError, ImportError) as error:
            print(f"parrot extract: error: {error}", file=sys.stderr)
            return 1
        print(summary.text())
        return 0

    p.set_defaults(handler=run)


def _add_verify_corpus(sub: argparse._SubParsersAction) -> None:
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

    p.set_defaults(handler=run)


GRID_SHORTHANDS = {  # flag -> the config key it sets
    "run": "run", "features": "features", "results": "results", "corpora": "corpora", "encoders": "encoders",
    "protocol": "protocol", "seeds": "seeds", "folds": "folds", "epochs": "train.epochs",
}  # fmt: skip


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `parrot grid` (also experiments/run_grid.py's)."""
    parser.add_argument("--config", default=None, help="a Python config file with get_config(), or a packaged "
                        "config's name: paper (default), demo, emodb_classical")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, dotted for nested ones (train.patience=none, "
                        "model.sinkhorn.epsilon=0.1)")  # fmt: skip
    for flag, key in GRID_SHORTHANDS.items():
        parser.add_argument(f"--{flag}", default=None, help=f"shorthand for --set {key}=...")
    parser.add_argument("--ablations", action="store_true", help="also run HP-only and OT-only (Table 2)")
    parser.add_argument("--checkpoints", action="store_true", help="save each neural cell's models (orbax)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")


def grid_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides the grid arguments stand for (--set first, then the shorthands)."""
    out = list(args.set)
    out += [f"{key}={getattr(args, flag)}" for flag, key in GRID_SHORTHANDS.items() if getattr(args, flag) is not None]
    out += ["ablations=true"] if args.ablations else []
    out += ["checkpoints=true"] if args.checkpoints else []
    return out


def run_grid_command(args: argparse.Namespace) -> int:
    """Run the grid the arguments describe; print the tables (on the coordinator)."""
    from parrot_jax import distributed as dist
    from parrot_jax.config import load_config
    from parrot_jax.grid import run_grid

    try:
        config, provenance = load_config(args.config, grid_overrides(args))
        provenance["argv"] = sys.argv
        outcome = run_grid(config, provenance, dry_run=args.dry_run)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"parrot grid: error: {error}", file=sys.stderr)
        return 1
    if not args.dry_run and dist.is_coordinator():
        for table, text in outcome.tables.items():
            print(f"\n## Table {table} ({config.protocol} {config.folds}-fold, {len(config.seeds)} seed(s))\n")
            print(text)
        print(f"results in {config.run_dir}/ ({outcome.seconds:.1f} s)")
    return 0


def _add_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="run the paper's Table 1 / Table 2 grid")
    add_grid_arguments(p)
    p.set_defaults(handler=run_grid_command)


def _add_predict(sub: argparse._SubParsersAction) -> None:
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
        from parrot_jax.cells import encoder_order
        from parrot_jax.features import available_features
        from parrot_jax.predict import format_predictions, predict_files, train_on_corpus
        from parrot_jax.saved_model import load_model, save_model
        from parrot_jax.training import TrainConfig

        try:
            checkpoints = _name_paths(args.checkpoint, "--checkpoint")
            if (args.model / "model.json").is_file():
                model = load_model(args.model)
                print(f"model {args.model}: {model.kind} on {'+'.join(model.encoders)}, {model.members} member(s)")
            elif args.corpus:
                stored = available_features(args.features).get(args.corpus, [])
                encoders = args.encoders.split(",") if args.encoders else encoder_order(stored)
                missing = [e for e in encoders if e not in stored]
                if missing:
                    raise ValueError(f"no features of {', '.join(missing)} for corpus {args.corpus!r} in "
                                     f"{args.features}")
                model, scores = train_on_corpus(args.features, args.corpus, args.kind, encoders,
                                                TrainConfig(epochs=args.epochs), holdout=args.holdout,
                                                val_fraction=args.val_fraction)
                save_model(args.model, model)
                print(f"trained {args.kind} on {args.corpus} ({'+'.join(encoders)}): {scores['train_rows']} rows; "
                      f"held-out accuracy {100 * scores['accuracy']:.1f}% on {scores['holdout_rows']} rows; "
                      f"saved to {args.model}")
            else:
                raise FileNotFoundError(f"{args.model} holds no saved model (model.json missing); "
                                        "pass --corpus NAME to train one on a corpus's stored features")
            predictions = predict_files(model, args.files, checkpoints)
        except (ValueError, FileNotFoundError) as error:
            print(f"parrot predict: error: {error}", file=sys.stderr)
            return 1
        print(format_predictions(predictions, model.class_names))
        return 0

    p.set_defaults(handler=run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the built-in synthetic corpus")
    p.add_argument("--out", type=Path, default=Path("results/demo"), help="working folder (default: results/demo)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo config's epochs")

    def run(args: argparse.Namespace) -> int:
        from parrot_jax import demo

        return demo.run(args.out, epochs=args.epochs)

    p.set_defaults(handler=run)


def _encoder_specs(text: str) -> list:
    """`--encoders`: `registry.parse_encoders`, its refusals turned into argparse's (exit 2, one line)."""
    from parrot_jax.encoders import registry

    try:
        return registry.parse_encoders(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def resolve_checkpoints(
    names: Sequence[str], checkpoint_dir: Path | None = None, explicit: Mapping[str, Path] | None = None
) -> dict[str, Path]:
    """Checkpoint folder per encoder that needs one: `explicit[name]` (--checkpoint NAME=PATH), else
    `checkpoint_dir/name` (--checkpoints DIR)."""
    from parrot_jax.encoders import registry

    explicit = dict(explicit or {})
    folders = {}
    for name in names:
        if not registry.entry(name).needs_checkpoint:
            if name in explicit:
                raise ValueError(f"encoder {name!r} takes no checkpoint, got {explicit[name]}")
            continue
        if name in explicit:
            folders[name] = Path(explicit[name])
        elif checkpoint_dir is not None:
            folders[name] = Path(checkpoint_dir) / name
        else:
            raise ValueError(
                f"encoder {name!r} needs a checkpoint folder: give --checkpoints DIR (holding a sub-folder "
                f"{name}/) or --checkpoint {name}=PATH"
            )
        if not folders[name].is_dir():
            raise ValueError(f"checkpoint folder of encoder {name!r} does not exist: {folders[name]}")
    return folders


def _name_paths(items: list[str], flag: str) -> dict[str, Path]:
    """{NAME: PATH} of repeated ``NAME=PATH`` arguments; a ValueError naming the flag and the bad item."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise ValueError(f"{flag} expects NAME=PATH, got {item!r}")
        out[name.strip()] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    """The `parrot` command. Turns on the process's malloc settings (`allocator`) unless
    PARROT_KEEP_FREED_MEMORY=0, before anything else runs."""
    from parrot_jax import allocator

    allocator.keep_freed_memory_if_wanted()
    parser = argparse.ArgumentParser(prog="parrot", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", metavar="SPEC", help="devices to use: all (default), N (the first N) or "
                        "ids:i,j,... (sets PARROT_DEVICES; see README 'Multi-device and multi-host')")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_extract, _add_verify_corpus, _add_grid, _add_predict, _add_demo):
        add(sub)
    args = parser.parse_args(argv)
    _use_devices(parser, args.devices)
    return int(args.handler(args) or 0)


def _use_devices(parser: argparse.ArgumentParser, spec: str | None) -> None:
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
