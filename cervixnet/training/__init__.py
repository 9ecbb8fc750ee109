"""Training: build, compile and fit a model from a configuration, and write its run folder."""

from cervixnet.training.train import RUN_FILES, TrainResult, build_model, compile_model, train

__all__ = ["RUN_FILES", "TrainResult", "build_model", "compile_model", "train"]
