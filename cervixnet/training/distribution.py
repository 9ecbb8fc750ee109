"""Training on several devices or machines with TensorFlow's distribution engine.

``training.distribution`` picks a ``tf.distribute`` strategy (docs/distributed.md):

- ``none``: TensorFlow's default strategy, one device (the first GPU, else the CPU);
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over every local GPU or, with no GPU,
  over ``training.cpu_devices`` logical CPU devices (one CPU device when null);
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``, one process per machine,
  the cluster and this process's task read from the ``TF_CONFIG`` environment variable.

Every replica holds a copy of the model. Each step splits the global batch
(``training.batch_size``) between the replicas and averages their gradients (synchronous
data parallelism), so the copies stay identical.

Keras 3 creates ``BatchNormalization``'s moving mean and variance with no aggregation, so
under a strategy each replica would keep its own, from its part of each batch, and the
copies would drift apart (and differ between workers). Inside :meth:`Distribution.scope`,
non-trainable floating-point variables are made with ``tf.VariableAggregation.MEAN``
instead: every update is averaged over the replicas, and all of them keep the same values.

Only the chief writes the run folder. Keras 3 callbacks (checkpoint, CSV log, TensorBoard)
write on every process, so a worker that is not the chief writes to a temporary folder of
its own, removed when training ends: the pattern of TensorFlow's multi-worker guide.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from cervixnet.config import DISTRIBUTIONS, TrainingConfig
from cervixnet.errors import ConfigError

# Jobs of a TF_CONFIG cluster that train; an "evaluator" or "ps" task is not a training worker.
TRAINING_JOBS = ("chief", "worker")


@dataclasses.dataclass
class Distribution:
    """A ``tf.distribute`` strategy and this process's place in it.

    Attributes:
        kind: ``training.distribution`` (``none``, ``mirrored`` or ``multi_worker``).
        strategy: the ``tf.distribute`` strategy; build and compile the model inside
            :meth:`scope`, which enters the strategy's scope.
        is_chief: whether this process writes the run folder (always true but for
            ``multi_worker``, where the chief is the ``chief`` task or else worker 0).
        task_type: the ``TF_CONFIG`` task type (``chief`` or ``worker``); None off a cluster.
        task_id: the ``TF_CONFIG`` task index; None off a cluster.
        workers: the processes that train together (1 but for ``multi_worker``).
    """

    kind: str
    strategy: tf.distribute.Strategy
    is_chief: bool = True
    task_type: str | None = None
    task_id: int | None = None
    workers: int = 1
    scratch_dir: Path | None = dataclasses.field(default=None, init=False)

    @property
    def replicas(self) -> int:
        """Model copies trained in sync, over all workers."""
        return int(self.strategy.num_replicas_in_sync)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The strategy's scope: build and compile the model inside.

        Variables created inside are mirrored on every replica; with several replicas,
        moving statistics are averaged over them (see the module docstring).
        """
        with self.strategy.scope():
            if self.replicas == 1:
                yield
                return
            with tf.variable_creator_scope(_average_moving_statistics):
                yield

    def write_dir(self, run_dir: str | Path) -> Path:
        """Where this process writes: ``run_dir`` on the chief, else a new temporary folder.

        The temporary folder is removed by :meth:`remove_scratch`, or when the process exits.
        """
        if self.is_chief:
            return Path(run_dir)
        if self.scratch_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix=f"cervixnet-{self.task_type}{self.task_id}-"))
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
            self.scratch_dir = scratch
        return self.scratch_dir

    def remove_scratch(self) -> None:
        """Removes the temporary folder of a worker that is not the chief, if any."""
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            self.scratch_dir = None

    def describe(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``reproducibility``."""
        return {"distribution": self.kind, "replicas": self.replicas, "workers": self.workers}


def distribute_input(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Sets the auto-shard policy that keeps a distributed step equal to one global batch.

    ``DATA``: every worker runs the whole input pipeline, with the same seeds, hence the same
    shuffling and augmentation, and keeps only its own replicas' part of each global batch.
    cervixnet's pipelines start from an in-memory list of file names, so there are no input
    files that ``FILE`` sharding could split between workers (``AUTO`` would fall back to
    ``DATA`` with a warning); ``OFF`` would give every worker the whole global batch, so each
    image would count once per worker. Decoding every image on every worker is cheap next to
    the network, and the decoded images are cached after the first epoch.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_distribution(training: TrainingConfig) -> Distribution:
    """Builds the strategy of ``training.distribution``; call it before TensorFlow runs any op.

    ``multi_worker`` reads the ``TF_CONFIG`` environment variable (:func:`parse_tf_config`).

    Raises:
        ConfigError: an unknown distribution, ``cpu_devices`` outside ``mirrored``, logical
            CPU devices asked for after TensorFlow initialised its devices, a missing or
            malformed ``TF_CONFIG``, a multi-worker strategy created too late, or a global
            batch smaller than the number of replicas.
    """
    kind = training.distribution
    if kind not in DISTRIBUTIONS:
        raise ConfigError(
            f"'training.distribution' must be one of {', '.join(DISTRIBUTIONS)}. Received: {kind!r}"
        )
    if training.cpu_devices is not None and kind != "mirrored":
        raise ConfigError(
            "'training.cpu_devices' applies to 'training.distribution: mirrored' only. "
            f"Received: cpu_devices={training.cpu_devices} with distribution={kind!r}"
        )
    if kind == "none":
        distribution = Distribution(kind, tf.distribute.get_strategy())
    elif kind == "mirrored":
        distribution = Distribution(kind, _mirrored_strategy(training.cpu_devices))
    else:
        distribution = _multi_worker(os.environ.get("TF_CONFIG"))
    if isinstance(training.batch_size, int) and training.batch_size < distribution.replicas:
        raise ConfigError(
            f"'training.batch_size' is the global batch, split between "
            f"{distribution.replicas} replicas; it must be at least {distribution.replicas}. "
            f"Received: {training.batch_size}"
        )
    return distribution


def parse_tf_config(text: str | None) -> tuple[dict[str, list[str]], str, int]:
    """Checks a ``TF_CONFIG`` value; returns ``(cluster, task_type, task_id)``.

    ``TF_CONFIG`` is JSON: ``{"cluster": {"worker": ["host1:port", "host2:port"]},
    "task": {"type": "worker", "index": 0}}``, the same cluster on every machine and each
    machine's own task. A ``chief`` job of one address may stand beside the workers.

    Raises:
        ConfigError: unset, not JSON, or a cluster or task that does not fit together.
    """
    guide = "see docs/distributed.md"
    if text is None or not text.strip():
        raise ConfigError(
            "'training.distribution: multi_worker' reads the cluster and this worker's task "
            f"from the TF_CONFIG environment variable ({guide}). Received: TF_CONFIG unset"
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}). Received: {text!r}") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(
            'TF_CONFIG must be a JSON object with "cluster" and "task" mappings '
            f"({guide}). Received: {text!r}"
        )
    jobs = {name: addresses for name, addresses in cluster.items() if name in TRAINING_JOBS}
    if "worker" not in jobs and "chief" not in jobs:
        raise ConfigError(
            f'TF_CONFIG\'s "cluster" must list "worker" (and optionally "chief") addresses. '
            f"Received: cluster={cluster!r}"
        )
    for name, addresses in jobs.items():
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and ":" in a for a in addresses)
        ):
            raise ConfigError(
                f'TF_CONFIG\'s cluster job "{name}" must be a list of "host:port" addresses. '
                f"Received: {addresses!r}"
            )
    if len(jobs.get("chief", [])) > 1:
        raise ConfigError(
            f"TF_CONFIG's cluster may have one chief. Received: chief={jobs['chief']!r}"
        )
    task_type, task_id = task.get("type"), task.get("index")
    if task_type not in jobs:
        raise ConfigError(
            f"TF_CONFIG's \"task\" type must be one of the cluster's training jobs "
            f"({', '.join(jobs)}). Received: type={task_type!r}"
        )
    if (
        not isinstance(task_id, int)
        or isinstance(task_id, bool)
        or not 0 <= task_id < len(jobs[task_type])
    ):
        raise ConfigError(
            f'TF_CONFIG\'s "task" index must be an integer in [0, {len(jobs[task_type])}) '
            f'for job "{task_type}". Received: index={task_id!r}'
        )
    return jobs, task_type, task_id


def is_chief(cluster: Mapping[str, list[str]], task_type: str, task_id: int) -> bool:
    """TensorFlow's rule: the ``chief`` task if the cluster has one, else worker 0."""
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def _mirrored_strategy(cpu_devices: int | None) -> tf.distribute.Strategy:
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()  # every visible GPU; cpu_devices ignored
    if cpu_devices is not None and cpu_devices > 1:
        _split_cpu(cpu_devices)
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def _split_cpu(count: int) -> None:
    """Splits the first CPU into ``count`` logical devices, before TensorFlow starts."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return  # an earlier run in this process asked for the same split
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise ConfigError(
            f"'training.cpu_devices' = {count}: TensorFlow has already initialised its "
            f"devices in this process ({have} CPU device{'s' if have != 1 else ''}), and a "
            "CPU can be split only before that; train in a new process, e.g. with "
            f"`cervixnet train`. Received: cpu_devices={count}"
        ) from None


def _multi_worker(tf_config: str | None) -> Distribution:
    cluster, task_type, task_id = parse_tf_config(tf_config)
    try:
        strategy = _KerasMultiWorkerMirroredStrategy()
    except ValueError as error:  # e.g. "Collective ops are already configured."
        raise ConfigError(f"TF_CONFIG: TensorFlow refused the cluster ({error})") from None
    except RuntimeError as error:
        raise ConfigError(
            "'training.distribution: multi_worker': TensorFlow ran operations in this "
            "process before the multi-worker strategy was created, and collective "
            "operations can be configured only before that; train in a new process, e.g. "
            f"with `cervixnet train`. Received: {error}"
        ) from None
    return Distribution(
        "multi_worker",
        strategy,
        is_chief=is_chief(cluster, task_type, task_id),
        task_type=task_type,
        task_id=task_id,
        workers=sum(len(addresses) for addresses in cluster.values()),
    )


def _average_moving_statistics(next_creator, **kwargs):
    """A variable creator: non-trainable float variables get ``MEAN`` aggregation.

    In a model these are statistics updated in the forward pass (``BatchNormalization``'s
    moving mean and variance). Variables that name an aggregation or are synchronised on
    read (metrics), integer ones (seed states) and trainable ones are left as they are.
    """
    dtype = kwargs.get("dtype")
    if (
        not kwargs.get("trainable", True)
        and dtype is not None
        and tf.as_dtype(dtype).is_floating
        and kwargs.get("aggregation") in (None, tf.VariableAggregation.NONE)
        and kwargs.get("synchronization")
        in (None, tf.VariableSynchronization.AUTO, tf.VariableSynchronization.ON_WRITE)
    ):
        kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


class _KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3's ``fit`` gives it.

    Keras 3 (3.15) calls ``strategy.reduce`` with a whole nested batch (to build the model
    symbolically before the first step) and with ``axis=0`` on scalar step logs; the
    multi-worker strategy accepts neither (keras-team/keras#20585). Here a nested value is
    reduced leaf by leaf, and a scalar across replicas only (``axis=None``), which is what
    the call means. Nothing else changes.
    """

    def reduce(self, reduce_op, value, axis):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        if axis is not None:
            local = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                axis = None
        return super().reduce(reduce_op, value, axis)
