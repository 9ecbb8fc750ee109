"""The bad-input corpus (``tests/bad_inputs``) through every command that reads it.

A refused input gets exit status 1 (2 for a command-line usage error), one ``Error:`` line
naming the file, row and column where they apply, no traceback, nothing written (no run
folder, no output folder, no prepared copy) and its source files byte-identical. An accepted
input works.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from cervixnet.cli.main import main
from cervixnet.data.sources import default_cache_root
from tests.bad_inputs import (
    ACCEPTED,
    ERRORS,
    GOOD_IMAGE_FILES,
    IMAGE_FILES,
    NO_PRETERM,
    Case,
    manifest_rows,
)
from tests.conftest import TINY_CONFIG, write_tiny_dataset

DATA_COMMANDS = ("data validate", "data prepare", "train", "evaluate")


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (or of ``path`` itself)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def error_line(result: Result) -> str:
    """The one ``Error:`` line of a refused command, after checking there is exactly one."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def where(folder: Path, case: Case) -> str:
    """The beginning of a problem line: manifest, row and column."""
    text = str((folder / "manifest.csv").resolve())
    if case.row is not None:
        text += f", row {case.row}"
    if case.column is not None:
        text += f", column '{case.column}'"
    return text


def prepared_copies(folder: Path) -> list[Path]:
    """Prepared copies of the data set at ``folder`` in any cache (the test's or the session's)."""
    source = str((folder / "manifest.csv").resolve())
    roots = [folder.parent / "cache", default_cache_root()]
    return [
        info.parent
        for root in roots
        for info in root.glob("prepared/*/prepared.json")
        if json.loads(info.read_text())["source"] == source
    ]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write_tiny_dataset(folder)
    return folder


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def run_data_command(command: str, folder: Path, tmp_path: Path, request) -> tuple[Result, Path]:
    """Runs a command that reads the data set at ``folder``; returns its result and output."""
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    if command == "data validate":
        return invoke("data", "validate", folder), out
    if command == "data prepare":
        return invoke("data", "prepare", folder, "--out", out), out
    if command == "train":
        config = tmp_path / "tiny.yaml"
        config.write_text(TINY_CONFIG)
        args = ("--config", config, "--out", out, "--cache-dir", cache)
        return invoke("train", "--data", folder, *args), out
    run = request.getfixturevalue("tiny_run")  # its own data stays in the session's cache
    args = ("--split", "all", "--out", out, "--bootstrap", 100, "--gradcam", 0)
    return invoke("evaluate", run, "--data", folder, *args), out


# Data sets


@pytest.mark.parametrize("command", DATA_COMMANDS)
@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c.name)
def test_broken_data_set_is_refused_in_one_line(
    case: Case, command: str, data: Path, tmp_path: Path, request
):
    case.build(data)
    before = digest(data)
    result, out = run_data_command(command, data, tmp_path, request)
    line = error_line(result)
    if command == "data validate":
        problems = [ln for ln in result.stderr.splitlines() if not ln.startswith("Error:")]
        assert len(problems) == 1, result.stderr
        assert problems[0].startswith(where(data, case) + ": "), problems[0]
        assert case.expected in problems[0]
        assert line == f"Error: 1 problem(s) in {(data / 'manifest.csv').resolve()}"
    else:
        assert result.exit_code == 1
        assert line.startswith(f"Error: {where(data, case)}: "), line
        assert case.expected in line
        assert "more problem" not in line  # one case, one problem
    assert not out.exists()
    assert not prepared_copies(data)
    assert digest(data) == before


