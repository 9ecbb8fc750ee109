"""Input throughput of the tf.data pipeline against the training step's consumption.

Builds the training input exactly as ``cervixnet train`` does for a configuration (prepared
data, balanced training split, shuffle, augmentation, batching, prefetch) and measures, in one
process and one after the other on the same machine:

- input images per second without augmentation and with it (the pipeline alone, after one
  warm-up pass; every epoch reads and decodes the prepared images anew, as in training);
- training images per second: ``model.fit`` of the configured network on batches already in
  memory, so that the input costs nothing;
- training images per second fed by the real pipeline, which should equal the previous figure
  when the input is not the bottleneck.

The two training timings alternate ``--repeats`` times and their medians are reported.

The ratio input / training says how much headroom the input has (the goal: at least 5x at
the default configuration).

    python benchmarks/input_pipeline.py --out input_pipeline.json
    python benchmarks/input_pipeline.py --config paper --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def images_per_second(dataset, passes: int) -> float:
    """Iterates ``dataset`` ``passes`` times and returns images per second."""
    count, started = 0, time.perf_counter()
    for _ in range(passes):
        for images, *_ in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML config or shipped name")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the input")
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs")
    parser.add_argument("--repeats", type=int, default=3, help="alternated training timings")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from script import cervixnet_first

    cervixnet_first()  # TensorFlow set up as in cervixnet train
    import keras
    import numpy as np
    import tensorflow as tf
    from timing import step_clock

    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.sources import prepared_data, resolve_data
    from cervixnet.data.splits import split_patients
    from cervixnet.training import build_model, compile_model, training_inputs

    config = load_config(args.config, overrides={"training.epochs": 1})
    keras.utils.set_random_seed(config.seed)
    manifest = read_manifest(prepared_data(config, resolve_data(config), echo=print))
    indices = split_patients(manifest, config.data.split, config.seed).indices(manifest)
    # cervixnet train's own input, with and without augmentation: one epoch each.
    inputs = training_inputs(config, manifest, indices)
    unaugmented = config.replace({"data.augment.enabled": False})
    plain = training_inputs(unaugmented, manifest, indices).train_data
    augmented = inputs.train_data
    positions = inputs.train_positions
    images_per_second(plain, 1)  # warm-up: tracing, the file cache
    images_per_second(augmented, 1)
    input_plain = images_per_second(plain, args.passes)
    input_augmented = images_per_second(augmented, args.passes)

    model = build_model(config)
    compile_model(model, config, inputs.positive_weight or 1.0, inputs.steps_per_epoch)
    memory = augmented.cache()  # one augmented epoch, kept as batches in memory
    for _ in memory:  # fill the cache: training then reads tensors already in memory
        pass
    model.fit(memory, epochs=1, verbose=0)  # warm-up: tracing
    model.fit(augmented, epochs=1, verbose=0)

    def training_rate(dataset) -> float:
        clock = step_clock()  # the steps (input included), not fit's set-up (timing.py)
        model.fit(dataset, epochs=args.epochs, verbose=0, callbacks=[clock])
        return args.epochs * len(positions) / sum(clock.step_seconds)

    # Alternated and repeated, so that a slow moment of the machine hits both alike.
    rates = {"memory": [], "pipeline": []}
    for _ in range(args.repeats):
        rates["memory"].append(training_rate(memory))
        rates["pipeline"].append(training_rate(augmented))
    train_memory = float(np.median(rates["memory"]))
    train_pipeline = float(np.median(rates["pipeline"]))

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "config": args.config or "default",
        "arch": config.arch,
        "image_size": list(config.data.image_size),
        "batch_size": config.training.batch_size,
        "train_images_per_epoch": len(positions),
        "input_images_per_second": {
            "no_augmentation": round(input_plain, 1),
            "augmentation": round(input_augmented, 1),
        },
        "training_images_per_second": {
            "batches_in_memory": round(train_memory, 1),
            "real_pipeline": round(train_pipeline, 1),
        },
        "headroom": round(input_augmented / train_memory, 1),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
