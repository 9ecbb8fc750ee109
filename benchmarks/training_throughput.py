"""Training images per second: cervixnet's real path, bare Keras and the PyTorch peer, side by side.

For the joint U-Net at the default size (96 x 96, 8 base filters, batch 16) or the paper's
(256 x 256, 64 base filters, batch 4), times in one run on one machine:

- ``cervixnet-train``: ``cervixnet train``'s path: the tf.data pipeline with augmentation,
  cervixnet's losses (BCE + Dice, weighted BCE) and every training metric, the configured
  optimiser and schedule (TensorFlow backend only);
- ``keras``: a bare ``model.fit`` of the same model on arrays in memory, with Keras'
  built-in binary cross-entropy and no metrics, in each precision and XLA setting asked for;
- ``torch``: the PyTorch peer of ``torch_peer.py`` (same layers and label branch as the Keras
  model of the same size; the run ends with an error if their parameter counts differ by more
  than 1 %),
  AdamW, in float32 and bfloat16 autocast, channels-last or the default layout, optionally
  ``torch.compile`` (its compilation falls in the warm-up steps; the default cases include it,
  which needs a C++ compiler on a CPU);
- the matrix-multiply ceiling of the machine in the same precision, so that each row also
  reports its achieved GFLOP/s (counted from the model's layers, ``cervixnet.models.flops``) as a
  percentage of that ceiling.

Every case runs in its own subprocess (fresh precision policy, thread pools and device
memory), one after another. The Keras cases time the steps of one ``fit``, from the first
step's start to the last one's end (``timing.py``), not ``fit``'s set-up and tear-down. Each
case also reports ``warmup_seconds``, the untimed steps' wall time: tracing, and XLA's or
``torch.compile``'s compilation (which ``torch.compile`` caches on disk for later runs). One
table is printed and the figures are written as JSON.

    python -m benchmarks.training_throughput --model paper --out training_paper.json
    python -m benchmarks.training_throughput --model default --cases cervixnet-train keras:float32
    KERAS_BACKEND=jax python -m benchmarks.training_throughput --model paper --device cuda \\
        --batch 256 --cases keras:mixed_bfloat16 torch:bfloat16:cl

Case names: ``cervixnet-train[:PRECISION][:FLAG...]`` (the config's ``training.precision``,
``auto``, unless one is named) and ``keras:PRECISION[:FLAG...]``, with PRECISION
``float32``, ``mixed_bfloat16`` or ``mixed_float16`` and FLAGs ``xla`` (``jit_compile=True``;
on JAX every step is compiled by XLA anyway), ``noxla`` (``cervixnet-train`` only:
``jit_compile=False``; without either flag it takes the config's ``training.jit_compile``,
``auto``), ``amp`` (TensorFlow's oneDNN bfloat16 graph rewrite,
``auto_mixed_precision_onednn_bfloat16``, for CPUs), ``fpmath`` (oneDNN's
``ONEDNN_DEFAULT_FPMATH_MODE=BF16``: float32 convolutions and matmuls computed in bfloat16
inside oneDNN), ``kerasbn`` (Keras' own ``BatchNormalization`` instead of cervixnet's
fused one), ``noaug`` (``cervixnet-train`` only: the config's augmentation off, to show its
cost), ``intra=N`` and ``inter=N`` (TensorFlow's intra- and inter-op thread
pools); ``torch:PRECISION[:cl][:compile]`` with PRECISION ``float32``, ``bfloat16`` or
``float16`` (``:cl`` channels-last).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.script import ROOT, cervixnet_first, module_command, parser_from_docstring

MODELS = {
    # name: (config, image size, base filters, batch)
    "default": ("plain", 96, 8, 16),  # the unplanned CPU recipe (configs/plain.yaml)
    "paper": ("paper", 256, 64, 4),
}
# The paper's joint model: the label branch on the bottleneck, dense 256 and 64.
PAPER_HEAD = {
    "classifier_features": "bottleneck",
    "classifier_pooling": "avg",
    "classifier_units": (256, 64),
    "classifier_dropout": 0.5,
    "classifier_trains_encoder": True,
}
DEFAULT_CASES = (
    "cervixnet-train",
    "keras:float32",
    "keras:float32:xla",
    "keras:mixed_bfloat16",
    "keras:mixed_bfloat16:xla",
    "torch:float32",
    "torch:float32:cl",
    "torch:float32:cl:compile",
    "torch:bfloat16:cl",
    "torch:bfloat16:cl:compile",
)


def synthetic_batch(count: int, size: int, seed: int = 0):
    """``count`` images with one bright disc each, its mask and a random label (NHWC float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((count, size, size, 1), np.float32)
    for i in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        masks[i, ..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < (size / 6) ** 2
    noise = rng.normal(0, 0.1, masks.shape).astype(np.float32)
    images = np.clip(0.3 + 0.5 * masks + noise, 0, 1).astype(np.float32)
    labels = (rng.random((count, 1)) < 0.5).astype(np.float32)
    return images, masks, labels


def _head(model_name: str) -> dict:
    if model_name == "paper":
        return dict(PAPER_HEAD)
    from cervixnet.config import load_config

    return dict(load_config("plain").model.builder_kwargs("unet-joint"))


def torch_head(model_name: str) -> dict:
    """The Keras model's label branch (``_head``) as ``torch_peer.JointUNet`` arguments."""
    head = _head(model_name)
    features = head["classifier_features"]
    return {
        "depth": head.get("depth", 4),
        "units": list(head["classifier_units"]),
        "dropout": head["classifier_dropout"],
        "features": [features] if isinstance(features, str) else list(features),
        "pooling": head["classifier_pooling"],
        "trains_encoder": head["classifier_trains_encoder"],
    }


def trainable_parameters(model) -> int:
    """A Keras model's trainable parameter count (batch norms' moving statistics left out)."""
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def parameter_mismatch(rows: list[dict], tolerance: float = 0.01) -> str | None:
    """Why the Keras and PyTorch rows are not the same network, or None when they are.

    Compares the ``parameters`` of every row that has them; counts that differ by more than
    ``tolerance`` (a fraction of the largest) make the comparison meaningless.
    """
    counts = {row["case"]: row["parameters"] for row in rows if row.get("parameters")}
    if not counts:
        return None
    low, high = min(counts.values()), max(counts.values())
    if high - low <= tolerance * high:
        return None
    listed = ", ".join(f"{case} {count:,}" for case, count in counts.items())
    return (
        f"the cases do not train the same network: trainable parameters {listed} "
        f"differ by {100 * (high - low) / high:.1f} %, more than {100 * tolerance:g} %"
    )


def _build_keras_model(spec: dict):
    from cervixnet import models

    head = _head(spec["model"])
    head.pop("weights", None)
    head.pop("base_filters", None)
    return models.build_unet_joint(
        input_shape=(spec["size"], spec["size"], 1), base_filters=spec["base_filters"], **head
    )


def _matmul_precision(precision: str) -> str:
    return {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(precision, precision)


def run_keras(spec: dict) -> dict:
    """``model.fit`` on arrays in memory (bare), or on cervixnet's training input (real)."""
    import keras
    import numpy as np

    from benchmarks.timing import step_clock
    from cervixnet.models.flops import training_flops_per_image

    if keras.backend.backend() == "tensorflow":  # the GPU machine's JAX has no TensorFlow
        import tensorflow as tf

        from cervixnet.training.threads import set_thread_pools

        set_thread_pools(spec.get("intra_op_threads"), spec.get("inter_op_threads"))
    real = spec["case"].startswith("cervixnet-train")
    # The real path's model takes the config's training.precision from build_model instead.
    precision = spec.get("precision") or "float32"
    keras.config.set_dtype_policy(precision)
    if spec.get("onednn_amp"):
        # TensorFlow's own graph rewrite for bf16 on CPUs: the float32 graph's convolutions,
        # matmuls and batch norms (and what lies between them) run in bfloat16 with oneDNN.
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    if spec.get("keras_bn"):  # the models with Keras' own BatchNormalization, for comparison
        import cervixnet.models.blocks

        cervixnet.models.blocks.FusedBatchNormalization = keras.layers.BatchNormalization
    keras.utils.set_random_seed(0)
    batch, steps, warmup = spec["batch"], spec["steps"], spec["warmup"]
    if real:
        model, dataset = _real_training_input(spec)
        fit_args = {"x": dataset.repeat()}
        from cervixnet.models import policy_name

        precision = policy_name(model)  # auto resolves with the model's width
    else:
        model = _build_keras_model(spec)
        compile_bare(
            model, spec.get("xla", False) if keras.backend.backend() == "tensorflow" else "auto"
        )
        images, masks, labels = synthetic_batch(min(batch * 4, 256), spec["size"])
        repeat = -(-batch * max(steps, warmup) // len(images))
        x = np.concatenate([images] * repeat)[: batch * max(steps, warmup)]
        y = {
            "mask": np.concatenate([masks] * repeat)[: len(x)],
            "label": np.concatenate([labels] * repeat)[: len(x)],
        }
        fit_args = {"x": x, "y": y, "batch_size": batch}
    started = time.perf_counter()
    model.fit(**fit_args, epochs=1, steps_per_epoch=warmup, verbose=0)  # tracing, compilation
    warmup_seconds = time.perf_counter() - started
    clock = step_clock()  # the steps, not fit's set-up and tear-down (timing.py)
    started = time.perf_counter()
    history = model.fit(**fit_args, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    fit_seconds = time.perf_counter() - started
    return {
        "images_per_second": batch * steps / clock.seconds,
        "cpu_ms_per_image": 1000 * clock.cpu_seconds / (batch * steps),
        "fit_seconds": round(fit_seconds, 2),
        "warmup_seconds": round(warmup_seconds, 2),
        "parameters": trainable_parameters(model),
        "training_flops_per_image": training_flops_per_image(model),
        "final_loss": float(history.history["loss"][-1]),
        "jit_compile": bool(getattr(model, "jit_compile", True)),
        "framework": f"keras {keras.__version__} ({keras.backend.backend()})",
        "precision": precision,
        "matmul_dtype": "bfloat16"
        if spec.get("onednn_amp") or spec.get("fpmath")
        else _matmul_precision(precision),
    }


def compile_bare(model, jit_compile: bool | str = False) -> None:
    """The bare fit's compile: AdamW, Keras' binary cross-entropy per output, weights 1 : 0.8."""
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4, weight_decay=5e-4),
        loss={"mask": "binary_crossentropy", "label": "binary_crossentropy"},
        loss_weights={"mask": 1.0, "label": 0.8},
        jit_compile=jit_compile,
    )


def _real_training_input(spec: dict):
    """The model, compiled, and the training dataset exactly as ``cervixnet train`` makes them."""
    import dataclasses

    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.sources import prepared_data, resolve_data
    from cervixnet.data.splits import split_patients
    from cervixnet.training import build_model, compile_model, training_inputs

    config = load_config(spec["config"])
    training = dataclasses.replace(
        config.training,
        batch_size=spec["batch"],
        jit_compile=config.training.jit_compile if spec.get("xla") is None else spec["xla"],
        epochs=1,
        precision=spec.get("precision") or config.training.precision,
    )
    model_config = dataclasses.replace(config.model, base_filters=spec["base_filters"])
    data = dataclasses.replace(config.data, image_size=(spec["size"], spec["size"]))
    if spec.get("no_augment"):
        data = dataclasses.replace(data, augment=dataclasses.replace(data.augment, enabled=False))
    config = dataclasses.replace(config, training=training, model=model_config, data=data)
    manifest = read_manifest(prepared_data(config, resolve_data(config), echo=lambda _: None))
    indices = split_patients(manifest, config.data.split, config.seed).indices(manifest)
    inputs = training_inputs(config, manifest, indices)
    model = build_model(config)
    compile_model(model, config, inputs.positive_weight or 1.0, inputs.steps_per_epoch)
    dataset = inputs.train_data
    return model, dataset


def run_torch(spec: dict) -> dict:
    """The PyTorch peer on the same batch size and image size."""
    from benchmarks import torch_peer

    images, masks, labels = synthetic_batch(min(spec["batch"] * 4, 256), spec["size"])
    result = torch_peer.train_throughput(
        images,
        masks,
        labels,
        batch_size=spec["batch"],
        steps=spec["steps"],
        base_filters=spec["base_filters"],
        device=spec["device"],
        precision=spec["precision"],
        channels_last=spec["channels_last"],
        compile_model=spec["compile"],
        warmup_steps=spec["warmup"],
        head=spec["head"],
    )
    result["framework"] = f"torch {result.pop('torch')}"
    result["matmul_dtype"] = spec["precision"]
    return result


KERAS_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _keras_flags(flags: list[str], real: bool = False) -> dict | None:
    """``["xla", "intra=2"]`` -> settings; ``None`` for an unknown flag.

    ``xla`` is ``False`` for the bare fit unless asked for; for ``cervixnet train``'s path
    (``real``) it is ``None``, the config's ``training.jit_compile`` (``auto``), unless ``xla``
    (``True``) or ``noxla`` (``False``) is given; ``noaug`` (``real`` only) turns the
    config's augmentation off.
    """
    settings: dict = {"xla": None if real else False}
    settings |= {"onednn_amp": False, "fpmath": False, "keras_bn": False, "no_augment": False}
    names = {"xla": "xla", "amp": "onednn_amp", "fpmath": "fpmath", "kerasbn": "keras_bn"}
    for flag in flags:
        key, _, value = flag.partition("=")
        if flag in names:
            settings[names[flag]] = True
        elif flag == "noxla" and real:
            settings["xla"] = False
        elif flag == "noaug" and real:
            settings["no_augment"] = True
        elif key in ("intra", "inter") and value.isdigit():
            settings[f"{key}_op_threads"] = int(value)
        else:
            return None
    return settings


def parse_case(case: str) -> dict:
    """``keras:mixed_bfloat16:xla`` -> its settings; raises SystemExit on an unknown name."""
    parts = case.split(":")
    if parts[0] == "cervixnet-train":
        # An optional precision (default: the config's, "auto"), then flags.
        precision = parts[1] if parts[1:2] and parts[1] in KERAS_PRECISIONS else None
        flags = _keras_flags(parts[2:] if precision else parts[1:], real=True)
        if flags is not None:
            return {"kind": "keras", "precision": precision, **flags}
    if parts[0] == "keras" and parts[1:2] and parts[1] in KERAS_PRECISIONS:
        flags = _keras_flags(parts[2:])
        if flags is not None:
            return {"kind": "keras", "precision": parts[1], **flags}
    if parts[0] == "torch" and len(parts) >= 2 and parts[1] in ("float32", "bfloat16", "float16"):
        flags = set(parts[2:])
        if flags <= {"cl", "compile"}:
            return {
                "kind": "torch",
                "precision": parts[1],
                "channels_last": "cl" in flags,
                "compile": "compile" in flags,
            }
    raise SystemExit(f"unknown case {case!r}; see --help for the case names")


def run_case(spec: dict) -> dict:
    """Runs one case in this process (called in the subprocess, before TensorFlow is loaded)."""
    if spec.get("fpmath"):
        # oneDNN's floating-point math mode: float32 convolutions and matmuls may compute
        # in bfloat16 internally, their inputs, outputs and weights staying float32.
        os.environ["ONEDNN_DEFAULT_FPMATH_MODE"] = "BF16"
    if spec["kind"] == "torch":
        return run_torch(spec)
    cervixnet_first()  # the bare fit on the same TensorFlow set-up as cervixnet's path
    return run_keras(spec)


def ceiling(framework: str, dtype: str, device: str) -> float | None:
    """The matmul ceiling in FLOP/s, measured in a subprocess like the cases."""
    size = 8192 if device == "cuda" else 2048
    code = (
        "import json; "
        # TensorFlow set up as for the Keras cases.
        + (
            "from benchmarks import script; script.cervixnet_first(); "
            if framework == "tensorflow"
            else ""
        )
        + "from benchmarks import flops; "
        f"print(json.dumps(flops.matmul_ceiling({framework!r}, {dtype!r}, {size}, {device!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        print(f"matmul {framework} {dtype} failed: {result.stderr.strip().splitlines()[-1:]}")
        return None
    return float(result.stdout.strip().splitlines()[-1])


def machine() -> str:
    """The CPU (and GPU, when one is visible) in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    words = f"{cpu}, {os.cpu_count()} cores"
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        if gpu:
            words += f"; GPU: {gpu}"
    except (OSError, subprocess.SubprocessError):
        pass
    return words


# Dense bfloat16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s (without sparsity).
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4}


def gpu_bf16_peak() -> float | None:
    """The data-sheet bf16 peak of the visible GPU, when it is one of ``BF16_PEAK_TFLOPS``."""
    words = machine()
    if "GPU:" not in words:
        return None
    gpu = words.split("GPU:", 1)[1]
    for name, peak in BF16_PEAK_TFLOPS.items():  # the most specific names come first
        if name in gpu:
            return peak
    return None


MERGED_FIGURES = ("images_per_second", "cpu_ms_per_image", "warmup_seconds")


def merge_repeats(rows: list[dict]) -> list[dict]:
    """One row per case and batch: the medians of its repeats' figures (``MERGED_FIGURES``).

    Each run's figure is kept in a list, ``images_per_second_runs`` and so on; the first run's
    ``warmup_seconds`` is the one that compiled without the on-disk caches of later runs.
    """
    merged: dict[tuple[str, int], dict] = {}
    for row in rows:
        key = (row["case"], row["batch"])
        if "error" in row:
            merged.setdefault(key, row)
            continue
        first = merged.get(key)
        if first is None or "error" in first:
            merged[key] = first = dict(row)
            for name in MERGED_FIGURES:
                if name in row:
                    first[f"{name}_runs"] = []
        for name in MERGED_FIGURES:
            if name in row and f"{name}_runs" in first:
                first[f"{name}_runs"].append(row[name])
                first[name] = statistics.median(first[f"{name}_runs"])
    return list(merged.values())


def format_table(rows: list[dict]) -> str:
    """One Markdown table: case, batch, images/s, CPU ms/image, GFLOP/s, % of the ceiling."""
    lines = [
        "| case | batch | img/s | CPU ms/img | GFLOP/s | matmul ceiling GFLOP/s | % of ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['case']} | {row['batch']} | failed: {row['error']} | | | | |")
            continue
        ceiling_gflops = row.get("ceiling_gflops")
        cpu = row.get("cpu_ms_per_image")
        lines.append(
            f"| {row['case']} | {row['batch']} | {row['images_per_second']:.2f} | "
            f"{'' if cpu is None else f'{cpu:.1f}'} | "
            f"{row['gflops']:.0f} | {ceiling_gflops or 0:.0f} | "
            f"{row.get('percent_of_ceiling', 0):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), default="paper")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES))
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: the config's)")
    parser.add_argument("--size", type=int, help="override the image size (testing)")
    parser.add_argument("--base-filters", type=int, help="override the width (testing)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="for torch")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of every case, interleaved; the median counts"
    )
    parser.add_argument("--case-timeout", type=float, default=None, help="seconds per case")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_case:  # inside the subprocess
        print("RESULT " + json.dumps(run_case(json.loads(args.run_case))), flush=True)
        return

    config, size, base_filters, default_batch = MODELS[args.model]
    size = args.size or size
    base_filters = args.base_filters or base_filters
    steps = args.steps or (10 if args.model == "paper" else 40)
    parsed = {case: parse_case(case) for case in args.cases}
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    ceilings: dict[tuple[str, str], float | None] = {}
    rows: list[dict] = []
    # The peer's label branch, the Keras model's (for the default size, read from the config).
    head = torch_head(args.model) if any(s["kind"] == "torch" for s in parsed.values()) else None
    print(f"{machine()}; Keras backend {backend}", flush=True)
    rounds = [
        (batch, case, settings)
        for _ in range(args.repeats)
        for batch in args.batch or [default_batch]
        for case, settings in parsed.items()
    ]
    for batch, case, settings in rounds:
        spec = {
            **settings,
            "case": case,
            "model": args.model,
            "config": config,
            "size": size,
            "base_filters": base_filters,
            "batch": batch,
            "steps": steps,
            "warmup": args.warmup,
            "device": args.device,
            "head": head,
        }
        started = time.perf_counter()
        try:
            result = subprocess.run(
                module_command(__file__, "--run-case", json.dumps(spec)),
                capture_output=True, text=True, timeout=args.case_timeout, cwd=ROOT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            print(f"{case} batch {batch}: over {args.case_timeout} s, stopped", flush=True)
            rows.append({"case": case, "batch": batch, "error": "timed out"})
            continue
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
        row = {"case": case, "batch": batch, "size": size, "base_filters": base_filters}
        if result.returncode != 0 or not lines:
            # The last line that is not TensorFlow's or XLA's logging.
            messages = [
                line for line in result.stderr.strip().splitlines()
                if line and not (line[0] in "EWI" and line[1:5].isdigit())
            ]  # fmt: skip
            tail = f"exit {result.returncode}: " + (messages or ["no message"])[-1]
            row["error"] = tail[:200]
            print(f"{case} batch {batch}: failed: {tail}", flush=True)
            rows.append(row)
            continue
        row.update(json.loads(lines[-1][len("RESULT ") :]))
        row["wall_seconds"] = round(time.perf_counter() - started, 1)
        framework = "torch" if settings["kind"] == "torch" else (
            "tensorflow" if backend == "tensorflow" else backend
        )  # fmt: skip
        key = (framework, row["matmul_dtype"])
        if key not in ceilings:
            ceilings[key] = ceiling(framework, row["matmul_dtype"], args.device)
        rows.append(row)
        print(f"{case} batch {batch}: {row['images_per_second']:.2f} img/s", flush=True)
    rows = merge_repeats(rows)
    flops_per_image = next(
        (r["training_flops_per_image"] for r in rows if "training_flops_per_image" in r), None
    )
    keras_rows = rows
    if flops_per_image is None:  # torch only: count the same network built in Keras
        os.environ.setdefault("KERAS_BACKEND", backend)
        from cervixnet.models.flops import training_flops_per_image

        spec = {"model": args.model, "size": size, "base_filters": base_filters}
        model = _build_keras_model(spec)
        flops_per_image = training_flops_per_image(model)
        keras_rows = [*rows, {"case": "keras model", "parameters": trainable_parameters(model)}]
    mismatch = parameter_mismatch(keras_rows)
    for row in rows:
        if "error" in row:
            continue
        row["gflops"] = row["images_per_second"] * flops_per_image / 1e9
        framework = "torch" if row["case"].startswith("torch") else (
            "tensorflow" if backend == "tensorflow" else backend
        )  # fmt: skip
        limit = ceilings.get((framework, row["matmul_dtype"]))
        if limit:
            row["ceiling_gflops"] = limit / 1e9
            row["percent_of_ceiling"] = 100 * row["gflops"] / row["ceiling_gflops"]
    table = format_table(rows)
    print(f"\nJoint U-Net {size} x {size}, {base_filters} base filters, "
          f"{flops_per_image / 1e9:.1f} GFLOP per training image\n")  # fmt: skip
    print(table)
    report = {
        "machine": machine(),
        "gpu_bf16_peak_tflops": gpu_bf16_peak(),
        "keras_backend": backend,
        "model": args.model,
        "training_gflop_per_image": flops_per_image / 1e9,
        "steps": steps,
        "rows": rows,
        "parameter_mismatch": mismatch,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if mismatch:  # the figures are kept, but the run does not count as a comparison
        raise SystemExit(f"training_throughput: {mismatch}")


if __name__ == "__main__":
    main()
