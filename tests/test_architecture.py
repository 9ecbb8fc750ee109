"""The library's imports flow one way (docs/architecture.md): no cycle, nothing importing upward.

Read from the source with ``ast``, so imports inside functions count as much as those at the
top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layers in the order data flows; a module may import its own layer and those before it.
LAYERS = {
    "config": ["cervixnet", "cervixnet.checks", "cervixnet.config", "cervixnet.errors",
               "cervixnet.fileio", "cervixnet.run_folder"],
    "data": ["cervixnet.data"],
    "models": ["cervixnet.models"],
    "losses/metrics": ["cervixnet.losses", "cervixnet.metrics", "cervixnet.model_file"],
    "training": ["cervixnet.training"],
    "evaluation": ["cervixnet.analysis", "cervixnet.ensemble", "cervixnet.evaluation",
                   "cervixnet.measure", "cervixnet.reporting", "cervixnet.figures",
                   "cervixnet.clinical"],
    "runs": ["cervixnet.runs"],
    "explanation": ["cervixnet.explain"],
    "export": ["cervixnet.export_metadata", "cervixnet.inference", "cervixnet.export",
               "cervixnet.serving"],
    "cli": ["cervixnet.cli"],
}  # fmt: skip
ORDER = list(LAYERS)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / "cervixnet").rglob("*.py")) + sorted((ROOT / "cli").glob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "cli":  # installed as cervixnet.cli
            parts = ["cervixnet", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _layer(module: str) -> int:
    matches = [
        (len(prefix), ORDER.index(layer))
        for layer, prefixes in LAYERS.items()
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer: place it in LAYERS and docs/architecture.md"
    return max(matches)[1]


def _imports(module: str) -> set[str]:
    """The cervixnet modules that ``module`` imports anywhere in its source."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])  # fmt: skip
            # `from package import submodule` imports the submodule, not the package.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]  # fmt: skip
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name != "cervixnet":
                found.add(name)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_module_imports_a_later_layer():
    upward = {
        (module, imported)
        for module, imports in GRAPH.items()
        for imported in imports
        if _layer(imported) > _layer(module)
    }
    assert upward == set(), "upward imports: see docs/architecture.md"


def test_no_import_cycle():
    # Tarjan's strongly connected components: a component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in GRAPH[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from cervixnet.data import manifest\n", {"cervixnet.data.manifest"}),
        ("def f():\n    from cervixnet import export\n", {"cervixnet.export"}),
        ("import cervixnet.training.fit as t\n", {"cervixnet.training.fit"}),
    ],
)
def test_the_reader_sees_every_form_of_import(source, expected, tmp_path, monkeypatch):
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "cervixnet.probe", path)
    assert _imports("cervixnet.probe") == expected
