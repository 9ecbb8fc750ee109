"""Latency of an exported SavedModel next to the Keras model's own ``predict``, on this machine.

For the joint model of ``configs/default.yaml`` (96 x 96, 8 base filters) and of
``configs/paper.yaml`` (256 x 256, 64 base filters; randomly initialised: latency does not
depend on the weights),
exports a SavedModel with ``cervixnet export``'s code, then times in one process, one after
the other:

- ``keras.Model.predict`` on float images (what ``cervixnet predict`` runs), in the dtype
  policy ``training.precision: auto`` builds the model in on this machine (``policy`` in the
  JSON) and, where that is a 16-bit one, also as the model's float32 copy
  (``keras_predict_float32``), the computation the export serves;
- the SavedModel's ``serving_default`` signature on the same float images, as exported (each
  batch norm folded into its convolution) and exported with ``fold_batch_norms=False``;
- its ``predict_image_bytes`` signature on PNGs of a typical export size (560 x 420), which
  includes decoding, grayscale conversion and resizing in the graph.

for a single image and a batch of 8 (``--batches``), reporting the median of ``--repeats`` calls in
milliseconds (after warm-up calls).

    python -m benchmarks.serving_latency --out serving_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

# The shipped configs whose joint model is timed.
SIZES = ("default", "paper")


def median_ms(call, repeats: int) -> float:
    for _ in range(3):  # warm-up: tracing, allocation
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="default,paper", help="default, paper or both")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from benchmarks.script import cervixnet_first

    cervixnet_first()  # TensorFlow set up as in cervixnet train
    import cv2
    import keras
    import numpy as np
    import tensorflow as tf

    from cervixnet import models
    from cervixnet.config import load_config, save_config
    from cervixnet.export import export_savedmodel
    from cervixnet.training import build_model

    rng = np.random.default_rng(0)
    scan = (rng.random((420, 560, 3)) * 255).astype(np.uint8)
    png = cv2.imencode(".png", scan)[1].tobytes()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "milliseconds": {},
    }
    for name in args.sizes.split(","):
        if name not in SIZES:
            parser.error(f"--sizes takes {', '.join(SIZES)}. Received: {name!r}")
        # "default": the unplanned CPU model (configs/plain.yaml), 96 x 96.
        shipped = "plain" if name == "default" else name
        # One model, one pass: the paper config's test-time flip would time two.
        config = load_config(shipped, overrides={"arch": "unet-joint", "evaluation.tta": False})
        height, width = config.data.image_size
        with tempfile.TemporaryDirectory() as folder:
            run = Path(folder) / "run"
            run.mkdir()
            model = build_model(config)
            model.save(run / "model.keras")
            save_config(config, run / "config.yaml")
            exported = export_savedmodel(run, Path(folder) / "served")
            unfolded = export_savedmodel(run, Path(folder) / "served", fold_batch_norms=False)
            served = tf.saved_model.load(str(exported.path))
            floats = served.signatures["serving_default"]
            floats_unfolded = tf.saved_model.load(str(unfolded.path)).signatures["serving_default"]
            encoded = served.signatures["predict_image_bytes"]
            figures = {
                "parameters": int(model.count_params()),
                "batch_norms_folded": exported.metadata["batch_norms_folded"],
                "policy": models.policy_name(model),
                "served_policy": exported.metadata["dtype_policy"]["served"],
            }
            exact = models.float32_copy(model)
            for batch in (int(b) for b in args.batches.split(",")):
                images = rng.random((batch, height, width, 1)).astype(np.float32)
                tensor = tf.constant(images)
                pngs = tf.constant([png] * batch)
                figures[f"batch_{batch}"] = timings = {
                    "keras_predict": median_ms(
                        lambda m=model, x=images: m.predict(x, verbose=0), args.repeats
                    ),
                }
                if exact is not model:
                    timings["keras_predict_float32"] = median_ms(
                        lambda m=exact, x=images: m.predict(x, verbose=0), args.repeats
                    )
                timings |= {
                    "savedmodel_float": median_ms(
                        lambda f=floats, x=tensor: f(images=x), args.repeats
                    ),
                    "savedmodel_float_unfolded": median_ms(
                        lambda f=floats_unfolded, x=tensor: f(images=x), args.repeats
                    ),
                    "savedmodel_image_bytes": median_ms(
                        lambda f=encoded, x=pngs: f(image_bytes=x), args.repeats
                    ),
                }
            results["milliseconds"][name] = figures
            print(name, json.dumps(figures))
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
