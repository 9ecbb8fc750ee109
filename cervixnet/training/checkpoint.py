"""What a run keeps after every epoch, so that a killed run resumes exactly where it stopped.

``RUN_DIR/checkpoint/`` holds:

- ``state.json``: epochs completed, the best value of the monitored quantity and its epoch,
  the history of every epoch, the data fingerprint, the states of the model's random seed
  generators (dropout), and the name of the weights file;
- ``epoch-<n>.weights.h5``: model and optimiser variables after epoch ``n`` (Adam moments and
  step count included, so the learning-rate schedule continues where it was).

Every file is written to a temporary file and renamed (``cervixnet.fileio``), and
``state.json`` is replaced only after the weights it names are complete, so a kill at any
moment leaves a consistent checkpoint: that of the last completed epoch, or of none.
``RunCheckpoint`` also writes ``model.keras`` (the best epoch) and ``history.csv`` atomically
and stops the run at the first non-finite loss without touching the last good checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cervixnet import run_folder
from cervixnet.errors import DataError, TrainingError
from cervixnet.fileio import atomic_path, atomic_write_json, atomic_write_text

CHECKPOINT_DIR = run_folder.CHECKPOINT
STATE_NAME = "state.json"
_SEED_STATE = "seed_generator_state"


@dataclasses.dataclass
class TrainingState:
    """Where a run stands after ``epochs_done`` complete epochs (see the module docstring)."""

    epochs_done: int = 0
    best: float | None = None
    best_epoch: int | None = None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    seed_states: list[tuple[str, list[int]]] = dataclasses.field(default_factory=list)
    data_fingerprint: str | None = None

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / CHECKPOINT_DIR / STATE_NAME, dataclasses.asdict(self))


def load_state(run_dir: str | Path) -> TrainingState | None:
    """The state saved in ``run_dir/checkpoint``, or ``None`` if the run saved none.

    Raises:
        DataError: the state file is not a cervixnet training state, or names weights that
            are missing.
    """
    path = Path(run_dir) / CHECKPOINT_DIR / STATE_NAME
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        state = TrainingState(**payload)
    except (ValueError, TypeError) as error:
        raise DataError(f"{path}: not a cervixnet training state ({error})") from None
    if state.weights is not None and not (path.parent / state.weights).is_file():
        raise DataError(f"{path}: names weights {state.weights!r}, which are missing")
    return state


def restore(model: keras.Model, run_dir: str | Path, state: TrainingState) -> None:
    """Loads the weights, optimiser variables and seed-generator states of ``state``."""
    if state.weights is None:
        return
    # The optimiser's variables exist only once it is built; load_weights then fills them.
    model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(run_dir) / CHECKPOINT_DIR / state.weights)
    # Matched by position: names of seed generators depend on how many models the process
    # built before, their order only on the architecture.
    variables = _seed_variables(model)
    if len(state.seed_states) != len(variables):
        raise DataError(
            f"{Path(run_dir) / CHECKPOINT_DIR / STATE_NAME}: its random seed generators do "
            "not match the model's; was the configuration changed?"
        )
    for variable, (_, value) in zip(variables, state.seed_states, strict=True):
        variable.assign(np.asarray(value, variable.dtype))


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """Writes ``history.csv`` (``epoch`` from 0, then the logged values in sorted order)."""
    names = sorted(history)
    rows = max((len(v) for v in history.values()), default=0)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["epoch", *names])
    for epoch in range(rows):
        writer.writerow([epoch, *(history[name][epoch] for name in names)])
    atomic_write_text(path, text.getvalue())


class RunCheckpoint(keras.callbacks.Callback):
    """Saves the run's state after every epoch; see the module docstring.

    Args:
        run_dir: the run folder.
        monitor: the logged quantity that picks the best epoch for ``model.keras``.
        state: the state to continue from (a new ``TrainingState`` for a new run).
    """

    def __init__(self, run_dir: str | Path, monitor: str, state: TrainingState) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.state = state
        self.lower_is_better = "loss" in monitor
        self.diverged: tuple[int, int, float] | None = None
        self._epoch = state.epochs_done

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.diverged is None:
            self.diverged = (self._epoch, batch, float(loss))
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.diverged is not None:
            return  # the last good checkpoint stays as it is
        done = self.state.epochs_done
        try:
            self._save(epoch, logs)
        except OSError as error:
            kept = f"the checkpoint of epoch {done} is kept" if done else "no checkpoint is kept"
            raise TrainingError(
                f"cannot write the checkpoint of epoch {epoch + 1} in {self.run_dir} "
                f"({error.strerror or error}); {kept}: make room, then continue with "
                f"--resume {self.run_dir}"
            ) from None

    def _save(self, epoch: int, logs: dict | None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        state = self.state
        for name, value in logs.items():
            state.history.setdefault(name, [math.nan] * epoch).append(value)
        current = logs.get(self.monitor)
        if current is not None and math.isfinite(current) and self._improves(current):
            state.best, state.best_epoch = current, epoch + 1
            with atomic_path(self.run_dir / run_folder.MODEL) as temporary:
                self.model.save(temporary)
        folder = self.run_dir / CHECKPOINT_DIR
        previous = state.weights
        state.weights = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(folder / state.weights) as temporary:
            self.model.save_weights(temporary)
        state.seed_states = [(v.path, np.asarray(v).tolist()) for v in _seed_variables(self.model)]
        state.epochs_done = epoch + 1
        state.save(self.run_dir)  # only now does the new checkpoint count
        if previous is not None and previous != state.weights:
            (folder / previous).unlink(missing_ok=True)
        write_history(self.run_dir / run_folder.HISTORY, state.history)

    def _improves(self, value: float) -> bool:
        if self.state.best is None:
            return True
        return value < self.state.best if self.lower_is_better else value > self.state.best


def _seed_variables(model: keras.Model) -> list[Any]:
    """The model's random seed-generator states (dropout), which ``save_weights`` leaves out."""
    return [v for v in model.non_trainable_variables if v.path.endswith(_SEED_STATE)]
