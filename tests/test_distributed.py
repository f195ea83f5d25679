"""parrot_jax.distributed: device selection, lane sharding with padding, multi-host helpers.

Simulated devices need XLA_FLAGS set before jax is imported, so those checks run in a subprocess
(`run_with_devices`) that prints one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parrot_jax import distributed as dist

REPO = Path(__file__).resolve().parents[1]


def run_with_devices(code: str, devices: int = 4, env: dict[str, str] | None = None, argv: list[str] = ()) -> dict:
    """Run `code` (with `argv`) in a fresh Python with `devices` simulated CPU devices; its last stdout
    line is JSON."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "PARROT_", "XLA_"))}
    full_env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
        **(env or {}),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *argv], env=full_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _json_line(proc.stdout)


def _json_line(stdout: str) -> dict:
    """The last JSON line of a child's stdout (Gloo's C++ logging shares the stream)."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


# --- environment parsing (no devices touched) ---------------------------------------------------


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, False),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"}, False),
        ({"SLURM_NTASKS": "8"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "1"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"TPU_WORKER_HOSTNAMES": "t1v-0"}, False),
        ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1"}, True),
        ({"SLURM_NTASKS": "8", "PARROT_DISTRIBUTED": "0"}, False),
        ({"PARROT_DISTRIBUTED": "1"}, True),
    ],
)
def test_multihost_requested_reads_the_usual_launch_variables(environ, expected):
    assert dist.multihost_requested(environ) is expected


def test_multihost_errors_name_the_variable():
    with pytest.raises(ValueError, match=r"PARROT_DISTRIBUTED='yes': expected 0 or 1"):
        dist.multihost_requested({"PARROT_DISTRIBUTED": "yes"})
    env = {"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2"}
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID must be a non-negative integer; got ''"):
        dist.initialize_multihost(env)


@pytest.mark.parametrize("n", [0, 1, 5, 13, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_host_rows_partition_every_row_once_in_order(n, count):
    parts = [dist.host_rows(n, p, count) for p in range(count)]
    assert [i for part in parts for i in part] == list(range(n))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_pad_leading_repeats_the_last_lane_and_checks_leaves():
    tree = {"a": np.arange(6).reshape(3, 2), "b": np.array([1.0, 2.0, 3.0])}
    padded = dist.pad_leading(tree, 5)
    np.testing.assert_array_equal(padded["a"], [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["b"], [1, 2, 3, 3, 3])
    with pytest.raises(ValueError, match="same leading"):
        dist.pad_leading({"a": np.zeros(3), "b": np.zeros(4)}, 4)
    with pytest.raises(ValueError, match="cannot pad 3 lanes down to 2"):
        dist.pad_leading(tree, 2)


# --- four simulated devices --------------------------------------------------------------------


@pytest.mark.slow
def test_select_devices_specs_and_errors():
    out = run_with_devices(
        """
        import json
        from parrot_jax import distributed as dist
        ids = lambda spec: [d.id for d in dist.select_devices(spec)]
        errors = {}
        for spec in ["5", "0", "ids:7", "ids:1,1", "ids:a", "gpu"]:
            try:
                dist.select_devices(spec)
            except ValueError as e:
                errors[spec] = str(e)
        print(json.dumps({"all": ids("all"), "two": ids("2"), "picked": ids("ids:3,1"),
                          "env": ids(None), "errors": errors}))
        """,
        env={"PARROT_DEVICES": "3"},
    )
    assert out["all"] == [0, 1, 2, 3]
    assert out["two"] == [0, 1]
    assert out["picked"] == [3, 1]
    assert out["env"] == [0, 1, 2]
    errors = out["errors"]
    assert errors["5"] == "devices spec '5': expected a count between 1 and 4 (devices available)"
    assert errors["0"] == errors["5"].replace("'5'", "'0'")
    assert errors["ids:7"] == "devices spec 'ids:7': ids must be distinct and among [0, 1, 2, 3]; unknown [7]"
    assert errors["ids:1,1"].endswith("repeated ids")
    assert errors["ids:a"] == "devices spec 'ids:a': expected ids:<int>,<int>,..."
    assert errors["gpu"] == "devices spec 'gpu': expected 'all', a device count N, or 'ids:i,j,...'"


@pytest.mark.slow
def test_shard_leading_packs_and_pads_lanes_per_device():
    out = run_with_devices(
        """
        import json
        import jax, numpy as np
        from parrot_jax import distributed as dist
        mesh = dist.make_mesh()
        tree = {"x": np.arange(5 * 3, dtype=np.float32).reshape(5, 3),
                "key": jax.random.split(jax.random.key(0), 5)}
        sharded = dist.shard_leading(tree, mesh)
        x = sharded["x"]
        back = dist.gather(sharded, 5)
        print(json.dumps({
            "shape": list(x.shape),
            "per_device": sorted({s.data.shape[0] for s in x.addressable_shards}),
            "devices": sorted(s.device.id for s in x.addressable_shards),
            "padding": np.asarray(x)[5:].tolist(),
            "x_back": back["x"].tolist(),
            "key_is_key": bool(jax.dtypes.issubdtype(sharded["key"].dtype, jax.dtypes.prng_key)),
            "key_same": bool((back["key"] == np.asarray(jax.random.key_data(tree["key"]))).all()),
            "nine_on_two": list(dist.shard_leading(np.zeros((9, 2)), dist.make_mesh(jax.devices()[:2])).shape),
        }))
        """
    )
    assert out["shape"] == [8, 3]  # 5 lanes on 4 devices: padded to 8, 2 lanes per device
    assert out["per_device"] == [2]
    assert out["devices"] == [0, 1, 2, 3]
    assert out["padding"] == [[12.0, 13.0, 14.0]] * 3  # copies of the last real lane
    assert out["x_back"] == [[3.0 * i, 3.0 * i + 1, 3.0 * i + 2] for i in range(5)]
    assert out["key_is_key"] and out["key_same"]
    assert out["nine_on_two"] == [10, 2]


# A vmapped, jitted loop (SGD on a small MLP, per-lane data, RNG and dropout) run on one device and
# with its lanes sharded over `mesh`; `compare(mesh)` reports both results' difference.
TOY_TRAINING = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from parrot_jax import distributed as dist

    def compare(mesh):
        lanes, n, d, h = 6, 64, 12, 16
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
        y = jnp.asarray(rng.integers(0, 3, size=n))
        idx = np.stack([rng.permutation(n)[:48] for _ in range(lanes)])  # per-lane training rows

        def init(key):
            k1, k2 = jax.random.split(key)
            return {"w1": jax.random.normal(k1, (d, h)) * 0.3, "w2": jax.random.normal(k2, (h, 3)) * 0.3}

        def loss(p, key, rows):
            keep = jax.random.bernoulli(key, 0.8, (rows.shape[0], h))
            z = jnp.where(keep, jax.nn.relu(x[rows] @ p["w1"]), 0.0) / 0.8
            logp = jax.nn.log_softmax(z @ p["w2"])
            return -jnp.take_along_axis(logp, y[rows][:, None], 1).mean()

        @jax.jit
        @jax.vmap
        def step(p, key, rows):
            key, sub = jax.random.split(key)
            g = jax.grad(loss)(p, sub, rows)
            return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), key

        def train(state):
            p, key, rows = state
            for s in range(20):
                p, key = step(p, key, rows[:, (s % 6) * 8:(s % 6) * 8 + 8])
            return p

        keys = jax.random.split(jax.random.key(1), lanes)
        params = jax.vmap(init)(keys)
        one = dist.gather(train((params, keys, jnp.asarray(idx))))
        sharded = train(dist.shard_leading((params, keys, idx), mesh))
        many = dist.gather(sharded, lanes)
        return {
            "diff": max(float(np.abs(one[k] - many[k]).max()) for k in one),
            "equal": all(np.array_equal(one[k], many[k]) for k in one),
            "spread": sorted({s.device.id for s in sharded["w1"].addressable_shards}),
            "lanes": int(many["w1"].shape[0]),
        }
    """
)


