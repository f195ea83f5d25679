"""The package as a whole: no import cycle among its modules (imports inside functions included), and the
wheel works installed, from any folder."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "parrot_jax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the parrot_jax modules it imports anywhere in its text}; ``from parrot_jax import x``
    counts as importing the module parrot_jax.x where x is one, else the package."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                if subs:
                    edges |= subs
                if len(subs) < len(node.names):
                    edges.add(node.module)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert "parrot_jax.grid" in graph["parrot_jax.cli"] and "parrot_jax.features" in graph["parrot_jax.extraction"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_importing_the_package_imports_nothing_else():
    """`import parrot_jax` (hence any of its modules) runs no code of other modules: no side effects."""
    assert import_graph()["parrot_jax"] == set()


@pytest.mark.slow
def test_the_installed_wheel_runs_from_an_empty_folder(tmp_path):
    """Build a wheel, install it into a fresh venv (the dependencies come from this environment's
    site-packages, parrot_jax from the wheel alone), run `parrot --help` and `parrot grid --dry-run` from an
    empty folder: the packaged configs and the paper's tables travel with the package."""
    source = tmp_path / "source"  # a copy, so that building leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    shutil.copytree(PACKAGE, source / "parrot_jax", ignore=shutil.ignore_patterns("__pycache__"))
    run = lambda *argv, **kw: subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # noqa: E731
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                str(source))
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("parrot_jax-*.whl")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    python = venv / "bin" / "python"
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # a plain path: no editable finder
    installed = run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel))
    assert installed.returncode == 0, installed.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(str(python), "-c", "import parrot_jax, parrot_jax.report as r; print(parrot_jax.__file__); "
                "print(len(r.read_paper_tables()))", cwd=empty, env=env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines()[0].startswith(str(site)) and int(where.stdout.splitlines()[1]) > 100
    helped = run(str(venv / "bin" / "parrot"), "--help", cwd=empty, env=env)
    assert helped.returncode == 0 and "verify-corpus" in helped.stdout, helped.stderr
    # the packaged configs are found and read; with no features yet, the dry run says so in one line
    dry = run(str(venv / "bin" / "parrot"), "grid", "--dry-run", cwd=empty, env=env)
    assert (dry.returncode, dry.stderr) == (1, "parrot grid: error: no features to run under features/ "
                                                "(run `parrot extract` first)\n"), dry.stderr
    demo = run(str(venv / "bin" / "parrot"), "grid", "--dry-run", "--config", "demo", cwd=empty, env=env)
    assert (demo.returncode, demo.stderr) == (1, "parrot grid: error: no features to run under results/demo/features/ "
                                                 "for the config's corpora (demo) (run `parrot extract` first)\n"), \
        demo.stderr
    assert list(empty.iterdir()) == []  # a dry run writes nothing
