"""What the benchmark scripts share: a command line from the docstring, cervixnet loaded first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def parser_from_docstring(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is ``doc``'s first paragraph and epilog the rest."""
    summary, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(
        description=summary, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def cervixnet_first() -> None:
    """Sets TensorFlow's environment as the ``cervixnet`` command does, before anything loads it.

    TensorFlow then starts with cervixnet's settings (oneDNN on x86-64 CPUs, its log level),
    so that a bare Keras case runs on the same kernels as cervixnet's own path.
    """
    from cervixnet.cli.quiet import set_environment

    set_environment(verbose=False)


# The repository root: the working folder of every subprocess a benchmark starts, so that
# ``benchmarks`` imports there as it does in the parent.
ROOT = Path(__file__).resolve().parents[1]


def module_command(file: str, *args: str) -> list[str]:
    """The command that runs the benchmark module of ``file`` (its ``__file__``) in a fresh
    Python with ``args``; run it with ``cwd=ROOT``."""
    return [sys.executable, "-m", f"benchmarks.{Path(file).stem}", *args]


def patient_folds(data: str, folds: int, seed: int) -> tuple[Any, list[Any]]:
    """The default config on ``data`` and its ``folds`` patient-level splits, as ``cervixnet
    train --folds`` makes them (``cervixnet.data.splits.cross_validation_splits``)."""
    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.sources import prepared_data, resolve_data
    from cervixnet.data.splits import cross_validation_splits

    config = load_config(overrides={"data.path": data, "seed": seed})
    # The folds are by patient; any prepared copy of the data gives the same ones.
    plain = load_config("plain", overrides={"data.path": data, "seed": seed})
    listing = read_manifest(prepared_data(plain, resolve_data(config)))
    train_share, val_share, _ = config.data.split
    return config, cross_validation_splits(
        listing, folds, val_share / (train_share + val_share), seed=seed
    )
