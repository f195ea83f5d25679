"""The `parrot` command: extract, verify-corpus, grid, predict, export, demo.

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets
`handler`; the work itself lives in the library modules. All argument parsing of the project is here.
Every error that reaches the command becomes one line on stderr, ``parrot <command>: error: ...``, and
exit status 1; ``--debug`` (or ``PARROT_DEBUG=1``) lets the traceback through instead. Every subcommand
runs with JAX's persistent compilation cache on (`parrot_jax.compilation_cache`) unless
``--no-compilation-cache`` (or ``PARROT_COMPILATION_CACHE=0``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from parrot_jax.locks import Locked


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line, ``parrot <command>: error: ...`` (exit status 2);
    the usage is shown by --help only."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    p.add_argument("--name", help="the corpus's name in the store, tables and results (default: the corpus; "
                   "for csv the CSV file's stem, or its folder's name for manifest.csv)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--start-over", action="store_true", help="replace a store whose features were extracted from "
                   "another corpus or an older copy of this one (else refused)")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from parrot_jax.extraction import extract

        explicit = _name_paths(args.checkpoint, "--checkpoint")
        checkpoints = resolve_checkpoints([spec.name for spec in args.encoders], args.checkpoints, explicit)
        summary = extract(args.corpus, args.root, args.encoders, args.out, args.batch_size, args.on_error,
                          checkpoints, progress=not args.no_progress, start_over=args.start_over,
                          name=args.name)  # fmt: skip
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

        report = verify_corpus(args.corpus, args.root, args.file_list)
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
    "protocol": "protocol", "seeds": "seeds", "folds": "folds", "epochs": "train.epochs", "splits": "splits",
    "metrics": "metrics",
}  # fmt: skip


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `parrot grid` (also experiments/run_grid.py's)."""
    parser.add_argument("--config", default=None, help="a Python config file with get_config(), or a packaged "
                        "config's name: paper (default), beyond, demo, emodb_classical")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, dotted for nested ones (train.patience=none, "
                        "model.sinkhorn.epsilon=0.1)")  # fmt: skip
    for flag, key in GRID_SHORTHANDS.items():
        parser.add_argument(f"--{flag}", default=None, help=f"shorthand for --set {key}=...")
    parser.add_argument("--ablations", action="store_true", help="also run HP-only and OT-only (Table 2)")
    parser.add_argument("--checkpoints", action="store_true", help="save each neural cell's models (orbax)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="--protocol emobox: leave out split rows the store lacks and store rows in no split")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")


