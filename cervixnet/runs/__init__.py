"""Runs: a model trained and then scored (``train``), in patient-level folds
(``cross_validate``), or one per architecture on one split (``compare_architectures``)."""

from cervixnet.runs.compare import (
    ComparisonResult,
    compare_architectures,
    comparison_table,
    format_comparison,
)
from cervixnet.runs.cross_validation import (
    CrossValidationResult,
    cross_validate,
    format_summary,
    summarize_folds,
)
from cervixnet.runs.scoring import TrainResult, score_run
from cervixnet.runs.train import RUN_FILES, resume_training, train

__all__ = [
    "RUN_FILES",
    "ComparisonResult",
    "CrossValidationResult",
    "TrainResult",
    "compare_architectures",
    "comparison_table",
    "cross_validate",
    "format_comparison",
    "format_summary",
    "resume_training",
    "score_run",
    "summarize_folds",
    "train",
]
