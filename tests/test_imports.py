"""The NumPy-only modules import neither Keras nor TensorFlow, so they serve any backend."""

import ast
import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "module",
    ["cervixnet.analysis", "cervixnet.ensemble", "cervixnet.data.letterbox",
     "cervixnet.data.fingerprint", "cervixnet.figures", "cervixnet.measure",
     "cervixnet.clinical"],
)  # fmt: skip
def test_module_imports_neither_keras_nor_tensorflow(module: str) -> None:
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name and name.split(".")[0] in ("keras", "tensorflow")}


def test_every_package_is_installed_by_setup_cfg() -> None:
    """A non-editable install ships only the packages setup.cfg lists; a missing one breaks it."""
    import configparser

    root = Path(__file__).resolve().parents[1]
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    on_disk = {
        ".".join(path.parent.relative_to(root).parts)
        for path in (root / "cervixnet").rglob("__init__.py")
    } | {"cervixnet.cli", "cervixnet.configs"}
    assert on_disk == listed, f"setup.cfg packages differ from the source: {on_disk ^ listed}"
