"""Input throughput of the tf.data pipeline against the training step's consumption.

Builds the training input exactly as ``cervixnet train`` does for a configuration (prepared
data, balanced training split, shuffle, augmentation, batching, prefetch) and measures, in one
process and one after the other on the same machine:

- input images per second without augmentation and with it (the pipeline alone, after one
  warm-up pass), with the configuration's ``data.cache`` and with ``data.cache: false``
  (every epoch reads and decodes the prepared images anew);
- training images per second: ``model.fit`` of the configured network on batches already in
  memory, so that the input costs nothing;
- training images per second fed by the real pipeline, with the configuration's cache and
  without it, which should equal the previous figure when the input is not the bottleneck;
- the same batches in memory through ``training_throughput.py``'s bare fit of the same model
  (Keras' binary cross-entropy, no metrics), so that the cost of cervixnet's losses and
  training metrics shows apart from the input's.

Each training timing also gives the process's CPU milliseconds per image over the same steps.

The training timings alternate ``--repeats`` times and their medians are reported.

The ratio input / training says how much headroom the input has (the goal: at least 5x at
the default configuration).

    python -m benchmarks.input_pipeline --out input_pipeline.json
    python -m benchmarks.input_pipeline --config paper --epochs 1
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
    parser.add_argument(
        "--config", default="plain", help="YAML config or shipped name (fixed sizes)"
    )
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the input")
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs")
    parser.add_argument("--repeats", type=int, default=3, help="alternated training timings")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from benchmarks.script import cervixnet_first

    cervixnet_first()  # TensorFlow set up as in cervixnet train
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.timing import step_clock
    from benchmarks.training_throughput import compile_bare
    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.sources import prepared_data, resolve_data
    from cervixnet.data.splits import split_patients
    from cervixnet.training import build_model, compile_model, training_inputs

    config = load_config(args.config, overrides={"training.epochs": 1})
    keras.utils.set_random_seed(config.seed)
    manifest = read_manifest(prepared_data(config, resolve_data(config), echo=print))
    indices = split_patients(manifest, config.data.split, config.seed).indices(manifest)
    # cervixnet train's own input, with and without augmentation and the cache: one epoch each.
    inputs = training_inputs(config, manifest, indices)
    positions = inputs.train_positions
    uncached = config.replace({"data.cache": False})
    unaugmented = {"data.augment.enabled": False}
    pipelines = {
        "no_augmentation": training_inputs(config.replace(unaugmented), manifest, indices),
        "augmentation": inputs,
        "no_augmentation_uncached": training_inputs(
            uncached.replace(unaugmented), manifest, indices
        ),
        "augmentation_uncached": training_inputs(uncached, manifest, indices),
    }
    input_rates = {}
    for name, pipeline in pipelines.items():
        images_per_second(pipeline.train_data, 1)  # warm-up: tracing, the file cache, the cache
        input_rates[name] = images_per_second(pipeline.train_data, args.passes)
    augmented = inputs.train_data
    decoded = pipelines["augmentation_uncached"].train_data

    model = build_model(config)
    compile_model(model, config, inputs.positive_weight or 1.0, inputs.steps_per_epoch)
    memory = augmented.cache()  # one augmented epoch, kept as batches in memory
    for _ in memory:  # fill the cache: training then reads tensors already in memory
        pass
    bare = build_model(config)  # the same network, compiled as training_throughput's bare fit
    bare.set_weights(model.get_weights())
    compile_bare(bare, config.training.jit_compile)
    model.fit(memory, epochs=1, verbose=0)  # warm-up: tracing
    model.fit(augmented, epochs=1, verbose=0)
    model.fit(decoded, epochs=1, verbose=0)
    # The same batches without their per-output sample weights, which the bare fit has not.
    unweighted = memory.map(lambda images, targets, *weights: (images, targets))
    bare.fit(unweighted, epochs=1, verbose=0)

    def training_rate(trained, dataset) -> tuple[float, float]:
        """Images per second of the steps (input included), and CPU milliseconds per image."""
        clock = step_clock()  # the steps, not fit's set-up (timing.py)
        trained.fit(dataset, epochs=args.epochs, verbose=0, callbacks=[clock])
        images = args.epochs * len(positions)
        return images / sum(clock.step_seconds), 1000 * clock.cpu_seconds / images

    # Alternated and repeated, so that a slow moment of the machine hits all alike.
    timed = {
        "batches_in_memory": (model, memory),
        "real_pipeline": (model, augmented),
        "real_pipeline_uncached": (model, decoded),
        "bare_fit_in_memory": (bare, unweighted),
    }
    rates: dict[str, list[float]] = {name: [] for name in timed}
    cpu_ms: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name, (trained, dataset) in timed.items():
            rate, cpu = training_rate(trained, dataset)
            rates[name].append(rate)
            cpu_ms[name].append(cpu)
    training = {name: float(np.median(values)) for name, values in rates.items()}
    cpu = {name: float(np.median(values)) for name, values in cpu_ms.items()}

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "config": args.config,
        "arch": config.arch,
        "image_size": list(config.data.image_size),
        "batch_size": config.training.batch_size,
        "train_images_per_epoch": len(positions),
        "cache": config.data.cache,
        "input_images_per_second": {name: round(rate, 1) for name, rate in input_rates.items()},
        "training_images_per_second": {name: round(rate, 1) for name, rate in training.items()},
        "real_pipeline_fraction": {
            name: round(training[name] / training["batches_in_memory"], 3)
            for name in ("real_pipeline", "real_pipeline_uncached")
        },
        # cervixnet's losses and metrics against Keras' bare ones, both on batches in memory.
        "losses_and_metrics_fraction": round(
            training["batches_in_memory"] / training["bare_fit_in_memory"], 3
        ),
        "real_pipeline_vs_bare_fit": round(
            training["real_pipeline"] / training["bare_fit_in_memory"], 3
        ),
        "training_images_per_second_runs": {
            name: [round(rate, 1) for rate in values] for name, values in rates.items()
        },
        # The process's CPU time per image over the same steps (every thread, spinning included).
        "training_cpu_ms_per_image": {name: round(value, 2) for name, value in cpu.items()},
        "training_cpu_ms_per_image_runs": {
            name: [round(value, 2) for value in values] for name, values in cpu_ms.items()
        },
        "headroom": round(input_rates["augmentation"] / training["batches_in_memory"], 1),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
