"""The oneDNN kernels of one training step, Keras on TensorFlow next to the PyTorch peer.

On CPUs both TensorFlow and PyTorch run the joint U-Net's convolutions, batch norms and
pooling through oneDNN. With ``ONEDNN_VERBOSE=1`` oneDNN logs every primitive it executes with
its implementation (``brg_conv_fwd:avx512_core_bf16``, ``jit_bf16:...``) and its time. This
script runs a few warm-up steps of the same network in each framework and precision, logs one
more step, and tabulates milliseconds per primitive kind and propagation, so one can see
which kernels the two frameworks share and where the step's time goes.

TensorFlow runs with one inter-op thread here, so that its primitives run one at a time, as
PyTorch's do, and their times compare (with two, two convolutions often share the two cores
and each one's logged time doubles).

    python -m benchmarks.onednn_kernels --model paper --out onednn_paper.json
    python -m benchmarks.onednn_kernels --model default --cases keras:float32 torch:float32

Case names: ``keras:float32``, ``keras:mixed_bfloat16``, ``torch:float32``,
``torch:bfloat16`` (the peer always channels-last).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import time
from pathlib import Path

from benchmarks.script import ROOT, cervixnet_first, module_command, parser_from_docstring
from benchmarks.training_throughput import MODELS, machine

CASES = ("keras:float32", "keras:mixed_bfloat16", "torch:float32", "torch:bfloat16")
STEP_STARTS = "=== logged step starts ==="
STEP_ENDS = "=== logged step ends ==="


def run_case(spec: dict) -> None:
    """Warm-up steps, then one step between the two markers (in the subprocess)."""
    from benchmarks.training_throughput import _build_keras_model, compile_bare, synthetic_batch

    framework, precision = spec["case"].split(":")
    images, masks, labels = synthetic_batch(spec["batch"], spec["size"])
    if framework == "torch":
        from benchmarks import torch_peer

        result = torch_peer.train_throughput(
            images, masks, labels, batch_size=spec["batch"], steps=1,
            base_filters=spec["base_filters"], precision=precision, channels_last=True,
            warmup_steps=spec["warmup"], after_warmup=lambda: print(STEP_STARTS, flush=True),
        )  # fmt: skip
        print(f"{STEP_ENDS} {spec['batch'] / result['images_per_second']:.4f}", flush=True)
        return
    cervixnet_first()
    import keras

    from cervixnet.training.threads import set_thread_pools

    set_thread_pools(None, 1)
    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    model = _build_keras_model(spec)
    compile_bare(model)
    targets = {"mask": masks, "label": labels}
    for _ in range(spec["warmup"]):
        model.train_on_batch(images, targets)
    print(STEP_STARTS, flush=True)
    started = time.perf_counter()
    model.train_on_batch(images, targets)
    print(f"{STEP_ENDS} {time.perf_counter() - started:.4f}", flush=True)


def parse_verbose(lines: list[str]) -> dict:
    """oneDNN's verbose lines of the logged step -> time per kernel.

    Returns:
        ``{"version": ..., "step_seconds": ..., "kernels": [{"kind", "propagation",
        "implementation", "calls", "milliseconds"}, ...]}``, the kernels by time, longest first.
    """
    version, step_seconds, inside = None, None, False
    totals: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        if line.startswith("onednn_verbose") and ",info,oneDNN v" in line:
            version = line.split(",info,", 1)[1].split(" (")[0]
        elif line.startswith(STEP_STARTS):
            inside = True
        elif line.startswith(STEP_ENDS):
            inside = False
            step_seconds = float(line.split()[-1])
        elif inside and line.startswith("onednn_verbose") and ",exec,cpu," in line:
            fields = line.split(",")
            at = fields.index("exec")
            kind, implementation, propagation = fields[at + 2 : at + 5]
            total = totals[(kind, propagation, implementation)]
            total[0] += 1
            total[1] += float(fields[-1])
    kernels = [
        {"kind": kind, "propagation": propagation, "implementation": implementation,
         "calls": calls, "milliseconds": round(milliseconds, 3)}
        for (kind, propagation, implementation), (calls, milliseconds) in totals.items()
    ]  # fmt: skip
    kernels.sort(key=lambda kernel: -kernel["milliseconds"])
    return {"version": version, "step_seconds": step_seconds, "kernels": kernels}


def format_table(results: dict[str, dict]) -> str:
    """Milliseconds per primitive kind and propagation (rows) and case (columns), then totals."""
    cases = list(results)
    rows: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(dict)
    for case, result in results.items():
        for kernel in result.get("kernels", []):
            row = rows[(kernel["kind"], kernel["propagation"])]
            row[case] = row.get(case, 0.0) + kernel["milliseconds"]
    order = sorted(rows, key=lambda key: -max(rows[key].values()))
    lines = [
        "| primitive | propagation | " + " | ".join(f"{case} ms" for case in cases) + " |",
        "|---|---|" + "---:|" * len(cases),
    ]
    for kind, propagation in order:
        cells = [f"{rows[(kind, propagation)].get(case, 0):.0f}" for case in cases]
        lines.append(f"| {kind} | {propagation} | " + " | ".join(cells) + " |")
    summed = [sum(k["milliseconds"] for k in results[c].get("kernels", [])) for c in cases]
    step = [1000 * (results[c].get("step_seconds") or 0) for c in cases]
    lines.append("| all oneDNN primitives | | " + " | ".join(f"{v:.0f}" for v in summed) + " |")
    lines.append("| whole step (wall) | | " + " | ".join(f"{v:.0f}" for v in step) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), default="paper")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--size", type=int, help="override the image size (testing)")
    parser.add_argument("--base-filters", type=int, help="override the width (testing)")
    parser.add_argument("--out", default=None, help="write the kernels as JSON here")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_case:  # inside the subprocess
        run_case(json.loads(args.run_case))
        return

    _, size, base_filters, batch = MODELS[args.model]
    size, base_filters = args.size or size, args.base_filters or base_filters
    results: dict[str, dict] = {}
    print(f"{machine()}", flush=True)
    for case in args.cases:
        spec = {"case": case, "model": args.model, "size": size, "base_filters": base_filters,
                "batch": batch, "warmup": args.warmup}  # fmt: skip
        completed = subprocess.run(
            module_command(__file__, "--run-case", json.dumps(spec)),
            capture_output=True, text=True, env={**os.environ, "ONEDNN_VERBOSE": "1"}, cwd=ROOT,
        )  # fmt: skip
        result = parse_verbose(completed.stdout.splitlines())
        if completed.returncode != 0 or result["step_seconds"] is None:
            tail = (completed.stderr.strip().splitlines() or ["no message"])[-1]
            result["error"] = f"exit {completed.returncode}: {tail[:200]}"
            print(f"{case}: failed: {result['error']}", flush=True)
        else:
            print(f"{case}: oneDNN {result['version']}, step {result['step_seconds']:.2f} s",
                  flush=True)  # fmt: skip
        results[case] = result
    print(f"\nJoint U-Net {size} x {size}, {base_filters} base filters, batch {batch}, "
          "one training step\n")  # fmt: skip
    print(format_table(results))
    for case, result in results.items():
        top = ", ".join(
            f"{k['kind']} {k['propagation']}: {k['implementation']}"
            for k in result.get("kernels", [])[:3]
        )
        print(f"{case}: {top}")
    if args.out:
        report = {"machine": machine(), "model": args.model, "size": size,
                  "base_filters": base_filters, "batch": batch, "cases": results}  # fmt: skip
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
