"""Floor 5, tuning: hyperparameter search on Optuna, driving models through the ``Model`` facade.

A model's ``[models.NAME.tune]`` table declares the search (see
docs/tuning.md and :mod:`laminae.tuning.table`); :func:`tune` runs it, from
``laminae tune`` or from Python::

    from laminae.tuning import tune
    result = tune("models.toml", "lenet", data_dir="../shared/data", workers=2)

Optuna is the optional extra ``laminae[tune]``: it is imported only when a
study runs, so importing this floor (or ``laminae``) never needs it.
This floor imports the model facade and the floors below; only the CLI imports it.
"""
from laminae.tuning.study import TuneResult, trials_table, tune
from laminae.tuning.table import TuneTable

__all__ = ["TuneResult", "TuneTable", "trials_table", "tune"]
