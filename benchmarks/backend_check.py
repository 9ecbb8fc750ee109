"""Trains every cervixnet architecture for a few steps on the current Keras backend.

Checks that the models, losses and metrics run without TensorFlow (set KERAS_BACKEND to
jax, torch or tensorflow before running) and reports training throughput in images per
second for each network, on whatever device the backend picks (a GPU when there is one).

    KERAS_BACKEND=jax python -m benchmarks.backend_check --out backend_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np


def _batch(rng: np.random.Generator, batch: int, size: int) -> tuple[np.ndarray, ...]:
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((batch, size, size, 1), np.float32)
    for i in range(batch):
        cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, size / 6
        masks[i, ..., 0] = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
    images = np.clip(0.3 + 0.5 * masks + rng.normal(0, 0.1, masks.shape), 0, 1).astype(np.float32)
    labels = (rng.random((batch, 1)) < 0.5).astype(np.float32)
    return images, masks, labels


def run(arch: str, size: int, base_filters: int, batch: int, steps: int) -> dict:
    import keras

    from cervixnet import losses, metrics, models

    # No keras.utils.set_random_seed: it imports TensorFlow whenever TensorFlow is installed,
    # which would hide whether cervixnet itself needs it. Weights are randomly initialised.
    model = models.get(arch, input_shape=(size, size, 1), base_filters=base_filters)
    joint = models.is_joint(arch)
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=5e-4)
    if joint:
        model.compile(
            optimizer=optimizer,
            loss={"mask": losses.BCEDiceLoss(0.5), "label": losses.WeightedBinaryCrossentropy(9.0)},
            loss_weights={"mask": 1.0, "label": 0.8},
            metrics={"mask": [metrics.PerImageIoU()], "label": [metrics.Specificity()]},
        )
    else:
        model.compile(
            optimizer=optimizer, loss=losses.BCEDiceLoss(0.5), metrics=[metrics.PerImageIoU()]
        )
    rng = np.random.default_rng(0)
    images, masks, labels = _batch(rng, batch * steps, size)
    y = {"mask": masks, "label": labels} if joint else masks
    warm_up = {"mask": masks[:batch], "label": labels[:batch]} if joint else masks[:batch]
    model.fit(images[:batch], warm_up, batch_size=batch, epochs=1, verbose=0)  # compile
    started = time.perf_counter()
    history = model.fit(images, y, batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    outputs = model.predict(images[:batch], verbose=0)
    finite = all(
        np.isfinite(np.asarray(o)).all() for o in models.named_outputs(model, outputs).values()
    )
    return {
        "arch": arch,
        "input": size,
        "base_filters": base_filters,
        "batch": batch,
        "parameters": int(model.count_params()),
        "steps": steps,
        "images_per_second": round(batch * steps / seconds, 2),
        "final_loss": float(history.history["loss"][-1]),
        "outputs_finite": bool(finite),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="backend_check.json")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--paper", action="store_true", help="also the paper-size joint U-Net")
    args = parser.parse_args()

    import keras

    from cervixnet import models

    cases = [(arch, args.size, args.base_filters, args.batch) for arch in models.names()]
    if args.paper:
        cases.append(("unet-joint", 256, 64, 4))
    results = []
    for arch, size, width, batch in cases:
        result = run(arch, size, width, batch, args.steps)
        results.append(result)
        print(json.dumps(result), flush=True)
    report = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "results": results,
    }
    if keras.backend.backend() == "jax":
        import jax

        report["devices"] = [str(d) for d in jax.devices()]
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))


if __name__ == "__main__":
    main()