@pytest.mark.slow
def test_sharded_vmapped_training_equals_one_device():
    """The property the trainer relies on: lanes sharded over 4 devices give the one-device numbers."""
    out = run_with_devices(TOY_TRAINING + "\nprint(json.dumps(compare(dist.make_mesh())))")
    assert out["spread"] == [0, 1, 2, 3]
    assert out["lanes"] == 6
    assert out["equal"], out  # bitwise: lanes never interact, so sharding changes no arithmetic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_processes(code: str, count: int, argv: Callable[[int], list[str]] = lambda rank: []) -> list[dict]:
    """Run `code` as `count` jax.distributed processes on localhost (2 CPU devices each), process `rank`
    with the arguments `argv(rank)`; their JSON lines."""
    port = _free_port()
    procs = []
    for rank in range(count):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "PARROT_", "XLA_"))}
        env.update(
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_PLATFORMS="cpu",
            PYTHONPATH=str(REPO),
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES=str(count),
            JAX_PROCESS_ID=str(rank),
        )
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *argv(rank)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-4000:]
        outs.append(_json_line(stdout))
    return outs


@pytest.mark.slow
def test_two_processes_on_localhost_share_one_mesh():
    """jax.distributed on CPU: 2 processes x 2 devices form one 4-device mesh; each process gets the
    whole result, equal to its own one-device run, its own share of rows, and process 0's decisions."""
    code = TOY_TRAINING + textwrap.dedent(
        """
    dist.initialize_multihost()
    mesh = dist.make_mesh()
    out = compare(mesh)
    out.update(process=jax.process_index(), count=jax.process_count(), devices=len(jax.devices()),
               local=len(jax.local_devices()), rows=list(dist.host_rows(10)),
               coordinator=dist.is_coordinator(),
               agreed=dist.from_coordinator(np.array([7 + jax.process_index(), 1], np.int32)).tolist())
    dist.barrier("test-done")
    print(json.dumps(out))
    """
    )
    outs = _run_processes(code, 2)
    for rank, out in enumerate(outs):
        assert (out["process"], out["count"], out["devices"], out["local"]) == (rank, 2, 4, 2)
        assert out["lanes"] == 6 and out["equal"], out
        assert out["coordinator"] is (rank == 0)
        assert out["agreed"] == [7, 1]  # process 0's value everywhere
    assert len(outs[0]["spread"]) == len(outs[1]["spread"]) == 2  # each process holds its 2 devices' lanes
    assert outs[0]["rows"] == [0, 1, 2, 3, 4] and outs[1]["rows"] == [5, 6, 7, 8, 9]


