"""Training: plan, build, compile and fit a model from a configuration into its run folder
(``fit_run``); ``cervixnet.runs`` scores what it fitted."""

from cervixnet.training.build import compile_model
from cervixnet.training.fit import (
    FittedRun,
    TrainingInputs,
    build_model,
    checkpoint_monitor,
    fit_run,
    training_inputs,
)
from cervixnet.training.plan import Plan, make_plan, plan_run

__all__ = [
    "FittedRun",
    "Plan",
    "TrainingInputs",
    "build_model",
    "checkpoint_monitor",
    "compile_model",
    "fit_run",
    "make_plan",
    "plan_run",
    "training_inputs",
]
