"""Input throughput of the tf.data pipeline against the training step's consumption.

Builds the training input exactly as ``cervixnet train`` does for a configuration (prepared
data, balanced training split, shuffle, augmentation, batching, prefetch) and measures, in one
process and one after the other on the same machine:

- input images per second without augmentation and with it (the pipeline alone, iterated
  after one warm-up pass that fills its cache);
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
import dataclasses
import json
import math
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

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from cervixnet import models
    from cervixnet.config import load_config
    from cervixnet.data.balance import oversample
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.pipeline import make_dataset
    from cervixnet.data.sources import prepared_data, resolve_data
    from cervixnet.data.splits import split_patients
    from cervixnet.training import build_model, compile_model

    config = load_config(args.config)
    keras.utils.set_random_seed(config.seed)
    manifest = read_manifest(prepared_data(config, resolve_data(config), echo=print))
    train_idx = split_patients(manifest, config.data.split, config.seed).indices(manifest)["train"]
    positions = train_idx
    if config.data.balance.train_preterm_fraction is not None:
        labels = [manifest.records[i].label for i in train_idx]
        positions, _ = oversample(
            train_idx, labels, config.data.balance.train_preterm_fraction, config.seed
        )
    joint = models.is_joint(config.arch)
    common = {
        "image_size": config.data.image_size,
        "channels": config.data.channels,
        "batch_size": config.training.batch_size,
        "joint": joint,
        "training": True,
        "seed": config.seed,
    }
    plain = make_dataset(
        manifest, positions, augment=dataclasses.replace(config.data.augment, enabled=False),
        **common,
    )  # fmt: skip
    augmented = make_dataset(manifest, positions, augment=config.data.augment, **common)
    images_per_second(plain, 1)  # warm-up: decode and fill the cache
    images_per_second(augmented, 1)
    input_plain = images_per_second(plain, args.passes)
    input_augmented = images_per_second(augmented, args.passes)

    model = build_model(config)
    steps = math.ceil(len(positions) / config.training.batch_size)
    compile_model(model, config, positive_weight=1.0, steps_per_epoch=steps)
    memory = augmented.cache()  # one augmented epoch, kept as batches in memory
    for _ in memory:  # fill the cache: training then reads tensors already in memory
        pass
    model.fit(memory, epochs=1, verbose=0)  # warm-up: tracing
    model.fit(augmented, epochs=1, verbose=0)

    def training_rate(dataset) -> float:
        started = time.perf_counter()
        model.fit(dataset, epochs=args.epochs, verbose=0)
        return args.epochs * len(positions) / (time.perf_counter() - started)

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