@pytest.mark.slow
def test_data_parallel_batch_equals_one_device():
    """An encoder-like forward (Flax linen: Dense, LayerNorm, mean over time) on a batch split over
    4 devices returns what the same jitted forward returns on one device."""
    out = run_with_devices(
        """
        import json
        import jax, jax.numpy as jnp, numpy as np
        import flax.linen as nn
        from parrot_jax import distributed as dist

        class Tiny(nn.Module):
            @nn.compact
            def __call__(self, x):  # [B, T, F] -> [B, 8]
                h = nn.LayerNorm()(jnp.tanh(nn.Dense(16)(x)))
                return nn.Dense(8)(h).mean(axis=1)

        x = np.random.default_rng(0).normal(size=(7, 20, 5)).astype(np.float32)  # 7 rows: padded to 8
        model = Tiny()
        params = model.init(jax.random.key(0), x[:1])
        forward = jax.jit(model.apply)
        one = np.asarray(forward(params, x))
        many = dist.data_parallel(forward, dist.local_mesh(dist.make_mesh()))(params, x)
        print(json.dumps({"shape": list(many.shape), "diff": float(np.abs(one - many).max())}))
        """
    )
    assert out["shape"] == [7, 8]
    assert out["diff"] <= 1e-6, out


# --- extraction -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from parrot_jax.corpora import generate_demo_corpus

    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), seed=1, n_speakers=2, n_texts=3)  # 24 files


@pytest.mark.slow
def test_extraction_split_over_devices_equals_one_device(demo_corpus: Path, tmp_path: Path):
    """The feature store built with the tiny wav2vec2 encoder (committed fixture) on 4 devices holds the
    rows it holds on one device."""
    out = run_with_devices(
        f"""
        import json
        import numpy as np
        from parrot_jax.encoders import registry
        from parrot_jax.extraction import extract
        from parrot_jax.features import load_features

        folder = {str(REPO / "tests" / "fixtures" / "hf" / "wav2vec2")!r}
        rows, split = {{}}, {{}}
        for devices in ("1", "all"):
            enc = registry.build("wav2vec2-base", folder, batch_size=8)
            extract("demo", {str(demo_corpus)!r}, [enc], {str(tmp_path)!r} + "/" + devices, batch_size=8,
                    progress=False, devices=devices)
            rows[devices] = np.load({str(tmp_path)!r} + "/" + devices + "/demo/wav2vec2-base.npy")
            split[devices] = enc._embed is not enc._embed_one_device
        print(json.dumps({{"shape": list(rows["all"].shape), "split": split,
                          "diff": float(np.abs(rows["1"] - rows["all"]).max())}}))
        """
    )
    assert out["shape"] == [24, 16]
    assert out["split"] == {"1": False, "all": True}
    assert out["diff"] <= 1e-5, out


