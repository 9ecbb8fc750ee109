"""tf.distribute training: the strategy from the config, TF_CONFIG, the chief, and on CPU
two replicas in one process and two worker processes on localhost ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from cervixnet.config import load_config
from cervixnet.errors import ConfigError
from cervixnet.runs import RUN_FILES
from cervixnet.training.build import learning_rate
from cervixnet.training.distribution import (
    Distribution,
    build_distribution,
    distribute_input,
    is_chief,
    parse_tf_config,
)
from tests.conftest import TINY_RUN_CONFIG, write_tiny_dataset
from tests.distributed_worker import KILLED_EXIT_STATUS

WORKER_SCRIPT = Path(__file__).with_name("distributed_worker.py")
TRAINING_TIMEOUT_S = 300


def _training(**overrides):
    return load_config(overrides={f"training.{k}": v for k, v in overrides.items()}).training


def _tf_config(workers: list[str], task_type: str = "worker", index: int = 0, **jobs) -> str:
    return json.dumps(
        {"cluster": {"worker": workers, **jobs}, "task": {"type": task_type, "index": index}}
    )


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# TF_CONFIG and the chief

TWO = ["localhost:2001", "localhost:2002"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "Received: TF_CONFIG unset"),
        ("", "Received: TF_CONFIG unset"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", 'must be a JSON object with "cluster" and "task"'),
        ('{"cluster": {"worker": ["a:1"]}}', 'must be a JSON object with "cluster" and "task"'),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', 'list "worker"'),
        (_tf_config(["localhost"]), 'a list of "host:port" addresses'),
        (_tf_config([]), 'a list of "host:port" addresses'),
        (_tf_config(TWO, chief=["a:1", "b:2"]), "may have one chief"),
        (_tf_config(TWO, task_type="evaluator"), "Received: type='evaluator'"),
        (_tf_config(TWO, index=2), 'an integer in [0, 2) for job "worker". Received: index=2'),
        (_tf_config(TWO, index="0"), "Received: index='0'"),
    ],
)
def test_bad_tf_config_is_a_config_error(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_tf_config(text)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("jobs", "task_type", "index", "chief"),
    [
        ({}, "worker", 0, True),
        ({}, "worker", 1, False),
        ({"chief": ["localhost:2000"]}, "chief", 0, True),
        ({"chief": ["localhost:2000"]}, "worker", 0, False),
    ],
)
def test_the_chief_is_the_chief_task_or_worker_0(jobs, task_type, index, chief):
    cluster, parsed_type, parsed_index = parse_tf_config(_tf_config(TWO, task_type, index, **jobs))
    assert (parsed_type, parsed_index) == (task_type, index)
    assert is_chief(cluster, parsed_type, parsed_index) is chief


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG environment variable"):
        build_distribution(_training(distribution="multi_worker"))


def test_multi_worker_after_tensorflow_started_is_a_config_error(monkeypatch):
    tf.constant(0.0)  # TensorFlow has started in this process
    monkeypatch.setenv("TF_CONFIG", _tf_config([f"localhost:{p}" for p in _free_ports(2)]))
    with pytest.raises(ConfigError, match="before the multi-worker strategy was created"):
        build_distribution(_training(distribution="multi_worker"))


# Devices, learning rate, input


def test_no_distribution_is_one_replica_and_the_chief(tmp_path: Path):
    distribution = build_distribution(_training())
    assert (distribution.kind, distribution.replicas, distribution.is_chief) == ("none", 1, True)
    assert distribution.write_dir(tmp_path / "run") == tmp_path / "run"
    assert distribution.describe() == {"distribution": "none", "replicas": 1, "workers": 1}


def test_cpu_devices_belongs_to_mirrored():
    with pytest.raises(ConfigError, match=r"'training.cpu_devices' applies to .* mirrored"):
        build_distribution(_training(cpu_devices=2))


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="CPU-only check")
def test_splitting_the_cpu_after_tensorflow_started_is_a_config_error():
    tf.constant(0.0)
    with pytest.raises(ConfigError, match="already initialised its devices") as info:
        build_distribution(_training(distribution="mirrored", cpu_devices=3))
    assert "Received: cpu_devices=3" in str(info.value)


def test_a_worker_that_is_not_the_chief_writes_to_a_temporary_folder(tmp_path: Path):
    worker = Distribution("multi_worker", tf.distribute.get_strategy(), False, "worker", 1, 2)
    scratch = worker.write_dir(tmp_path / "run")
    assert scratch != tmp_path / "run" and scratch.is_dir()
    assert worker.write_dir(tmp_path / "run") == scratch  # one folder per process
    worker.remove_scratch()
    assert not scratch.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("scaling", "expected"), [("none", 1e-3), ("linear", 4e-3)])
def test_learning_rate_scales_with_the_replicas(scaling, expected):
    config = load_config(
        overrides={
            "training.scale_learning_rate": scaling,
            "training.lr_schedule": "constant",
            "training.epochs": 1,
            "training.warmup_fraction": 0.0,  # so that the schedule starts at the peak
        }
    )
    assert learning_rate(config, steps_per_epoch=10, replicas=4) == pytest.approx(expected)
    cosine = learning_rate(config.replace({"training.lr_schedule": "cosine"}), 10, replicas=4)
    assert float(cosine(0)) == pytest.approx(expected)
    assert learning_rate(config, steps_per_epoch=10) == pytest.approx(1e-3)  # one replica


def test_input_is_sharded_by_data():
    dataset = distribute_input(tf.data.Dataset.range(4).batch(2))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


# Training in other processes (this one has started TensorFlow already)


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    """One tiny data set for both training tests, so that it is prepared once."""
    data = tmp_path_factory.mktemp("distributed") / "data"
    write_tiny_dataset(data)
    return data


def _spec(
    folder: Path,
    data: Path,
    name: str,
    arch: str = "unet-joint",
    extra: dict | None = None,
    **training,
) -> Path:
    overrides = {
        **TINY_RUN_CONFIG,
        "arch": arch,
        "model.unet": {"depth": 2},
        "training.epochs": 1,
        **{f"training.{k}": v for k, v in training.items()},
    }
    spec = {"data": str(data), "run_dir": str(folder / "run"), "out": str(folder / f"{name}.json")}
    spec.update(extra or {})
    path = folder / f"{name}-spec.json"
    path.write_text(json.dumps({**spec, "overrides": overrides}))
    return path


def _environment(**extra: str) -> dict[str, str]:
    # CPU only, as the tests promise; XDG_CACHE_HOME (the conftest's private cache) is kept.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    return {**env, **extra}


def _run_all(
    commands: list[tuple[list[str], dict[str, str]]], logs: Path, expected: int = 0
) -> None:
    """Starts every process, waits for all within the time limit; on a failure kills the rest.

    Every process must end with the exit status ``expected``.
    """
    processes = []
    try:
        for index, (command, env) in enumerate(commands):
            log = (logs / f"process{index}.log").open("w")
            processes.append(
                (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
            )
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while any(p.poll() is None for p, _ in processes):
            failed = [p for p, _ in processes if p.poll() not in (None, expected)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            log.close()
    for index, (process, _) in enumerate(processes):
        if process.returncode != expected:
            tail = (logs / f"process{index}.log").read_text()[-4000:]
            pytest.fail(f"process {index} ended with {process.returncode}:\n{tail}")


@pytest.mark.slow
def test_mirrored_on_two_logical_cpu_devices(tmp_path: Path, shared_data: Path):
    data = shared_data
    # The segmentation U-Net: it traces faster than the joint model, which the two-worker
    # test trains.
    spec = _spec(tmp_path, data, "mirrored", arch="unet", distribution="mirrored", cpu_devices=2)
    _run_all([([sys.executable, str(WORKER_SCRIPT), str(spec)], _environment())], tmp_path)

    result = json.loads((tmp_path / "mirrored.json").read_text())
    assert (result["distribution"], result["replicas"], result["workers"]) == ("mirrored", 2, 1)
    assert len(result["digests"]) == 2
    assert result["digests"][0] == result["digests"][1]  # the replicas stayed identical
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["reproducibility"]["distribution"] == "mirrored"
    assert metrics["reproducibility"]["replicas"] == 2
    assert all((tmp_path / "run" / name).is_file() for name in RUN_FILES)


@pytest.mark.slow
def test_two_workers_end_with_the_same_weights_and_one_run_folder(
    tmp_path: Path, shared_data: Path
):
    data = shared_data
    addresses = [f"localhost:{port}" for port in _free_ports(2)]
    commands = []
    for index in range(2):
        spec = _spec(tmp_path, data, f"worker{index}", distribution="multi_worker")
        env = _environment(TF_CONFIG=_tf_config(addresses, "worker", index))
        commands.append(([sys.executable, str(WORKER_SCRIPT), str(spec)], env))
    _run_all(commands, tmp_path)

    chief, other = (json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2))
    for result in (chief, other):
        assert (result["distribution"], result["replicas"], result["workers"]) == (
            "multi_worker",
            2,
            2,
        )
    assert chief["digests"] == other["digests"]  # the same final weights on both workers
    assert chief["loss"] == other["loss"]
    # Only the chief wrote the run folder; the other worker's temporary folder is gone.
    run_dir = tmp_path / "run"
    assert chief["wrote_to"] == str(run_dir)
    assert other["wrote_to"] != str(run_dir) and not other["wrote_to_exists"]
    assert all((run_dir / name).is_file() for name in RUN_FILES)
    history = (run_dir / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 1  # header and one epoch, written once
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["reproducibility"]["distribution"] == "multi_worker"
    assert metrics["reproducibility"]["replicas"] == 2


@pytest.mark.slow
def test_killed_workers_resume_from_the_chiefs_checkpoint(tmp_path: Path, shared_data: Path):
    def start(stage: str, extra: dict, expected: int) -> list[dict]:
        addresses = [f"localhost:{port}" for port in _free_ports(2)]
        commands = []
        for index in range(2):
            spec = _spec(
                tmp_path, shared_data, f"{stage}{index}", extra=extra, distribution="multi_worker",
                epochs=2,
            )  # fmt: skip
            env = _environment(TF_CONFIG=_tf_config(addresses, "worker", index))
            commands.append(([sys.executable, str(WORKER_SCRIPT), str(spec)], env))
        (tmp_path / stage).mkdir()
        _run_all(commands, tmp_path / stage, expected=expected)
        if expected:
            return []
        return [json.loads((tmp_path / f"{stage}{i}.json").read_text()) for i in range(2)]

    start("killed", {"stop_after_epochs": 1}, expected=KILLED_EXIT_STATUS)
    run_dir = tmp_path / "run"
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 1 and not (run_dir / "metrics.json").exists()

    chief, other = start("resumed", {"resume": True}, expected=0)
    assert chief["digests"] == other["digests"]  # both continued from the same epoch
    assert chief["loss"] == other["loss"] and len(chief["loss"]) == 2
    assert chief["loss"][0] == state["history"]["loss"][0]  # epoch 1 kept from the first go
    assert chief["wrote_to"] == str(run_dir) and not other["wrote_to_exists"]
    epochs = (run_dir / "history.csv").read_text().strip().splitlines()[1:]
    assert [line.split(",")[0] for line in epochs] == ["0", "1"]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
