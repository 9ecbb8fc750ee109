"""A run: a model trained into its run folder, then scored on every split.

:func:`train` fits (``cervixnet.training.fit_run``: the plan, the data, the epochs, the kept
model, exact resume) and then scores the kept model (``cervixnet.runs.scoring.score_run``);
with ``training.semi_supervised`` on, a teacher, pseudo-labels and a student
(``cervixnet.runs.semi_supervised``). :func:`resume_training` continues a killed run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cervixnet import run_folder
from cervixnet.config import Config
from cervixnet.data.splits import Splits
from cervixnet.errors import ConfigError
from cervixnet.runs.scoring import TrainResult, score_run
from cervixnet.training.fit import fit_run

RUN_FILES = run_folder.RUN_FILES


def train(
    config: Config,
    run_dir: str | Path,
    *,
    cache_root: str | Path | None = None,
    verbose: int | str = "auto",
    echo: Callable[[str], None] = print,
    splits: Splits | None = None,
    resume: bool = False,
) -> TrainResult:
    """Trains ``config.arch``, writes a run folder and scores its kept model (see the module
    docstring): ``cervixnet.training.fit_run`` with the same arguments, then :func:`score_run`.

    ``resume`` continues the interrupted run in ``run_dir`` (``config`` and ``splits`` must be
    the run's own: see :func:`resume_training`). With ``training.distribution`` set, every
    worker calls ``train`` with the same arguments; only the chief writes ``run_dir``.

    Raises:
        ConfigError, DataError: invalid configuration or data, or an output folder that
            cannot be written, before any training.
        TrainingError: the loss became NaN or infinite; the last good checkpoint is kept.
    """
    if config.training.semi_supervised.enabled:
        from cervixnet.runs.semi_supervised import train_semi_supervised

        return train_semi_supervised(
            config, run_dir, cache_root=cache_root, verbose=verbose, echo=echo, splits=splits,
            resume=resume,
        )  # fmt: skip
    fitted = fit_run(
        config, run_dir, cache_root=cache_root, verbose=verbose, echo=echo, splits=splits,
        resume=resume,
    )  # fmt: skip
    return score_run(fitted, echo)


def resume_training(
    run_dir: str | Path,
    *,
    cache_root: str | Path | None = None,
    verbose: int | str = "auto",
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Continues the interrupted run in ``run_dir`` from its last completed epoch.

    The run's own ``config.yaml`` and ``splits.json`` are used, the model and optimiser
    state (learning-rate schedule included) come from ``checkpoint/``, and the data order and
    augmentation of each remaining epoch are those of the uninterrupted run, so the run ends
    as if it had never stopped. A run whose training finished is only evaluated again. A
    semi-supervised run continues at its stage (``cervixnet.runs.semi_supervised``).

    Raises:
        ConfigError: ``run_dir`` holds no run, or a finished one (``metrics.json``).
        DataError: the data changed since the run started.
    """
    from cervixnet.config import load_config
    from cervixnet.runs.semi_supervised import TEACHER_DIR, is_semi_supervised_run

    run_dir = Path(run_dir)
    # A semi-supervised run stopped before its student began resumes from its teacher.
    own = run_dir / TEACHER_DIR if is_semi_supervised_run(run_dir) else run_dir
    for name in (run_folder.CONFIG, run_folder.SPLITS):
        if not (own / name).is_file():
            raise ConfigError(f"--resume {run_dir}: no {name}, so no run to resume there")
    config = load_config(own / run_folder.CONFIG)
    splits = Splits.load(own / run_folder.SPLITS)
    return train(
        config,
        run_dir,
        cache_root=cache_root,
        verbose=verbose,
        echo=echo,
        splits=splits,
        resume=True,
    )