@pytest.mark.slow
def test_two_process_extraction_writes_the_one_process_store(demo_corpus: Path, tmp_path: Path):
    """Two jax.distributed processes on localhost share the chunks (each embeds its half) and host 0
    assembles: the store's files are byte-identical to a one-process extraction."""
    from parrot_jax.extraction import extract

    extract("demo", demo_corpus, ["logmel-stats"], tmp_path / "one", batch_size=4, progress=False)
    code = f"""
        import json
        from parrot_jax import distributed as dist
        dist.initialize_multihost()
        from parrot_jax.extraction import extract
        summary = extract("demo", {str(demo_corpus)!r}, ["logmel-stats"], {str(tmp_path / "two")!r},
                          batch_size=4, progress=False)
        print(json.dumps({{"computed": summary.encoders[0].computed_files, "rows": summary.encoders[0].rows}}))
        """
    outs = _run_processes(code, 2)
    assert [o["computed"] for o in outs] == [12, 12]  # 6 chunks of 4 files: 3 chunks per host
    assert [o["rows"] for o in outs] == [24, 24]
    for suffix in (".npy", ".json", ".rejects.tsv"):
        name = f"logmel-stats{suffix}"
        assert (tmp_path / "two" / "demo" / name).read_bytes() == (tmp_path / "one" / "demo" / name).read_bytes()
    assert (tmp_path / "two" / "demo" / "manifest.json").read_bytes() == (tmp_path / "one" / "demo" / "manifest.json").read_bytes()
    assert not (tmp_path / "two" / "demo" / ".partial").exists()


def test_cli_devices_flag_is_checked_and_recorded(demo_corpus: Path, tmp_path: Path, monkeypatch, capsys):
    from parrot_jax.cli import main

    monkeypatch.delenv(dist.ENV_DEVICES, raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["--devices", "ids:9", "demo"])
    assert stop.value.code == 2
    assert "--devices: devices spec 'ids:9': ids must be distinct and among [0]; unknown [9]" in capsys.readouterr().err
    argv = ["--devices", "1", "extract", "--corpus", "demo", "--root", str(demo_corpus), "--encoders", "logmel-stats",
            "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert os.environ[dist.ENV_DEVICES] == "1"
    assert (tmp_path / "demo" / "logmel-stats.npy").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["step", "cell"])
def test_trainer_sharded_over_4_devices_equals_one_device(loop):
    """train_cell (PARROT, 5 folds x 2 seeds = 10 members -> 12 lanes on 4 devices, early stopping) gives the
    one-device predictions, metrics and epochs; params and probabilities within 1e-6 (float32 rounding);
    with the host loop of steps and with the whole cell in one device program."""
    code = (
        'import json\nimport jax, numpy as np\nfrom parrot_jax import distributed as dist\nfrom parrot_jax.models import ModelConfig\nfrom parrot_jax.splits import make_folds\nfrom parrot_jax.training import TrainConfig, train_cell\n\nrng = np.random.default_rng(0)\nlabels = rng.integers(0, 4, size=120)\nfeatures = [rng.normal(size=(120, 24)).astype(np.float32) + labels[:, None] * 0.3,\n            rng.normal(size=(120, 16)).astype(np.float32)]\nfolds = make_folds(labels, k=5)\nmodel = ModelConfig(num_classes=4, filters=(4, 8), latent_dim=8, hidden=8)\nconfig = TrainConfig(epochs=4, patience=1, monitor="loss", seeds=(0, 1), batch_size=16)\nout, seen = {}, {}\nfor name, devices in (("one", jax.devices()[:1]), ("all", jax.devices())):\n    lengths = []\n    r = train_cell("parrot", model, features, labels, folds, config,\n                   lambda e, st: lengths.append(len(st["active"])), mesh=dist.make_mesh(devices))\n    out[name], seen[name] = r, lengths\na, b = out["one"], out["all"]\nleaves = lambda r: jax.tree_util.tree_leaves(r.params)\nprint(json.dumps({\n    "members": len(b.runs),\n    "progress_lengths": sorted(set(seen["all"])),\n    "predictions": all(np.array_equal(x.predictions, y.predictions) for x, y in zip(a.runs, b.runs)),\n    "probabilities": all(np.array_equal(x.probabilities, y.probabilities) for x, y in zip(a.runs, b.runs)),\n    "epochs": [[x.best_epoch, x.epochs_run] for x in a.runs] == [[y.best_epoch, y.epochs_run] for y in b.runs],\n    "epochs_run": [x.epochs_run for x in b.runs],\n    "params": all(np.array_equal(p, q) for p, q in zip(leaves(a), leaves(b))),\n    "param_diff": max(float(np.abs(p - q).max()) for p, q in zip(leaves(a), leaves(b))),\n    "prob_diff": max(float(np.abs(x.probabilities - y.probabilities).max()) for x, y in zip(a.runs, b.runs)),\n    "param_lanes": int(leaves(b)[0].shape[0]),\n    "summary": a.summary() == b.summary(),\n}))\n'
    )
    out = run_with_devices(code.replace("batch_size=16)", f"batch_size=16, loop={loop!r})"))
    assert out["members"] == 10 and out["param_lanes"] == 10 and out["progress_lengths"] == [10]
    assert out["predictions"] and out["epochs"] and out["summary"], out
    assert out["param_diff"] <= 1e-6 and out["prob_diff"] <= 1e-6, out


