"""One training process of tests/test_distributed.py: ``python distributed_worker.py SPEC``.

SPEC is a JSON file: ``{"data": ..., "run_dir": ..., "out": ..., "overrides": {...}}``.
The process trains with ``cervixnet.runs.train`` (the strategy comes from
``training.distribution`` and, for multi-worker, from ``TF_CONFIG``) and writes to ``out``
what the test compares: the replicas recorded in ``metrics.json``, the folder it wrote to,
and a SHA-256 of the weights right after ``fit`` on every local replica. With
``"stop_after_epochs": N`` it exits (status 3) once N epochs are checkpointed, as if killed;
with ``"resume": true`` it continues the run in ``run_dir`` (``resume_training``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from cervixnet.config import load_config
from cervixnet.runs import resume_training, train
from cervixnet.training import checkpoint

KILLED_EXIT_STATUS = 3


def weight_digests(model: keras.Model) -> list[str]:
    """One SHA-256 per local replica of all the model's variables, in order."""
    per_replica: list[Any] = []  # hashlib.sha256 objects
    for variable in model.weights:
        value = variable.value
        if isinstance(value, tf.distribute.DistributedValues):
            copies = model.distribute_strategy.experimental_local_results(value)
        else:
            copies = (value,)
        while len(per_replica) < len(copies):
            per_replica.append(hashlib.sha256())
        for digest, copy in zip(per_replica, copies, strict=True):
            digest.update(np.ascontiguousarray(copy.numpy()).tobytes())
    return [digest.hexdigest() for digest in per_replica]


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    config = load_config(overrides={**spec["overrides"], "data.path": spec["data"]})
    digests: list[list[str]] = []
    fit = keras.Model.fit

    def fit_and_digest(model, *args, **kwargs):
        history = fit(model, *args, **kwargs)
        digests.append(weight_digests(model))
        return history

    stop_after = spec.get("stop_after_epochs")
    if stop_after is not None:  # the process dies once that many epochs are checkpointed
        save_epoch = checkpoint.RunCheckpoint.on_epoch_end

        def dies_after(self, epoch, logs=None):
            save_epoch(self, epoch, logs)
            if epoch + 1 == stop_after:
                os._exit(KILLED_EXIT_STATUS)

        checkpoint.RunCheckpoint.on_epoch_end = dies_after
    with mock.patch.object(keras.Model, "fit", fit_and_digest):
        if spec.get("resume"):
            result = resume_training(spec["run_dir"], verbose=0, echo=lambda _: None)
        else:
            result = train(config, spec["run_dir"], verbose=0, echo=lambda _: None)
    reproducibility = result.metrics["reproducibility"]
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "distribution": reproducibility["distribution"],
                "replicas": reproducibility["replicas"],
                "workers": reproducibility["workers"],
                "wrote_to": str(result.run_dir),
                "wrote_to_exists": result.run_dir.exists(),
                "digests": digests[-1],
                "loss": result.history["loss"],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