@pytest.mark.parametrize("command", ("data validate", "data prepare"))
@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_odd_but_valid_data_set_is_read(
    case: Case, command: str, data: Path, tmp_path: Path, request
):
    case.build(data)
    before = digest(data)
    result, out = run_data_command(command, data, tmp_path, request)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    if command == "data validate":
        assert "OK:" in result.output and "20 images of 10 patients" in result.output
    if command == "data prepare":
        prepared = manifest_rows(out)
        assert len(prepared) == 20
        row = prepared[2]
        image = cv2.imread(str(out / row["image"]), cv2.IMREAD_UNCHANGED)
        assert image.ndim == 2  # grayscale, whatever the source's channels
        if case.name.startswith("image-16-bit"):
            assert image.dtype == np.uint16
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        source = cv2.imread(str(data / "masks" / "p01_0.png"), cv2.IMREAD_GRAYSCALE)
        resized = cv2.resize(source, mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(mask, resized)  # an RGBA mask's alpha is not cervix
    assert digest(data) == before


def test_data_set_without_preterm_images(data: Path, tmp_path: Path, tiny_config: Path, request):
    """Valid (a segmentation data set), but the joint model needs both classes to train."""
    NO_PRETERM.build(data)
    before = digest(data)
    validated = invoke("data", "validate", data)
    assert validated.exit_code == 0 and "0 preterm" in validated.output
    run = tmp_path / "run"
    result = invoke("train", "--data", data, "--config", tiny_config, "--out", run)
    line = error_line(result)
    assert line.startswith(f"Error: {(data / 'manifest.csv').resolve()}: ")  # not the cache
    assert NO_PRETERM.expected in line and "(column 'label')" in line
    assert not run.exists()
    evaluated = invoke(
        "evaluate", request.getfixturevalue("tiny_run"), "--data", data, "--split", "all",
        "--out", tmp_path / "report", "--bootstrap", 100, "--gradcam", 0,
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert re.search(r"^auc +n/a", evaluated.output, re.MULTILINE)  # one class: no AUC
    assert digest(data) == before


def every_accepted_case(folder: Path) -> Path:
    """The tiny data set with every accepted row edit, each on its own 64 x 48 record, and a
    padded header."""
    write_tiny_dataset(folder)
    edits = [c for c in ACCEPTED if not c.name.startswith("manifest")]
    for position, case in zip(range(0, 20, 2), edits, strict=False):
        case.build(folder, position)
    ACCEPTED[-1].build(folder)
    return folder


def test_odd_but_valid_data_sets_are_evaluated(tiny_run: Path, tmp_path: Path):
    folder = every_accepted_case(tmp_path / "data")
    before = digest(folder)
    out = tmp_path / "report"
    result = invoke(
        "evaluate", tiny_run, "--data", folder, "--split", "all", "--out", out,
        "--bootstrap", 100, "--gradcam", 0,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Evaluating 20 images" in result.output and (out / "report.md").is_file()
    assert digest(folder) == before


@pytest.mark.slow
def test_odd_but_valid_data_sets_train(tmp_path: Path, tiny_config: Path):
    folder = every_accepted_case(tmp_path / "data")
    before = digest(folder)
    run = tmp_path / "run"
    result = invoke("train", "--data", folder, "--config", tiny_config, "--out", run)
    assert result.exit_code == 0, result.output
    assert (run / "model.keras").is_file()
    assert digest(folder) == before


# Image files given to predict and gradcam


@pytest.mark.parametrize("command", ("predict", "gradcam"))
@pytest.mark.parametrize("name", sorted(IMAGE_FILES))
def test_broken_image_file_is_refused(name: str, command: str, tiny_run: Path, tmp_path: Path):
    image = tmp_path / name
    image.write_bytes(IMAGE_FILES[name])
    good = tmp_path / "good.png"
    shutil.copy(tiny_run.parent / "data" / "images" / "p00_0.png", good)
    before = digest(tmp_path)
    out = tmp_path / "out"
    result = invoke(command, tiny_run, good, image, "--out", out)
    line = error_line(result)
    assert result.exit_code == 1
    assert line.startswith(f"Error: {image}: "), line
    assert not out.exists()
    assert digest(tmp_path) == before


def test_folder_given_as_an_image_is_refused(tiny_run: Path, tmp_path: Path):
    folder = tmp_path / "scans"
    folder.mkdir()
    result = invoke("predict", tiny_run, folder, "--out", tmp_path / "out")
    assert error_line(result) == f"Error: {folder}: a folder, not an image file"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(GOOD_IMAGE_FILES))
def test_odd_but_valid_image_file_is_predicted(name: str, tiny_run: Path, tmp_path: Path):
    image = tmp_path / "in" / name
    image.parent.mkdir()
    image.write_bytes(GOOD_IMAGE_FILES[name])
    before = digest(image)
    out = tmp_path / "out"
    result = invoke("predict", tiny_run, image, "--out", out)
    assert result.exit_code == 0, result.output
    mask = cv2.imdecode(
        np.fromfile(str(out / "masks" / f"{image.stem}.png"), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert mask.shape == (48, 64)  # the image's own size
    assert digest(image) == before


# Configurations

CONFIGS = {
    "epochs-not-a-number": ("training:\n  epochs: ten\n", "'training.epochs' must be an integer"),
    "epochs-zero": ("training:\n  epochs: 0\n", "'training.epochs' must be an integer >= 1"),
    "epochs-true": ("training:\n  epochs: true\n", "Received: True"),
    "learning-rate-negative": ("training:\n  learning_rate: -1\n", "a positive number"),
    "learning-rate-infinite": ("training:\n  learning_rate: .inf\n", "a finite number"),
    "loss-alpha-2": ("loss:\n  alpha: 2\n", "'loss.alpha' must be a number in [0, 1]"),
    "image-size-one-value": ("data:\n  image_size: [32]\n", "a list of 2 values"),
    "image-size-not-divisible": (
        "data:\n  image_size: [30, 30]\nmodel:\n  unet:\n    depth: 4\n"
        "  unet-joint:\n    depth: 4\n",
        "must be divisible by 16",
    ),
    "split-not-summing-to-1": ("data:\n  split: [0.5, 0.5, 0.5]\n", "summing to 1"),
    "channels-2": ("data:\n  channels: 2\n", "'data.channels' must be 1 (grayscale) or 3"),
    "seed-negative": ("seed: -1\n", "'seed' must be an integer in [0, 2**32)"),
    "path-a-number": ("data:\n  path: 3\n", "'data.path' must be a string or null"),
    "section-not-a-mapping": ("training: 3\n", "'training' must be a mapping"),
    "unknown-key": ("training:\n  epoch: 3\n", "did you mean 'training.epochs'?"),
    "unknown-architecture": ("arch: resnet\n", "'arch' must be one of unet, fcn, deeplabv3"),
    "architecture-wrong-case": ("arch: UNet\n", "Received: 'UNet'"),
    "builder-option-wrong-type": (
        "model:\n  unet-joint:\n    depth: four\n", "`depth` must be a positive int",
    ),
    "not-yaml": ("training: [\n", "not valid YAML (expected the node content"),
    "tab-indented": ("training:\n\tepochs: 3\n", "at line 2, column 1"),
    "top-level-list": ("- a\n- b\n", "expected a mapping of keys at the top level"),
}  # fmt: skip
"""Config files refused before anything is read or written: text and expected message."""

CONFIG_COMMANDS = ("train", "data prepare", "compare")


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_config_is_refused_in_one_line(name: str, command: str, data: Path, tmp_path: Path):
    text, expected = CONFIGS[name]
    config = tmp_path / "bad config é.yaml"
    config.write_text(text, encoding="utf-8")
    before = digest(tmp_path)
    out = tmp_path / "out"
    if command == "data prepare":
        result = invoke("data", "prepare", data, "--config", config, "--out", out)
    elif command == "compare":
        args = ("--archs", "unet,unet-joint", "--config", config, "--out", out)
        result = invoke("compare", "--data", data, *args)
    else:
        result = invoke("train", "--data", data, "--config", config, "--out", out)
    if command == "data prepare" and name in (
        "builder-option-wrong-type",
        "image-size-not-divisible",
    ):
        assert result.exit_code == 0, result.output  # prepare builds no model
        return
    line = error_line(result)
    assert result.exit_code == 1
    if "divisible" not in expected and "`depth`" not in expected:
        assert line.startswith(f"Error: {config}: "), line  # the model builder names the model
    assert expected in line, line
    assert not out.exists()
    assert digest(tmp_path) == before


def test_unknown_architecture_on_the_command_line(data: Path, tmp_path: Path):
    out = tmp_path / "out"
    usage = invoke("train", "--arch", "resnet", "--data", data, "--out", out)
    assert usage.exit_code == 2  # click's usage error
    assert "Invalid value for '--arch': 'resnet' is not one of" in error_line(usage)
    compared = invoke("compare", "--archs", "unet,resnet", "--data", data, "--out", out)
    assert compared.exit_code == 1
    assert "--archs must name distinct architectures" in error_line(compared)
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("arch: resnet\n", "'arch' must be one of"),
        ("training: [\n", "not valid YAML"),
    ],
    ids=["unknown-architecture", "not-yaml"],
)
@pytest.mark.parametrize("command", ("predict", "evaluate"))
def test_run_folder_with_a_broken_config_is_refused(
    text: str, expected: str, command: str, tiny_run: Path, tmp_path: Path
):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "splits.json", "operating_point.json"):
        shutil.copy(tiny_run / name, run / name)
    (run / "config.yaml").write_text(text)
    image = tiny_run.parent / "data" / "images" / "p00_0.png"
    before = digest(run)
    out = tmp_path / "out"
    if command == "predict":
        result = invoke("predict", run, image, "--out", out)
    else:
        result = invoke("evaluate", run, "--out", out)
    line = error_line(result)
    assert line.startswith(f"Error: {run / 'config.yaml'}: ") and expected in line, line
    assert not out.exists()
    assert digest(run) == before