# train_cell (PARROT, 5 folds x 2 seeds = 10 members, early stopping) on the default mesh; the process
# writes its params, probabilities, predictions and epochs to `out` (a path without the .npz).
TRAIN_CELL = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from parrot_jax import distributed as dist

    dist.initialize_multihost()
    from parrot_jax.models import ModelConfig
    from parrot_jax.ot import SinkhornOptions
    from parrot_jax.splits import make_folds
    from parrot_jax.training import TrainConfig, train_cell

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=120)
    features = [rng.normal(size=(120, 24)).astype(np.float32) + labels[:, None] * 0.3,
                rng.normal(size=(120, 16)).astype(np.float32)]
    sinkhorn = SinkhornOptions(max_iterations=20, threshold=None)  # cheap to compile
    model = ModelConfig(num_classes=4, filters=(4, 8), latent_dim=8, hidden=8, sinkhorn=sinkhorn)
    config = TrainConfig(epochs=4, patience=1, monitor="loss", seeds=(0, 1), batch_size=16)
    result = train_cell("parrot", model, features, labels, make_folds(labels, k=5), config)
    leaves = {f"param_{i}": a for i, a in enumerate(jax.tree_util.tree_leaves(result.params))}
    np.savez(sys.argv[1], **leaves, probabilities=np.stack([r.probabilities for r in result.runs]),
             predictions=np.stack([r.predictions for r in result.runs]),
             epochs=np.array([[r.best_epoch, r.epochs_run] for r in result.runs]))
    print(json.dumps({"process": jax.process_index(), "devices": dist.make_mesh().devices.size,
                      "members": len(result.runs)}))
    """
)


@pytest.mark.slow
def test_two_processes_train_a_cell_as_one_process_does(tmp_path: Path):
    """train_cell in 2 jax.distributed processes on localhost (2 CPU devices each: 10 members on 12 lanes
    of one 4-device mesh, 6 lanes per process) gives every process the one-process result: identical
    predictions and epochs, params and probabilities within 1e-6."""
    one = run_with_devices(TRAIN_CELL, devices=1, argv=[str(tmp_path / "one")])
    assert (one["devices"], one["members"]) == (1, 10)
    outs = _run_processes(TRAIN_CELL, 2, argv=lambda rank: [str(tmp_path / f"rank{rank}")])
    assert [(o["process"], o["devices"], o["members"]) for o in outs] == [(0, 4, 10), (1, 4, 10)]
    with np.load(tmp_path / "one.npz") as saved:
        reference = dict(saved)
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as saved:
            got = dict(saved)
        assert got.keys() == reference.keys()
        assert np.array_equal(got["predictions"], reference["predictions"])
        assert np.array_equal(got["epochs"], reference["epochs"])
        for name, value in reference.items():
            assert got[name].shape == value.shape, name
            assert np.abs(got[name] - value).max() <= 1e-6, name
