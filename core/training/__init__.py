"""Floor 3, training: the loop and its state, the ways of running a step (one
thread, slices on threads or in forked worker processes), batches, signals,
progress, metrics, run directories and the checks that data fits a model.
Imports the persistence and network floors and the plugin API."""
from laminae.training.evaluation import evaluate
from laminae.training.loop import FitOptions, TrainingResult, fit
from laminae.training.metrics import EpochMetrics
from laminae.training.state import TrainingState

__all__ = ["EpochMetrics", "FitOptions", "TrainingResult", "TrainingState", "evaluate", "fit"]
