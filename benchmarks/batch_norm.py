"""One training step of a Conv-BN-ReLU stack: Keras' batch norm, the fused one, none; per layout.

Four 3 x 3 convolutions (64 channels, 128 x 128, batch 8, no bias) each followed by a batch
norm and a ReLU, trained with ``model.fit`` on one batch in memory (the steps timed, not
the fit: ``timing.py``); per batch norm
(``keras``: ``keras.layers.BatchNormalization``; ``fused``: cervixnet's
``FusedBatchNormalization``; ``none``: the convolutions alone) and per precision, each in its
own process, the median milliseconds per step and the convolutions' GFLOP/s.
``--layouts channels_last channels_first`` repeats the cases in each memory layout
(cervixnet's models are channels-last):

    python -m benchmarks.batch_norm
    python -m benchmarks.batch_norm --precisions float32 --steps 5 --out batch_norm.json
    python -m benchmarks.batch_norm --layouts channels_last channels_first --norms fused none

``:fpmath`` after a precision also sets oneDNN's ``ONEDNN_DEFAULT_FPMATH_MODE=BF16`` (float32
primitives computed in bfloat16 inside oneDNN).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

from benchmarks.script import ROOT, cervixnet_first, module_command, parser_from_docstring
from benchmarks.timing import step_clock

BATCH, LAYERS = 8, 4


def gflop_per_step(size: int, channels: int) -> float:
    """Forward multiply-adds x 2, times 3 for a training step (forward, two backward products)."""
    return LAYERS * 2 * size * size * 9 * channels * channels * 3 * BATCH / 1e9


def run_case(norm: str, precision: str, layout: str, steps: int, size: int, channels: int):
    """Times one case in this process: the median step of ``3 * steps`` (``timing.py``)."""
    cervixnet_first()
    import keras
    import numpy as np
    import tensorflow as tf

    from cervixnet.models import FusedBatchNormalization

    keras.config.set_dtype_policy(precision)
    keras.config.set_image_data_format(layout)
    first = layout == "channels_first"
    axis = 1 if first else -1
    inputs = keras.Input((channels, size, size) if first else (size, size, channels))
    x = inputs
    for _ in range(LAYERS):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        if norm == "keras":
            x = keras.layers.BatchNormalization(axis=axis)(x)
        elif norm == "fused":
            x = FusedBatchNormalization(axis=axis)(x)
        x = keras.layers.ReLU()(x)
    outputs = keras.layers.Conv2D(1, 1, dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse", jit_compile=False)
    rng = np.random.default_rng(0)
    image_shape = (channels, size, size) if first else (size, size, channels)
    target_shape = (1, size, size) if first else (size, size, 1)
    batch = (
        rng.random((BATCH, *image_shape), dtype=np.float32),
        rng.random((BATCH, *target_shape), dtype=np.float32),
    )
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(dataset, steps_per_epoch=3, verbose=0)  # tracing
    clock = step_clock()
    model.fit(dataset, steps_per_epoch=3 * steps, verbose=0, callbacks=[clock])
    seconds = statistics.median(clock.step_seconds)
    return {"ms_per_step": 1000 * seconds, "gflops": gflop_per_step(size, channels) / seconds}


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--norms", nargs="+", default=["keras", "fused", "none"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--layouts", nargs="+", default=["channels_last"],
                        choices=["channels_last", "channels_first"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="a third of the timed steps")
    parser.add_argument("--size", type=int, default=128, help="height and width")
    parser.add_argument("--channels", type=int, nargs="+", default=[64])
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--run-case", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_case:
        norm, precision, layout, steps, size, channels = args.run_case
        result = run_case(norm, precision, layout, int(steps), int(size), int(channels))
        print("RESULT " + json.dumps(result), flush=True)
        return
    rows = []
    columns = [
        (channels, layout, precision)
        for channels in args.channels
        for layout in args.layouts
        for precision in args.precisions
    ]
    for channels, layout, precision in columns:
        name, _, flag = precision.partition(":")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if flag == "fpmath":
            env["ONEDNN_DEFAULT_FPMATH_MODE"] = "BF16"
        for norm in args.norms:
            command = module_command(__file__, "--run-case", norm, name, layout)
            command += [str(args.steps), str(args.size), str(channels)]
            result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
            lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
            if result.returncode != 0 or not lines:
                tail = (result.stderr.strip().splitlines() or ["no message"])[-1]
                raise SystemExit(f"{norm} {precision} {layout}: exit {result.returncode}: {tail}")
            row = {"norm": norm, "precision": precision, "layout": layout, "channels": channels}
            row.update(json.loads(lines[-1][len("RESULT ") :]))
            rows.append(row)
            print(f"{norm:>6} {precision:>22} {layout} {channels:>3} channels: "
                  f"{row['ms_per_step']:7.1f} ms/step, "
                  f"{row['gflops']:4.0f} GFLOP/s", flush=True)  # fmt: skip
    header = " | ".join(f"{p}, {lay}, {c} ch" for c, lay, p in columns)
    print(f"\n| batch norm | {header} |")
    print("|---|" + "---:|" * len(columns))
    for norm in args.norms:
        cells = [f"{r['ms_per_step']:.1f} ms" for r in rows if r["norm"] == norm]
        print(f"| {norm} | {' | '.join(cells)} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
