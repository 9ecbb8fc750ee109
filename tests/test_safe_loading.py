"""Untrusted files: hostile `.keras` models, YAML tags, pickle in the source, escaping paths."""

from __future__ import annotations

import ast
import shutil
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.config import default_config, load_config, save_config
from cervixnet.errors import ConfigError, DataError, UnsafeModelError, inside_folder
from cervixnet.inference import load_model
from cervixnet.model_file import embedded_python, load_keras_model
from cervixnet.reporting import load_run
from tests.conftest import rewrite_manifest, write_tiny_dataset

REPOSITORY = Path(__file__).resolve().parents[1]
SIZE = 16


def _touching(marker: str):
    """A lambda that leaves ``marker`` behind when it runs: proof that file code executed."""
    return lambda t: (__import__("pathlib").Path(marker).touch(), t)[1]


def _save_model(path: Path, marker: Path | None, joint: bool = True) -> Path:
    images = keras.Input((SIZE, SIZE, 1), name="images")
    x = keras.layers.Conv2D(2, 3, padding="same", name="features")(images)
    if marker is not None:
        x = keras.layers.Lambda(_touching(str(marker)), name="innocent_looking")(x)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    outputs = [mask]
    if joint:
        pooled = keras.layers.GlobalAveragePooling2D(name="label_pool")(x)
        outputs.append(keras.layers.Dense(1, activation="sigmoid", name="label")(pooled))
    keras.Model(images, outputs, name="tiny").save(path)
    if marker is not None:
        marker.unlink(missing_ok=True)  # building the model called the lambda once
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A hostile joint model (its Lambda touches ``marker`` when run), and a clean one."""
    folder = tmp_path_factory.mktemp("models")
    marker = folder / "code-ran"
    hostile = _save_model(folder / "hostile.keras", marker)
    run = folder / "hostile-run"  # what `cervixnet evaluate` reads: config.yaml + model.keras
    run.mkdir()
    config = default_config().replace({"data.image_size": [SIZE, SIZE]})
    save_config(config, run / "config.yaml")
    shutil.copy(hostile, run / "model.keras")
    clean = _save_model(folder / "clean.keras", None)
    images = folder / "images"
    images.mkdir()
    cv2.imwrite(str(images / "scan.png"), np.full((20, 24), 128, np.uint8))
    return {
        "hostile": hostile,
        "run": run,
        "clean": clean,
        "marker": marker,
        "image": images / "scan.png",
    }


def _one_line_failure(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    return message


# --- .keras models -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{model}", "{image}", "--out", "{out}"],
        ["gradcam", "{model}", "{image}", "--out", "{out}"],
        ["evaluate", "{run}", "--out", "{out}"],
        ["export", "{model}", "--out", "{out}"],
        ["export", "{model}", "--out", "{out}.onnx", "--format", "onnx"],
    ],
    ids=["predict", "gradcam", "evaluate", "export", "export-onnx"],
)
def test_a_model_with_python_code_is_refused_by_default(models, tmp_path, command):
    out = tmp_path / "out"
    values = {"model": models["hostile"], "run": models["run"], "image": models["image"]}
    args = [part.format(out=out, **values) for part in command]
    message = _one_line_failure(CliRunner().invoke(main, args))
    assert "model.keras" in message or "hostile.keras" in message
    assert "refused to load" in message and "Python code" in message
    assert "Lambda layer 'innocent_looking'" in message and "--unsafe" in message
    assert not models["marker"].exists(), "the file's code ran"
    assert not list(tmp_path.iterdir()), "a refused command wrote something"


def test_library_functions_refuse_by_default(models):
    for load in (
        lambda: load_keras_model(models["hostile"]),
        lambda: load_model(models["hostile"]),
        lambda: load_run(models["run"]),
    ):
        with pytest.raises(UnsafeModelError, match="would run with your permissions"):
            load()
    assert embedded_python(models["hostile"]) == ["Lambda layer 'innocent_looking'"]
    assert embedded_python(models["clean"]) == []
    assert not models["marker"].exists()


def test_unsafe_loads_that_file_for_that_call_only(models, tmp_path):
    from keras.src.saving import serialization_lib

    before = serialization_lib.in_safe_mode()
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["predict", str(models["hostile"]), str(models["image"]), "--out", str(out), "--unsafe"],
    )
    assert result.exit_code == 0, result.output
    assert (out / "masks" / "scan.png").is_file()
    assert models["marker"].exists(), "--unsafe should have let the file's code run"
    models["marker"].unlink()
    # Safe mode is back, in cervixnet and in Keras itself.
    assert serialization_lib.in_safe_mode() == before
    with pytest.raises(UnsafeModelError):
        load_model(models["hostile"])
    with pytest.raises(ValueError, match="arbitrary code execution"):
        keras.saving.load_model(models["hostile"])
    assert not models["marker"].exists()


def test_refusal_does_not_depend_on_keras_global_switch(models):
    from keras.src.saving.serialization_lib import SafeModeScope

    # As if some other code had called keras.config.enable_unsafe_deserialization().
    with SafeModeScope(False), pytest.raises(UnsafeModelError):
        load_keras_model(models["hostile"])
    assert not models["marker"].exists()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _broken_files(folder: Path, clean: Path) -> dict[str, tuple[Path, str]]:
    data = clean.read_bytes()
    with zipfile.ZipFile(clean) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    other.save(folder / "not-cervixnet.keras")
    return {
        "empty": (_write(folder / "empty.keras", b""), "not a .keras model file"),
        "not a zip": (_write(folder / "text.keras", b"hello"), "not a .keras model file"),
        "truncated": (_write(folder / "half.keras", data[: len(data) // 2]), "truncated"),
        "no config": (
            _zip(folder / "noconfig.keras", {"metadata.json": b"{}"}),
            "has no config.json",
        ),
        "bad json": (
            _zip(folder / "badjson.keras", {**members, "config.json": b"{not json"}),
            "corrupt .keras model file",
        ),
        "bad weights": (
            _zip(folder / "badweights.keras", {**members, "model.weights.h5": b"garbage"}),
            "cannot be loaded as a Keras model",
        ),
        "not cervixnet": (folder / "not-cervixnet.keras", "not a cervixnet model"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_broken_or_foreign_model_files_get_one_line(models, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    for case, (path, expected) in _broken_files(folder, models["clean"]).items():
        out = tmp_path / f"out-{path.stem}"
        result = CliRunner().invoke(
            main, ["predict", str(path), str(models["image"]), "--out", str(out)]
        )
        message = _one_line_failure(result)
        assert str(path) in message and expected in message, (case, message)
        with pytest.raises(ConfigError, match=expected):
            load_keras_model(path)


def test_clean_model_loads_in_safe_mode(models, tmp_path):
    loaded = load_model(models["clean"])
    assert loaded.joint and sorted(loaded.model.output_names) == ["label", "mask"]


def test_a_trained_run_loads_in_safe_mode(tiny_run):
    assert embedded_python(tiny_run / "model.keras") == []
    _, model, _ = load_run(tiny_run)
    assert sorted(model.output_names) == ["label", "mask"]


def test_unsafe_is_documented_in_help():
    for command in ("predict", "gradcam", "evaluate", "export"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "--unsafe" in result.output and "permissions" in result.output


# --- YAML --------------------------------------------------------------------------------


def test_yaml_python_tags_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "yaml-code-ran"
    config = tmp_path / "hostile.yaml"
    config.write_text(f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    refused = r"hostile\.yaml: not valid YAML \(.* at line 1, column \d+\)"
    with pytest.raises(ConfigError, match=refused):
        load_config(config)
    message = _one_line_failure(
        CliRunner().invoke(main, ["train", "--config", str(config), "--out", str(tmp_path / "r")])
    )
    assert "hostile.yaml" in message
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


# --- the source ----------------------------------------------------------------------------

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve"}


def _unsafe_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            for name in names:
                if name.split(".")[0] in BANNED_MODULES | {"joblib"}:
                    found.append((node.lineno, f"imports {name}"))
        elif isinstance(node, ast.Name) and node.id in BANNED_MODULES:
            found.append((node.lineno, f"uses {node.id}"))
        elif isinstance(node, ast.Attribute):
            if node.attr in {"enable_unsafe_deserialization", "unsafe_load", "full_load"}:
                found.append((node.lineno, f"calls .{node.attr}"))
            if node.attr in {"Loader", "UnsafeLoader", "FullLoader"}:
                found.append((node.lineno, f"uses yaml.{node.attr}"))
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr == "load" and base in {"yaml", "joblib", "torch"}:
                found.append((node.lineno, f"calls {base}.load (use yaml.safe_load)"))
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in {"eval", "exec", "compile"}:
                found.append((node.lineno, f"calls {node.func.id}()"))
            for keyword in node.keywords:
                value = getattr(keyword.value, "value", None)
                if keyword.arg == "allow_pickle" and value is not False:
                    found.append((node.lineno, "np.load with allow_pickle not False"))
                if keyword.arg == "safe_mode" and value is False:
                    found.append((node.lineno, "loads with safe_mode=False"))
    return found


def test_scanner_finds_what_it_looks_for():
    source = (
        "import pickle\nfrom joblib import load\nyaml.load(s)\nyaml.full_load(s)\n"
        "eval('1')\nexec('x')\nnp.load(f, allow_pickle=True)\n"
        "keras.config.enable_unsafe_deserialization()\nload_model(p, safe_mode=False)\n"
        "import marshal\nimport shelve\nimport dill\n"
        "import yaml\nyaml.safe_load(s)\nnp.load(f, allow_pickle=False)\nmodel.compile()\n"
    )
    lines = {line for line, _ in _unsafe_uses(ast.parse(source))}
    assert lines == set(range(1, 13))


def test_no_pickle_eval_or_unsafe_loading_in_the_package():
    problems = []
    for folder in ("cervixnet", "cli"):
        for path in sorted((REPOSITORY / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            relative = path.relative_to(REPOSITORY)
            problems += [f"{relative}:{line}: {what}" for line, what in _unsafe_uses(tree)]
    assert not problems, "\n".join(problems)


# --- writes stay inside the output folder ----------------------------------------------------


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_dir()}


def _escaping_inputs(tmp_path: Path) -> tuple[Path, list[str]]:
    """A data set whose rows point outside it: ``../elsewhere/...``, absolute, a symlink."""
    data = tmp_path / "work" / "data"
    manifest = write_tiny_dataset(data)
    elsewhere = tmp_path / "work" / "elsewhere"
    elsewhere.mkdir()
    for name in ("p00_0.png", "p01_0.png", "p02_0.png"):
        shutil.move(data / "images" / name, elsewhere / name)
    (data / "images" / "p02_0.png").symlink_to(elsewhere / "p02_0.png")
    targets = {
        "images/p00_0.png": "../elsewhere/p00_0.png",
        "images/p01_0.png": str(elsewhere / "p01_0.png"),
        "masks/p03_0.png": "masks/../../elsewhere/../data/masks/p03_0.png",
    }

    def edit(fieldnames, rows):
        for row in rows:
            row["image"] = targets.get(row["image"], row["image"])
            row["mask"] = targets.get(row["mask"], row["mask"])
        return fieldnames, rows

    rewrite_manifest(manifest, edit)
    inputs = [
        str(data / ".." / "elsewhere" / "p00_0.png"),
        str(elsewhere / "p01_0.png"),
        str(data / "images" / "p02_0.png"),
    ]
    return data, inputs


def test_prepare_keeps_writes_inside_out_for_escaping_manifest_rows(tmp_path):
    data, _ = _escaping_inputs(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "work" / "prepared"
    result = CliRunner().invoke(main, ["data", "prepare", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = _files(tmp_path) - before
    assert written and all(p.is_relative_to(out) for p in written), sorted(written)
    assert len(list((out / "images").iterdir())) == 20
    assert _files(data) | _files(tmp_path / "work" / "elsewhere") <= before


@pytest.mark.parametrize("command", ["predict", "gradcam"])
def test_predict_and_gradcam_keep_writes_inside_out(tiny_run, tmp_path, command):
    _, inputs = _escaping_inputs(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "work" / "out"
    result = CliRunner().invoke(main, [command, str(tiny_run), *inputs, "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = _files(tmp_path) - before
    assert written and all(p.is_relative_to(out) for p in written), sorted(written)
    names = {p.name for p in written if p.suffix == ".png"}
    assert names == {"p00_0.png", "p01_0.png", "p02_0.png"}


def test_evaluate_keeps_writes_inside_out_and_the_cache(tiny_run, tmp_path):
    data, _ = _escaping_inputs(tmp_path)
    before = _files(tmp_path)
    out, cache = tmp_path / "work" / "report", tmp_path / "cache"
    args = ["evaluate", str(tiny_run), "--data", str(data), "--split", "all", "--out", str(out)]
    result = CliRunner().invoke(
        main, [*args, "--cache-dir", str(cache), "--bootstrap", "100", "--gradcam", "2"]
    )
    assert result.exit_code == 0, result.output
    written = _files(tmp_path) - before
    assert all(p.is_relative_to(out) or p.is_relative_to(cache) for p in written), written
    assert (out / "report.md").is_file() and list((out / "gradcam").iterdir())


def test_export_writes_nothing_through_a_symbolic_link(tiny_run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "exports"
    base.mkdir()
    (base / "1").symlink_to(outside / "version")  # dangling: would be created by a rename
    (base / "cervix.json").symlink_to(outside / "metadata.json")
    saved = CliRunner().invoke(main, ["export", str(tiny_run), "--out", str(base)])
    assert "version 1 already exists" in _one_line_failure(saved)
    onnx = ["export", str(tiny_run), "--out", str(base / "cervix.onnx"), "--format", "onnx"]
    assert "exists" in _one_line_failure(CliRunner().invoke(main, onnx))
    assert not list(outside.iterdir())
    assert sorted(p.name for p in base.iterdir()) == ["1", "cervix.json"]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.png", True),
        ("masks/a.png", True),
        ("...png", True),
        ("../a.png", False),
        ("masks/../../a.png", False),
        ("/tmp/a.png", False),
        ("link/a.png", False),
    ],
)
def test_inside_folder(tmp_path, name, ok):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    if ok:
        assert inside_folder(out, name) == out / name
    else:
        with pytest.raises(DataError, match="outside"):
            inside_folder(out, name)
