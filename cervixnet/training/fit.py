"""The fitting of one run, from a configuration to a run folder and its kept model
(:func:`fit_run`); ``cervixnet.runs.train`` then scores the model and completes the folder.

The run folder holds:

- ``config.yaml``: the fully resolved configuration (data path included);
- ``splits.json``: patients and images per split;
- ``model.keras``: the best epoch by ``training.monitor`` (``checkpoint_monitor``; reloads with
  ``keras.models.load_model`` once ``from cervixnet import losses, metrics, models`` has run);
- ``history.csv``: one row per epoch (losses and metrics, train and val);
- ``checkpoint/``, while the run is going: the state after the last completed epoch, from
  which ``resume=True`` continues a killed run exactly (``cervixnet.training.checkpoint``);
- ``logs/``: TensorBoard event files;
- written by ``cervixnet.runs.train`` once fitted: ``metrics.json`` and ``predictions.csv``,
  per-split figures and per-image results of the best model, and what validation chose.

Every file but TensorBoard's append-only event files is written atomically (a temporary file
renamed over the old one), so a kill at any moment leaves whole files.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cervixnet import losses, models, run_folder
from cervixnet.config import AUTO, Config, save_config
from cervixnet.data.balance import oversample
from cervixnet.data.manifest import Manifest, read_manifest
from cervixnet.data.pipeline import make_dataset
from cervixnet.data.sources import prepared_data, resolve_data
from cervixnet.data.splits import SPLIT_NAMES, Splits, split_patients
from cervixnet.errors import ConfigError, DataError, TrainingError
from cervixnet.fileio import atomic_write_json, check_writable, remove_temporaries
from cervixnet.training.build import build_network, compile_model, run_epochs
from cervixnet.training.checkpoint import (
    CHECKPOINT_DIR,
    RunCheckpoint,
    TrainingState,
    load_state,
    restore,
    write_history,
)
from cervixnet.training.distribution import build_distribution, distribute_input
from cervixnet.training.plan import plan_model, plan_run
from cervixnet.training.precision import emulation_warning
from cervixnet.training.threads import onednn_enabled, set_thread_pools, thread_pools

RUN_FILES = run_folder.RUN_FILES


@dataclasses.dataclass(frozen=True)
class FittedRun:
    """A run folder whose training is done (:func:`fit_run`), ready to be scored.

    Attributes:
        run_dir: the folder this process writes (a temporary one on a worker other than the
            chief of a multi-worker run).
        config: the configuration as run (planned values and the data path resolved).
        manifest: the prepared data set the run read.
        evaluated: per split, the records to score and which are augmented copies.
        joint: whether the model has the label output.
        best_path: the kept model (``model.keras``).
        best_epoch, history: the kept epoch and the history of every epoch.
        reproducibility: what a repeat needs besides ``config.yaml`` (seed, precision, data
            fingerprint, versions, devices, threads, XLA, distribution).
        started: ``time.perf_counter()`` when the run began.
        finish: removes a worker's temporary folder once the run is complete.
    """

    run_dir: Path
    config: Config
    manifest: Manifest
    evaluated: dict[str, tuple[list[int], list[bool]]]
    joint: bool
    best_path: Path
    best_epoch: int
    history: dict[str, list[float]]
    reproducibility: dict[str, Any]
    started: float
    finish: Callable[[], None]


def build_model(config: Config) -> keras.Model:
    """Builds ``config.arch`` at ``config.data.image_size`` with the config's builder options.

    A U-Net ``depth`` or ``model.base_filters`` left ``auto`` is decided as the plan decides it
    (``cervixnet.training.plan.plan_model``); ``data.image_size`` must be set or planned. The
    layers take the dtype policy of ``training.precision`` (``build_network``).

    Raises:
        ConfigError: an option the builder does not take, or a value it rejects.
    """
    return build_network(plan_model(config))


def checkpoint_monitor(config: Config, joint: bool) -> str:
    """The logged quantity that picks the kept epoch: ``training.monitor``, or for ``auto`` the
    validation Dice (``val_mask_dice`` of a joint model, ``val_dice`` otherwise).

    On the HC18 scans the validation loss of the joint model, moved by its noisy label loss,
    kept epochs whose masks were worse (docs/training.md#the-checkpoint).
    """
    if config.training.monitor != AUTO:
        return config.training.monitor
    return "val_mask_dice" if joint else "val_dice"


def fit_run(
    config: Config,
    run_dir: str | Path,
    *,
    cache_root: str | Path | None = None,
    verbose: int | str = "auto",
    echo: Callable[[str], None] = print,
    splits: Splits | None = None,
    resume: bool = False,
    pseudo_labels: Mapping[str, Path] | None = None,
) -> FittedRun:
    """Trains ``config.arch`` into a run folder, up to its kept model (see the module
    docstring); ``cervixnet.runs.train`` then scores it.

    Args:
        config: a resolved configuration (``cervixnet.config.load_config``).
        run_dir: the run folder; refused if it already holds a run, created once the
            configuration and the data have passed their checks.
        cache_root: where the synthetic data set is cached (default ``~/.cache/cervixnet``).
        verbose: Keras ``fit`` verbosity; ``"auto"`` shows a progress bar on a terminal
            and one line per epoch otherwise.
        echo: receives one-line progress messages.
        splits: the patients of each set; default: ``data.splits_file`` if given, else a
            new split by ``data.split`` and ``seed``.
        resume: continue the interrupted run in ``run_dir`` from its last completed epoch
            (``config`` and ``splits`` must be the run's own: see ``resume_training``).
        pseudo_labels: the student of semi-supervised training: image path (as in the
            prepared manifest) -> its pseudo-mask, for unannotated scans the split lets
            training use (``cervixnet.runs.semi_supervised``). They join the training split
            and are never scored.

    With ``training.distribution`` set, every worker calls ``train`` with the same
    arguments; only the chief writes ``run_dir`` (docs/distributed.md). Any other worker
    writes to a temporary folder, removed before it returns, and its result names that folder.

    Raises:
        ConfigError, DataError: invalid configuration or data, or an output folder that
            cannot be written, before any training.
        TrainingError: the loss became NaN or infinite; the last good checkpoint is kept.
    """
    started = time.perf_counter()
    # First: thread pools, a multi-worker strategy or a split of the CPU must come before
    # any TF op.
    set_thread_pools(config.training.intra_op_threads, config.training.inter_op_threads)
    distribution = build_distribution(config.training)
    # A worker other than the chief resumes from the chief's run folder (a shared file
    # system) but writes only to its own temporary folder.
    shared_dir = _check_run_dir(run_dir, resume, writes=distribution.is_chief)
    run_dir = distribution.write_dir(shared_dir)

    source_path = resolve_data(config, cache_root)
    if config.data.path is None:
        echo(f"Data: built-in synthetic set at {source_path.parent}")
    config, plan = plan_run(config, source_path)
    if plan is not None:
        echo(plan.format())
    keras.utils.set_random_seed(config.seed)
    manifest = run_manifest(config, source_path, cache_root, echo)
    config = config.replace({"data.path": str(source_path.parent)})
    joint = models.is_joint(config.arch)
    splits = splits if splits is not None else _make_splits(config, manifest)
    indices = splits.indices(manifest)
    _check_trainable(manifest, indices, joint)
    # The pseudo-masks are for training only: the split and the scores keep the scans bare.
    trained, pseudo_labelled = _with_pseudo_labels(manifest, splits, pseudo_labels)
    if not config.training.semi_supervised.enabled:
        unannotated = splits.unannotated_indices(manifest)
        if unannotated:
            echo(
                f"{len(unannotated)} unannotated scans (no mask, no label) are not trained on: "
                "training.semi_supervised is off"
            )
    if config.training.epochs is None:  # planned or set steps, in whole passes
        balanced, _ = _balanced(
            config, manifest, indices["train"], config.data.balance.train_preterm_fraction
        )
        if pseudo_labelled:
            share = config.training.semi_supervised.annotated_share
            balanced = _with_annotated_share(balanced, len(pseudo_labelled), share)
        steps_per_epoch = math.ceil(
            (len(balanced) + len(pseudo_labelled)) / config.training.batch_size
        )
        config = config.replace({"training.epochs": run_epochs(config, steps_per_epoch)})

    with distribution.scope():
        model = build_model(config)
    fingerprint = _fingerprint(source_path, config)
    state = None
    if resume:
        state = _resumed_state(shared_dir, fingerprint, echo, distribution.is_chief)
    if state is None:
        # Only now, with configuration and data checked, does the run folder appear.
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / run_folder.CONFIG, comment=plan.comment() if plan else "")
        if plan is not None:
            atomic_write_json(run_dir / run_folder.PLAN, plan.to_dict())
        splits.save(run_dir / run_folder.SPLITS, manifest)
        state = TrainingState(data_fingerprint=fingerprint)
        state.save(run_dir)
    done = state.epochs_done
    inputs = training_inputs(
        config, trained, indices, first_epoch=done, pseudo_labelled=pseudo_labelled
    )
    positive_weight, evaluated = inputs.positive_weight, inputs.evaluated
    with distribution.scope():
        compile_model(
            model, config, positive_weight or 1.0, inputs.steps_per_epoch, distribution.replicas
        )
        restore(model, shared_dir, state)
    counts = ", ".join(f"{name} {len(indices[name])}" for name in SPLIT_NAMES)
    policy = models.policy_name(model)
    repeats = inputs.annotated_repeats
    added = (len(inputs.train_positions) - len(pseudo_labelled)) // repeats - len(indices["train"])
    echo(
        f"Training {config.arch} ({model.count_params():,} parameters) on {counts} images "
        f"for {config.training.epochs} epochs of {inputs.steps_per_epoch} steps"
        + (f" (resumed after epoch {done})" if done else "")
        + (f"; {len(pseudo_labelled)} pseudo-labelled scans besides" if pseudo_labelled else "")
        + (f", the annotated ones {repeats} times each" if repeats > 1 else "")
        + (f"; {added} augmented copies balance the training split" if added else "")
        + (f"; preterm weight {positive_weight:.2f}" if joint else "")
        + ("" if policy == "float32" else f"; in {policy}")
        + ("; the step compiled by XLA" if model.jit_compile else "")
    )

    warning = emulation_warning(config.training.precision)
    if warning:
        echo(warning)
    train_data = distribute_input(inputs.train_data)  # auto-shard policy: see distribute_input
    val_data = None if inputs.val_data is None else distribute_input(inputs.val_data)
    epochs_left = config.training.epochs - done
    monitor = checkpoint_monitor(config, joint) if val_data is not None else "loss"
    checkpoint = RunCheckpoint(run_dir, monitor, state)
    callbacks = [
        checkpoint,
        keras.callbacks.TensorBoard(log_dir=str(run_dir / run_folder.LOGS), write_graph=False),
    ]
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    write_history(run_dir / run_folder.HISTORY, state.history)
    if epochs_left > 0:
        model.fit(
            train_data,
            validation_data=val_data,
            initial_epoch=done,
            epochs=config.training.epochs,
            steps_per_epoch=inputs.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the tf.data pipeline shuffles, with the run's seed
            verbose=verbose,
        )
    if checkpoint.diverged is not None:
        epoch, batch, value = checkpoint.diverged
        kept = (
            f"the checkpoint of epoch {state.epochs_done} is kept"
            if state.epochs_done
            else "no epoch completed, so no checkpoint was kept"
        )
        raise TrainingError(
            f"training stopped: the loss became {value} at epoch {epoch + 1}, batch {batch + 1}; "
            f"{kept} in {run_dir}. Lower training.learning_rate or check the data, then "
            "train again"
        )
    # A resumed worker that is not the chief finds the best epoch so far in the chief's folder.
    best_path = next(
        (p for p in (run_dir / run_folder.MODEL, shared_dir / run_folder.MODEL) if p.exists()), None
    )
    if best_path is None:
        raise TrainingError(
            f"training ended without a finite '{monitor}' to choose the best epoch by; "
            f"no model.keras was written in {run_dir}"
        )
    return FittedRun(
        run_dir=run_dir,
        config=config,
        manifest=manifest,
        evaluated=evaluated,
        joint=joint,
        best_path=best_path,
        best_epoch=state.best_epoch,
        history=dict(state.history),
        reproducibility=_environment(config, fingerprint, policy)
        | {"jit_compile": bool(model.jit_compile)}
        | distribution.describe(),
        started=started,
        finish=distribution.remove_scratch,
    )


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """The data of a run as ``train`` feeds it to ``fit`` (see ``training_inputs``).

    Attributes:
        train_positions: the training records, with the augmented copies that balance the
            classes (``data.balance.train_preterm_fraction``).
        evaluated: per split, the records to score and which of them are augmented copies
            (copies only with ``data.balance.eval: paper``).
        positive_weight: the preterm weight of the label loss (joint models; ``None`` else).
        steps_per_epoch: batches per epoch, ``ceil(len(train_positions) / batch_size)``.
        train_data: the training epochs from ``first_epoch`` to ``training.epochs``.
        val_data: the validation set, or ``None`` if it is empty.
        annotated_repeats: how often the (balanced) annotated training scans are repeated
            beside pseudo-labelled ones (``training.semi_supervised.annotated_share``).
    """

    train_positions: list[int]
    evaluated: dict[str, tuple[list[int], list[bool]]]
    positive_weight: float | None
    steps_per_epoch: int
    train_data: Any
    val_data: Any
    annotated_repeats: int = 1


def training_inputs(
    config: Config,
    manifest: Manifest,
    indices: dict[str, list[int]],
    *,
    first_epoch: int = 0,
    pseudo_labelled: Sequence[int] = (),
) -> TrainingInputs:
    """Balances the splits and builds the tf.data input of ``cervixnet train``.

    ``indices`` maps each split name to record positions (``Splits.indices``). The one
    function that ``train`` and the benchmarks call, so that they time the real path.
    ``pseudo_labelled``: positions of scans with a pseudo-mask and no label, trained on
    after the (balanced) training split and never scored.
    """
    joint = models.is_joint(config.arch)
    train_positions, _ = _balanced(
        config, manifest, indices["train"], config.data.balance.train_preterm_fraction
    )
    annotated = len(train_positions)
    if pseudo_labelled:
        train_positions = _with_annotated_share(
            train_positions, len(pseudo_labelled), config.training.semi_supervised.annotated_share
        )
    repeats = len(train_positions) // annotated
    train_positions += list(pseudo_labelled)
    # The paper's protocol balances val and test too, with augmented copies (fixed seed).
    paper_eval = config.data.balance.eval == "paper"
    evaluated = {
        name: _balanced(config, manifest, indices[name], 0.5 if paper_eval else None)
        for name in SPLIT_NAMES
    }
    train_labels = [manifest.records[i].label for i in train_positions]
    positive_weight = config.loss.positive_weight
    if joint and positive_weight is None:
        positive_weight = losses.positive_weight_from_labels(
            np.array([np.nan if v is None else v for v in train_labels], dtype=float)
        )
    common = {
        "image_size": config.data.image_size,
        "channels": config.data.channels,
        # The global batch: one step of all replicas together.
        "batch_size": config.training.batch_size,
        "joint": joint,
        "seed": config.seed,
        "augment": config.data.augment,
        "autotune": config.data.autotune,
        "cache": config.data.cache,
        "classes": len(config.data.classes),
    }
    steps_per_epoch = math.ceil(len(train_positions) / config.training.batch_size)
    train_data = make_dataset(
        manifest,
        train_positions,
        training=True,
        epochs=max(1, run_epochs(config, steps_per_epoch) - first_epoch),
        first_epoch=first_epoch,
        **common,
    )
    val_positions, val_copies = evaluated["val"]
    val_data = None
    if val_positions:
        val_data = make_dataset(manifest, val_positions, copies=val_copies, **common)
    return TrainingInputs(
        train_positions=train_positions,
        evaluated=evaluated,
        positive_weight=positive_weight,
        steps_per_epoch=steps_per_epoch,
        train_data=train_data,
        val_data=val_data,
        annotated_repeats=repeats,
    )


def _with_annotated_share(
    positions: list[int], pseudo_labelled: int, share: float | None
) -> list[int]:
    """``positions`` (the annotated training scans) repeated whole as often as it takes for
    them to make up at least ``share`` of an epoch beside ``pseudo_labelled`` scans."""
    if share is None or not positions:
        return list(positions)
    repeats = max(1, math.ceil(share * pseudo_labelled / ((1 - share) * len(positions))))
    return list(positions) * repeats


def _check_run_dir(run_dir: str | Path, resume: bool = False, writes: bool = True) -> Path:
    """``run_dir`` if a new run (or, with ``resume``, an unfinished one) may go there.

    ``writes``: whether this process writes there (a multi-worker run's chief only).
    """
    run_dir = Path(run_dir)
    flag = "--resume" if resume else "--out"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{flag} {run_dir}: exists and is not a folder")
    if resume:
        if (run_dir / run_folder.METRICS).exists():
            raise ConfigError(
                f"--resume {run_dir}: the run is complete (metrics.json); nothing to resume"
            )
    elif writes:
        existing = [name for name in RUN_FILES if (run_dir / name).exists()]
        if existing:
            raise ConfigError(
                f"--out {run_dir}: already holds a run ({', '.join(existing)}); "
                "choose a new folder so that no earlier result is overwritten, "
                "or continue an interrupted run with --resume"
            )
    if writes:
        check_writable(run_dir, flag)
    return run_dir


def _resumed_state(
    run_dir: Path, fingerprint: str, echo: Callable[[str], None], writes: bool = True
) -> TrainingState | None:
    """The saved state of the run in ``run_dir`` (``None``: it saved none), after removing
    half-written files."""
    if writes:
        left = remove_temporaries(run_dir) + remove_temporaries(run_dir / CHECKPOINT_DIR)
        if left:
            echo(f"Removed {len(left)} half-written file(s) of the interrupted run")
    state = load_state(run_dir)
    if state is not None and state.data_fingerprint != fingerprint:
        raise DataError(
            f"--resume {run_dir}: the data changed since the run started (fingerprint "
            f"{state.data_fingerprint}, now {fingerprint}); start a new run instead"
        )
    return state


def _make_splits(config: Config, manifest: Manifest) -> Splits:
    if config.data.splits_file is not None:
        return Splits.load(config.data.splits_file)
    return split_patients(manifest, config.data.split, seed=config.seed)


def _check_trainable(manifest: Manifest, indices: dict[str, list[int]], joint: bool) -> None:
    train = [manifest.records[i] for i in indices["train"]]
    if not train:
        raise DataError(f"{manifest.source}: the training split is empty")
    if not any(r.mask is not None for r in train):
        raise DataError(f"{manifest.source}: no training image has a mask (column 'mask')")
    if joint:
        labels = {r.label for r in train if r.label is not None}
        if labels != {0, 1}:
            raise DataError(
                f"{manifest.source}: the joint model needs preterm (1) and control (0) images in "
                f"the training split; it has labels {sorted(labels)} (column 'label')"
            )


def run_manifest(
    config: Config,
    source_path: Path,
    cache_root: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Manifest:
    """The prepared data set a run reads (``config`` planned): the prepared copy of
    ``source_path``, with the scans of the folder ``data.unlabelled`` appended when
    semi-supervised training is on (``cervixnet.data.unannotated``)."""
    manifest = read_manifest(prepared_data(config, source_path, cache_root, echo=echo))
    if config.data.unlabelled is None:
        return manifest
    if not config.training.semi_supervised.enabled:
        if echo is not None:
            echo(
                f"data.unlabelled {config.data.unlabelled} is not used: "
                "training.semi_supervised is off"
            )
        return manifest
    from cervixnet.data import unannotated

    first = read_manifest(source_path, check_files=False).records[0].image
    folder = unannotated.prepared_folder(config, first, cache_root, echo)
    return unannotated.with_folder(manifest, folder)


def _with_pseudo_labels(
    manifest: Manifest,
    splits: Splits,
    pseudo_labels: Mapping[str, Path] | None,
) -> tuple[Manifest, list[int]]:
    """``manifest`` with each pseudo-labelled scan's mask set, and their positions.

    Raises:
        DataError: a pseudo-label for a scan that is not an unannotated training scan.
    """
    if not pseudo_labels:
        return manifest, []
    allowed = {str(manifest.records[i].image): i for i in splits.unannotated_indices(manifest)}
    unknown = sorted(set(pseudo_labels) - set(allowed))
    if unknown:
        raise DataError(
            f"a pseudo-label for {unknown[0]}, which is not an unannotated scan of a training "
            f"patient ({len(unknown)} such in all)"
        )
    records = list(manifest.records)
    positions = []
    for image, mask in pseudo_labels.items():
        position = allowed[image]
        records[position] = dataclasses.replace(records[position], mask=Path(mask))
        positions.append(position)
    return dataclasses.replace(manifest, records=tuple(records)), sorted(positions)


def _fingerprint(source_manifest: Path, config: Config) -> str:
    """The data's fingerprint: the source manifest and its files, and the folder of
    unannotated scans when semi-supervised training reads one."""
    from cervixnet.data.prepare import source_fingerprint

    fingerprint = source_fingerprint(source_manifest)
    if config.data.unlabelled is not None and config.training.semi_supervised.enabled:
        from cervixnet.data.unannotated import folder_fingerprint

        fingerprint += "+" + folder_fingerprint(config.data.unlabelled)
    return fingerprint


def _environment(config: Config, fingerprint: str, precision: str) -> dict[str, Any]:
    """What a repeat of the run needs besides ``config.yaml``: seed, versions, data fingerprint.

    ``precision`` is the dtype policy the model was built with (``training.precision`` resolved).
    """
    import platform

    import tensorflow as tf

    import cervixnet

    return {
        "seed": config.seed,
        "precision": precision,
        "data_fingerprint": fingerprint,
        "versions": {
            "cervixnet": cervixnet.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "devices": [d.device_type for d in tf.config.list_logical_devices()],
        "onednn": onednn_enabled(),
        **thread_pools(),
    }


def _balanced(
    config: Config, manifest: Manifest, positions: list[int], fraction: float | None
) -> tuple[list[int], list[bool]]:
    """``positions`` with oversampled copies (see ``cervixnet.data.balance``), and copy flags."""
    if fraction is None:
        return list(positions), [False] * len(positions)
    labels = [manifest.records[i].label for i in positions]
    return oversample(positions, labels, fraction, seed=config.seed)
