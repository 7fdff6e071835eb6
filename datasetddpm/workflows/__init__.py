"""File-level workflows, one module per stage: folders in, checkpoints and reports out. The CLI commands
call these; the names below are re-exported so `from datasetddpm.workflows import X` keeps working."""

from __future__ import annotations

from .problem import Problem, resolve_problem, source_for, ensemble_side, check_ensemble_size
from .ensemble import (
    plan_ensemble_folder, SAME_TRAINING, check_ensemble_replace, train_ensemble_folder, segment_folder,
    evaluate_ensemble, ensemble_class_report, evaluate_folder)
from .deeplab import deeplab_config, plan_deeplab_run, train_deeplab_run
from .probe import probe_folder
from .check_samples import check_samples_run

__all__ = ["Problem", "resolve_problem", "source_for", "ensemble_side", "check_ensemble_size",
           "plan_ensemble_folder", "SAME_TRAINING", "check_ensemble_replace", "train_ensemble_folder",
           "segment_folder", "evaluate_ensemble", "ensemble_class_report", "evaluate_folder",
           "deeplab_config", "plan_deeplab_run", "train_deeplab_run", "probe_folder", "check_samples_run"]
