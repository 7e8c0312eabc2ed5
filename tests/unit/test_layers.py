"""The package's layers (docs/ARCHITECTURE.md): no import cycle, counting imports inside functions, and every
import going down the map; parsing and planning never import torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pnp_ovss"

#: top to bottom; a module may import only from its own layer or below (the first matching prefix decides)
LAYERS = [
    ("entry points", ("cli", "segment", "app", "datasets.cli", "labels.cli", "prepare.cli", "backends.cli")),
    ("stages and search", ("stages", "search", "prepare", "report")),
    ("planning", ("plan", "config", "checks")),
    ("backends", ("backends",)),
    ("core", ("",)),
]


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module ``name`` imports, at the top or inside a function."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "":
        package = []
    found = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target if target in known else None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                absolute = "pnp_ovss" + ("." + module if module else "")
            else:
                absolute = node.module or ""
            targets = [f"{absolute}.{a.name}" for a in node.names] or [absolute]
        for target in targets:
            if target == "pnp_ovss" or target.startswith("pnp_ovss."):
                resolved = resolve(target.removeprefix("pnp_ovss").lstrip("."))
                if resolved is not None and resolved != name:
                    found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "" or module == prefix or module.startswith(prefix + "."):
                return rank
    raise AssertionError(module)


def test_the_import_graph_is_read_right():
    graph = import_graph()
    assert "backends.blip" in graph["backends.bridgetower"]  # a top-level relative import
    assert "backends.clip" in graph["backends.cli"]  # one inside a function
    assert "gradcam" in graph["backends.base"]  # ``from ..gradcam import``


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


def test_every_import_goes_down_the_layers():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in sorted(import_graph().items())
        for d in sorted(deps)
        if layer_of(d) < layer_of(m)
    ]
    assert upward == []


def test_parsing_and_planning_never_import_torch():
    code = (
        "import sys\n"
        "import pnp_ovss.plan, pnp_ovss.config, pnp_ovss.checks, pnp_ovss.backends, pnp_ovss.backends.checkpoints\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_rules_import_no_torch_at_parse():
    root = PACKAGE.parents[1]
    parsed = [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]
    assert [p.name for p in parsed if "import torch" in p.read_text(encoding="utf-8")] == []


def test_a_gpu_is_seen_without_torch(tmp_path):
    from pnp_ovss.config import gpu_visible

    assert gpu_visible({}, root=str(tmp_path)) is False
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidiactl").touch()  # the driver's control device is no GPU
    assert gpu_visible({}, root=str(tmp_path)) is False
    (tmp_path / "dev" / "nvidia0").touch()
    assert gpu_visible({}, root=str(tmp_path)) is True
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, root=str(tmp_path)) is False
    (tmp_path / "dev" / "nvidia0").unlink()
    (tmp_path / "proc" / "driver" / "nvidia" / "gpus" / "0000:17:00.0").mkdir(parents=True)
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": "0"}, root=str(tmp_path)) is True
