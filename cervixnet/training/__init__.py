"""Training: build, compile and fit a model from a configuration, and write its run folder."""

from cervixnet.training.build import compile_model
from cervixnet.training.compare import (
    ComparisonResult,
    compare_architectures,
    comparison_table,
    format_comparison,
)
from cervixnet.training.cross_validation import (
    CrossValidationResult,
    cross_validate,
    format_summary,
    summarize_folds,
)
from cervixnet.training.plan import Plan, make_plan, plan_run
from cervixnet.training.train import (
    RUN_FILES,
    TrainingInputs,
    TrainResult,
    build_model,
    resume_training,
    train,
    training_inputs,
)

__all__ = [
    "RUN_FILES",
    "ComparisonResult",
    "CrossValidationResult",
    "Plan",
    "TrainResult",
    "TrainingInputs",
    "build_model",
    "compare_architectures",
    "comparison_table",
    "compile_model",
    "cross_validate",
    "format_comparison",
    "format_summary",
    "make_plan",
    "plan_run",
    "resume_training",
    "summarize_folds",
    "train",
    "training_inputs",
]
