"""The package's shape: data flows one way (library → experiments → cli), with no import cycle.

Imports are read from the source with ``ast``, function-level imports included (a lazy import is
still a dependency). An edge from a module to one of its own parent packages is not counted:
Python imports the parents first in any case, and ``from ddl import __version__`` is no design
dependency.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "ddl"

CLI = {"ddl.cli", "ddl.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


#: The experiments layer (the package ``ddl.experiments``); with the CLI above, everything else in
#: ddl is the library.
EXPERIMENTS = {_module_name(p) for p in (PKG / "experiments").rglob("*.py")}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` names (``ddl.data.DATASETS`` → ``ddl.data``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                if not t.startswith("ddl"):
                    continue
                dep = _resolve(t, modules)
                if dep and dep != mod and not mod.startswith(dep + "."):
                    graph[mod].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycle_in_ddl_counting_function_level_imports():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_library_imports_no_experiment_module_and_experiments_never_import_the_cli():
    graph = import_graph()
    upward = [(m, d) for m, deps in graph.items() for d in deps
              if (m not in EXPERIMENTS | CLI and d in EXPERIMENTS | CLI) or (m in EXPERIMENTS and d in CLI)]
    assert not upward, f"imports against the flow library → experiments → cli: {upward}"


def test_the_experiments_layer_is_one_package():
    assert EXPERIMENTS == {"ddl.experiments"} | {f"ddl.experiments.{m}" for m in (
        "config", "pipeline", "reproduce", "tune", "figures", "figure_data", "report", "_blocks",
        "robustness_report", "robustness_run", "robust_training_report")}
    top = {m for m in _modules() if m.count(".") == 1}
    assert not top & {f"ddl.{m.rpartition('.')[2]}" for m in EXPERIMENTS - {"ddl.experiments"}}, top


def test_config_imports_no_application_module():
    deps = import_graph()["ddl.experiments.config"]
    assert not deps & (EXPERIMENTS | CLI), deps



def test_figures_and_report_draw_from_saved_files_only():
    """Redrawing a figure never trains a model, fits a dictionary or runs an attack."""
    graph = import_graph()
    for mod in ("ddl.experiments.figures", "ddl.experiments.report"):
        assert not graph[mod] & {"ddl.experiments.pipeline", "ddl.experiments.reproduce", "ddl.experiments.tune",
                                 "ddl.experiments.figure_data", "ddl.models",
                                 "ddl.models.train", "ddl.attacks", "ddl.defence", "ddl.sparse"}, (mod, graph[mod])


def test_import_ddl_is_cheap_and_reaches_every_subpackage():
    """``import ddl`` loads no torch (``ddl --help``, the report code); ``ddl.zoo`` and the other
    sub-packages are then reachable as attributes, imported on first use (issue 20)."""
    import subprocess
    import sys

    names = ["attacks", "data", "defence", "metrics", "models", "robustness", "sparse", "zoo"]
    code = ("import sys, ddl\n"
            "assert 'torch' not in sys.modules, 'import ddl imported torch'\n"
            "assert set(%r) <= set(dir(ddl)), dir(ddl)\n"
            "print(' '.join(getattr(ddl, n).__name__ for n in %r))\n"
            "print(ddl.zoo.load_defence.__name__, ddl.DictionaryDenoiser.__name__)\n"
            "try:\n"
            "    ddl.zooo\n"
            "except AttributeError as e:\n"
            "    print(e)\n") % (names, names)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [" ".join(f"ddl.{n}" for n in names), "load_defence DictionaryDenoiser",
                                        "module 'ddl' has no attribute 'zooo' (did you mean 'zoo'?)"]
