"""Resume, atomic run files and numerical faults (``cervixnet.training.checkpoint``)."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.config import load_config
from cervixnet.errors import ConfigError, DataError, TrainingError
from cervixnet.runs import resume_training, train
from cervixnet.training import checkpoint
from tests.conftest import TINY_RUN_CONFIG, write_tiny_dataset

EPOCHS = 3
# Dropout in the label branch, so that its random state has to be carried over too.
RESUME_CONFIG = {
    **TINY_RUN_CONFIG,
    "model.unet-joint": {"depth": 2, "classifier_units": [8], "classifier_dropout": 0.5},
    "training.epochs": EPOCHS,
}


class _KilledError(Exception):
    """Stands for the process dying after a checkpoint was written."""


def _history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _weights(path: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in keras.models.load_model(path).weights]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "data"
    write_tiny_dataset(folder, n_patients=12)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory) -> Path:
    config = load_config(overrides={**RESUME_CONFIG, "data.path": str(data)})
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(config, run_dir, verbose=0, echo=lambda _: None)
    return run_dir


def test_a_resumed_run_ends_exactly_as_the_uninterrupted_one(
    data: Path, uninterrupted: Path, tmp_path: Path, monkeypatch
):
    config = load_config(overrides={**RESUME_CONFIG, "data.path": str(data)})
    run_dir = tmp_path / "run"
    save_epoch = checkpoint.RunCheckpoint.on_epoch_end

    def dies_after_the_first_epoch(self, epoch, logs=None):
        save_epoch(self, epoch, logs)
        raise _KilledError

    monkeypatch.setattr(checkpoint.RunCheckpoint, "on_epoch_end", dies_after_the_first_epoch)
    with pytest.raises(_KilledError):
        train(config, run_dir, verbose=0, echo=lambda _: None)
    monkeypatch.undo()
    state = checkpoint.load_state(run_dir)
    assert state.epochs_done == 1 and len(_history(run_dir)) == 1
    assert not (run_dir / "metrics.json").exists()

    with pytest.raises(ConfigError, match="--resume"):  # a new run may not overwrite it
        train(config, run_dir, verbose=0, echo=lambda _: None)

    messages = []
    result = resume_training(run_dir, verbose=0, echo=messages.append)
    assert any("resumed after epoch 1" in m for m in messages)
    assert _history(run_dir) == _history(uninterrupted)  # same numbers, each epoch once
    for ours, theirs in zip(
        _weights(run_dir / "model.keras"), _weights(uninterrupted / "model.keras"), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    ours = json.loads((run_dir / "metrics.json").read_text())
    theirs = json.loads((uninterrupted / "metrics.json").read_text())
    assert ours["splits"] == theirs["splits"] and ours["best_epoch"] == theirs["best_epoch"]
    assert result.metrics["splits"] == theirs["splits"]
    assert not (run_dir / checkpoint.CHECKPOINT_DIR).exists()  # removed once complete

    with pytest.raises(ConfigError, match="complete"):
        resume_training(run_dir, verbose=0, echo=lambda _: None)


def test_resume_refuses_changed_data(data: Path, tmp_path: Path, monkeypatch):
    copy = tmp_path / "data"
    write_tiny_dataset(copy, n_patients=12)
    config = load_config(overrides={**RESUME_CONFIG, "data.path": str(copy)})
    monkeypatch.setattr(
        checkpoint.RunCheckpoint, "on_epoch_end", lambda *_: (_ for _ in ()).throw(_KilledError())
    )
    with pytest.raises(_KilledError):
        train(config, tmp_path / "run", verbose=0, echo=lambda _: None)
    monkeypatch.undo()
    image = copy / "images" / "p00_0.png"
    cv2.imwrite(str(image), np.full((48, 64), 7, np.uint8))  # another image, same name
    with pytest.raises(DataError, match="the data changed since the run started"):
        resume_training(tmp_path / "run", verbose=0, echo=lambda _: None)


def test_cli_resume_takes_no_other_settings(tmp_path: Path):
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run"), "--epochs", "3"])
    assert result.exit_code != 0 and "drop --epochs" in result.output
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run")])
    assert result.exit_code == 1 and "no config.yaml" in result.output
    assert "Traceback" not in result.output


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 2), np.float32)
    good, bad = np.zeros((8, 1), np.float32), np.zeros((8, 1), np.float32)
    bad[5] = np.nan  # the second batch of four
    state = checkpoint.TrainingState()
    callback = checkpoint.RunCheckpoint(tmp_path, "loss", state)
    fit = {"batch_size": 4, "callbacks": [callback], "shuffle": False, "verbose": 0}
    model.fit(x, good, epochs=1, **fit)
    kept = (tmp_path / "checkpoint" / state.weights).read_bytes()
    model.fit(x, bad, initial_epoch=1, epochs=3, **fit)
    assert callback.diverged[:2] == (1, 1) and math.isnan(callback.diverged[2])
    assert state.epochs_done == 1 and state.weights == "epoch-1.weights.h5"
    assert (tmp_path / "checkpoint" / state.weights).read_bytes() == kept
    assert len(_history(tmp_path)) == 1


def test_train_reports_the_epoch_and_batch_where_the_loss_diverged(tmp_path: Path, monkeypatch):
    write_tiny_dataset(tmp_path / "data", n_patients=12)
    config = load_config(overrides={**TINY_RUN_CONFIG, "data.path": str(tmp_path / "data")})
    # A loss that becomes infinite on the second batch of the second epoch.
    original = checkpoint.RunCheckpoint.on_train_batch_end

    def poisoned(self, batch, logs=None):
        if self._epoch == 1 and batch == 1:
            logs = {**(logs or {}), "loss": math.inf}
        original(self, batch, logs)

    monkeypatch.setattr(checkpoint.RunCheckpoint, "on_train_batch_end", poisoned)
    with pytest.raises(TrainingError, match=r"became inf at epoch 2, batch 2.*epoch 1 is kept"):
        train(config, tmp_path / "run", verbose=0, echo=lambda _: None)
    assert checkpoint.load_state(tmp_path / "run").epochs_done == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_full_disk_during_training_stops_with_the_reason_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch
):
    write_tiny_dataset(tmp_path / "data", n_patients=12)
    config = load_config(overrides={**TINY_RUN_CONFIG, "data.path": str(tmp_path / "data")})
    original = checkpoint.atomic_path

    def fills_up_at_the_second_epoch(path):
        if Path(path).name == "epoch-2.weights.h5":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(path)

    monkeypatch.setattr(checkpoint, "atomic_path", fills_up_at_the_second_epoch)
    with pytest.raises(TrainingError, match=r"epoch 2 .*No space left on device.*epoch 1 is kept"):
        train(config, tmp_path / "run", verbose=0, echo=lambda _: None)
    assert checkpoint.load_state(tmp_path / "run").epochs_done == 1


def test_unwritable_output_folder_fails_before_training(tmp_path: Path):
    write_tiny_dataset(tmp_path / "data", n_patients=12)
    config = load_config(overrides={**TINY_RUN_CONFIG, "data.path": str(tmp_path / "data")})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write there"):
        train(config, blocker / "run", verbose=0, echo=lambda _: None)


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder on a read-only file system (a tmpfs mounted read-only), or a skip."""
    folder = tmp_path / "read-only"
    _mount_tmpfs(folder, "ro,size=1m")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def full_folder(tmp_path: Path):
    """A folder on a file system with no space left (a small tmpfs, filled), or a skip."""
    folder = tmp_path / "full"
    _mount_tmpfs(folder, "size=256k")
    try:
        with contextlib.suppress(OSError), (folder / "filler").open("wb", buffering=0) as out:
            while True:
                out.write(b"\0" * 4096)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize(
    ("folder", "reason"),
    [("read_only_folder", "Read-only file system"), ("full_folder", "No space left on device")],
)
def test_unwritable_output_fails_before_training_with_the_reason(
    folder: str, reason: str, tmp_path: Path, request
):
    out = request.getfixturevalue(folder) / "run"
    write_tiny_dataset(tmp_path / "data", n_patients=12)
    arguments = ["train", "--data", str(tmp_path / "data"), "--out", str(out)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1
    assert f"cannot write there ({reason})" in result.output
    assert "Traceback" not in result.output and "Training" not in result.output
    assert not out.exists()


# Runs `cervixnet train` in a process that SIGKILLs itself at a chosen moment: at the N-th
# atomic rename of a file whose name contains PATTERN (its temporary file is then complete
# but not yet in place), or never.
_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    pattern, count = sys.argv[1], int(sys.argv[2])
    if pattern:
        import cervixnet.fileio as fileio
        rename, seen = fileio.os.replace, [0]

        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)

            def replace(self, source, target):
                if pattern in os.path.basename(str(target)):
                    seen[0] += 1
                    if seen[0] == count:
                        os.kill(os.getpid(), signal.SIGKILL)
                rename(source, target)

        fileio.os = _Os()
    from cervixnet.cli.main import main
    main(sys.argv[3:], standalone_mode=True)
    """
)


def _run_cli(tmp_path: Path, args: list[str], pattern: str = "", count: int = 0, **popen):
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, str(driver), pattern, str(count), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _wait(process: subprocess.Popen, limit: float = 300) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"cervixnet train did not finish in {limit} s:\n{output[-3000:]}")
    return process.returncode, output


@pytest.mark.slow
def test_killed_at_any_moment_the_run_resumes_and_completes(
    data: Path, uninterrupted: Path, tmp_path: Path
):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            data: {{image_size: [32, 32], augment: {{crop: 0.0}}}}
            model:
              base_filters: 4
              unet-joint: {{depth: 2, classifier_units: [8], classifier_dropout: 0.5}}
            training: {{batch_size: 8, epochs: {EPOCHS}}}
            """
        )
    )
    run_dir = tmp_path / "run"
    start = ["train", "--data", str(data), "--config", str(config), "--out", str(run_dir)]
    resume = ["train", "--resume", str(run_dir)]
    rng = np.random.default_rng(int(os.environ.get("CERVIXNET_KILL_SEED", "0")))

    def killed(process: subprocess.Popen, moment: str) -> None:
        code, output = _wait(process)
        assert code == -signal.SIGKILL, f"{moment}: exit {code}\n{output[-3000:]}"

    # 1. Mid-checkpoint of the first epoch: the best model written, not yet renamed.
    killed(_run_cli(tmp_path, start, "model.keras", 1), "best model")
    # 2. Mid-epoch: a random moment after the first checkpoint, before the next.
    process = _run_cli(tmp_path, resume)
    state_file = run_dir / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    killed(process, "mid-epoch")
    # 3. Mid-checkpoint: the next epoch's weights written, not yet renamed.
    killed(_run_cli(tmp_path, resume, ".weights.h5", 1), "weights")
    # 4. Mid-checkpoint: the weights renamed, the state that names them not yet.
    killed(_run_cli(tmp_path, resume, "state.json", 1), "state")
    # 5. Mid-evaluation: the predictions of the best model written, not yet renamed.
    killed(_run_cli(tmp_path, resume, "predictions.csv", 1), "evaluation")

    code, output = _wait(_run_cli(tmp_path, resume))
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert "Removed 1 half-written file(s)" in output  # the predictions of kill 5

    epochs = [int(row["epoch"]) for row in _history(run_dir)]
    assert epochs == list(range(EPOCHS))
    assert _history(run_dir) == _history(uninterrupted)
    keras.models.load_model(run_dir / "model.keras")
    assert json.loads((run_dir / "metrics.json").read_text())["splits"]
    assert not list(run_dir.rglob(".tmp-*"))
