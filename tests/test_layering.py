"""The package's structure drawn from its own imports (function-level ones included): no module imports, directly
or through others, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_kd"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its code (package `__init__` files left out: they
    only re-export)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        package = name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets.update(t for t in [module, *(f"{module}.{a.name}" for a in node.names)] if t in modules)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in modules)
        graph[name] = {t for t in targets if t != name and modules[t].name != "__init__.py"}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_detector_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_back_a_module_that_imports_it():
    graph = import_graph()
    assert "hf_kd.evaluation.loading" in graph["hf_kd.evaluation.indexing"]
    assert circles(graph) == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between the package's sub-packages and top-level modules (`hf_kd.data`, `hf_kd.jobs`...)."""

    def floor(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(floor(module), set()).update(floor(t) for t in targets if floor(t) != floor(module))
    return packages


def test_the_packages_stand_in_floors_and_the_jobs_share_their_stages():
    graph = import_graph()
    packages = package_graph(graph)
    # no arrow from a lower floor to a higher one: the packages' imports have no circle either
    assert circles(packages) == []
    assert "hf_kd.data" in packages["hf_kd.training"] and "hf_kd.training" not in packages["hf_kd.data"]
    # adapt and reproduce are two jobs over the same stages, not one job built on the other
    assert "hf_kd.reproduce" not in packages["hf_kd.adapt"] and "hf_kd.adapt" not in packages["hf_kd.reproduce"]
    assert "hf_kd.training.stage" in graph["hf_kd.adapt.pipeline"] & graph["hf_kd.reproduce.stages"]
    # and keep their evaluations with the one owner of the evaluation report
    assert "hf_kd.evaluation.reports" in graph["hf_kd.adapt.evaluation"] & graph["hf_kd.reproduce.evaluation"]


def test_training_asks_the_data_package_for_its_rows_once(tmp_path, ci_data):
    """Following the training data from `run_training`'s arguments: training enters the data package once, which
    reads the rows and makes every check (the loss's refusals included); the chain of modules comes back to a module
    it had left at most 8 times (it did 25 times when the checks were spread over both packages)."""
    import sys

    from transformers import TrainingArguments

    from hf_kd.training.arguments import HfKdArguments
    from hf_kd.training.run import _training_dataset

    args = HfKdArguments(
        architecture="bert_dot",
        backbone="unused",
        loss="ranknet",
        train_files=[str(ci_data / "msmarco-train-100.triples.tsv")],
    )
    chain: list[str] = []

    def module_of(frame) -> str | None:
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if name.startswith("hf_kd."):
                return name
            frame = frame.f_back
        return None

    def follow(frame, event, arg):
        if event in ("call", "return"):
            module = module_of(frame)
            if module and (not chain or chain[-1] != module):
                chain.append(module)

    sys.setprofile(follow)
    try:
        _training_dataset(args, TrainingArguments(output_dir=str(tmp_path), report_to="none"), None)
    finally:
        sys.setprofile(None)
    packages = [".".join(module.split(".")[:2]) for module in chain]
    packages = [p for i, p in enumerate(packages) if i == 0 or packages[i - 1] != p]
    assert packages == ["hf_kd.training", "hf_kd.data", "hf_kd.training"], chain
    returns = sum(module in chain[:i] for i, module in enumerate(chain))
    assert returns <= 8, chain