def grid_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides the grid arguments stand for (--set first, then the shorthands)."""
    out = list(args.set)
    out += [f"{key}={getattr(args, flag)}" for flag, key in GRID_SHORTHANDS.items() if getattr(args, flag) is not None]
    out += ["ablations=true"] if args.ablations else []
    out += ["checkpoints=true"] if args.checkpoints else []
    out += ["allow_missing=true"] if args.allow_missing else []
    return out


def run_grid_command(args: argparse.Namespace) -> int:
    """Run the grid the arguments describe; print the tables (on the coordinator)."""
    from parrot_jax import distributed as dist
    from parrot_jax.config import load_config
    from parrot_jax.grid import run_grid

    config, provenance = load_config(args.config, grid_overrides(args))
    provenance["argv"] = sys.argv
    outcome = run_grid(config, provenance, dry_run=args.dry_run)
    if not args.dry_run and dist.is_coordinator():
        for table, text in outcome.tables.items():
            folds = "EmoBox folds" if config.protocol == "emobox" else f"{config.protocol} {config.folds}-fold"
            print(f"\n## Table {table} ({folds}, {len(config.seeds)} seed(s))\n")
            print(text)
        print(f"results in {config.run_dir}/ ({outcome.seconds:.1f} s)")
    return 0


def _add_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="run the paper's Table 1 / Table 2 grid")
    add_grid_arguments(p)
    p.set_defaults(handler=run_grid_command)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from parrot_jax.audio import MAX_SECONDS

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
    p.add_argument("--monitor", choices=("none", "loss", "accuracy", "uar"), default="none",
                   help="early stopping on a validation share of the rest (default: none, train every epoch)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of the rest held out for early stopping (default: 0.1 with --monitor, else none)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="ENCODER=PATH",
                   help="checkpoint folder of an encoder that needs one")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="refuse recordings longer than this, "
                   f"read from their headers before decoding (default: {MAX_SECONDS:g}, 10 minutes)")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from parrot_jax.cells import encoder_order
        from parrot_jax.features import available_features
        from parrot_jax.predict import format_predictions, predict_files, train_on_corpus
        from parrot_jax.saved_model import load_model, save_model
        from parrot_jax.training import TrainConfig

        checkpoints = _name_paths(args.checkpoint, "--checkpoint")
        if (args.model / "model.json").is_file():
            model = load_model(args.model)
            print(f"model {args.model}: {model.kind} on {'+'.join(model.encoders)}, {model.members} member(s)")
        elif args.corpus:
            stored = available_features(args.features).get(args.corpus, [])
            if not stored:
                raise FileNotFoundError(f"no features of corpus {args.corpus!r} in {args.features} (run `parrot "
                                        f"extract --corpus {args.corpus} --out {args.features}` first)")
            encoders = [e.strip() for e in args.encoders.split(",") if e.strip()] if args.encoders else \
                encoder_order(stored)
            missing = [e for e in encoders if e not in stored]
            if missing:
                raise ValueError(f"no features of {', '.join(missing)} for corpus {args.corpus!r} in {args.features}")
            model, scores = train_on_corpus(args.features, args.corpus, args.kind, encoders,
                                            TrainConfig(epochs=args.epochs, monitor=args.monitor), holdout=args.holdout,
                                            val_fraction=args.val_fraction)
            save_model(args.model, model)
            print(f"trained {args.kind} on {args.corpus} ({'+'.join(encoders)}): {scores['train_rows']} rows; "
                  f"held-out accuracy {100 * scores['accuracy']:.1f}% on {scores['holdout_rows']} rows; "
                  f"saved to {args.model}")
        else:
            raise FileNotFoundError(f"{args.model} holds no saved model (model.json missing); "
                                    "pass --corpus NAME to train one on a corpus's stored features")
        predictions = predict_files(model, args.files, checkpoints, args.max_seconds)
        print(format_predictions(predictions, model.class_names))
        return 0

    p.set_defaults(handler=run)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a saved model as one ONNX or StableHLO file that runs without JAX")
    p.add_argument("--model", type=Path, required=True, help="a saved model folder")
    p.add_argument("--out", type=Path, required=True, help="the file to write (StableHLO: and FILE.json beside it)")
    p.add_argument("--format", choices=("onnx", "stablehlo"), default="onnx",
                   help="onnx (default; needs the export extra: pip install 'parrot_jax[export]') or stablehlo")

    def run(args: argparse.Namespace) -> int:
        from parrot_jax.export import export_model

        done = export_model(args.model, args.out, args.format)
        terms = done.contract
        inputs = ", ".join(f"{i['name']} [{', '.join(str(d) for d in i['shape'])}]" for i in terms["inputs"])
        beside = f", contract in {done.contract_path}" if done.contract_path else ", contract in its metadata"
        print(f"exported {terms['kind']} ({terms['members']} member(s)) to {done.path} ({done.format}, "
              f"{done.path.stat().st_size} bytes){beside}")
        print(f"inputs: {inputs}; output: probabilities [batch, {len(terms['classes'])}] "
              f"({', '.join(terms['classes'])})")
        if terms["rows_coupled"]:
            print(f"the transport plan couples the rows of one call: feed at most {terms['eval_batch_size']} rows "
                  "per call, as parrot predict batches them")
        sizes = " and ".join(str(n) for n in done.parity_rows)
        print(f"parity with the saved model: max |p difference| {done.max_error:.2g} on random batches of {sizes} rows")
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
    PARROT_KEEP_FREED_MEMORY=0, before anything else runs, and the persistent compilation cache before the
    subcommand runs, unless opted out."""
    from parrot_jax import allocator

    allocator.keep_freed_memory_if_wanted()
    from parrot_jax import compilation_cache  # imports JAX: after the malloc settings

    parser = OneLineParser(prog="parrot", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", metavar="SPEC", help="devices to use: all (default), N (the first N) or "
                        "ids:i,j,... (sets PARROT_DEVICES; see README 'Multi-device and multi-host')")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help=f"let an error's traceback through (also {DEBUG_ENV}=1)")
    parser.add_argument("--no-compilation-cache", action="store_true", help="compile every program afresh, keep "
                        f"none (sets {compilation_cache.ENV}=0; default: JAX's persistent compilation cache in "
                        "$XDG_CACHE_HOME/parrot_jax/jax or ~/.cache/parrot_jax/jax)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_extract, _add_verify_corpus, _add_grid, _add_predict, _add_export, _add_demo):
        add(sub)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse collects them on the top parser: the refusal names the subcommand
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    _use_devices(parser, args.devices)
    if args.no_compilation_cache:  # the variable, so the encoder runner leaves the cache off too
        os.environ[compilation_cache.ENV] = "0"
    try:
        compilation_cache.enable_compilation_cache()
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"parrot {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"parrot {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 1


DEBUG_ENV = "PARROT_DEBUG"
# Errors that say what was wrong by themselves: bad values, files, locks, missing optional packages.
EXPECTED_ERRORS = (ValueError, OSError, ImportError, Locked)


def error_line(error: Exception) -> str:
    """`error` as one line: its message (lines joined with "; "); for an error of an unexpected kind (a bug,
    most likely), also its type and where to find the traceback."""
    message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or "(no message)"
    if isinstance(error, EXPECTED_ERRORS):
        return message
    return f"{type(error).__name__}: {message} (run with --debug, or {DEBUG_ENV}=1, for the traceback)"


def _use_devices(parser: argparse.ArgumentParser, spec: str | None) -> None:
    """Join the other hosts (jax.distributed, when launched as several processes), then check and
    record the device choice for the library (`PARROT_DEVICES`)."""
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
