"""Floor 6, reporting: training runs shown on one self-contained HTML page
(``laminae report``): each run's layer tree, hyperparameters and curves, and
its checkpoint scored on the test split, class by class, with the mistakes
it makes most confidently.  From Python::

    from pathlib import Path
    from laminae.registry import make_registry
    from laminae.reporting import read_run, render_page, write_page

    run = read_run(Path("runs/lenet"), "lenet", registry=make_registry(), data_dir="../shared/data")
    write_page(Path("report.html"), render_page([run]))

matplotlib and Jinja2 are the optional extra ``laminae[report]``, imported
only when a page is drawn.  This floor uses the model facade and the floors
below; only the CLI imports it.
"""
from laminae.reporting.page import render_page, write_page
from laminae.reporting.runs import RunReport, read_run, run_names
from laminae.reporting.scoring import ClassScores, Mistakes, confusion_matrix, score

__all__ = [
    "ClassScores", "Mistakes", "RunReport", "confusion_matrix", "read_run", "render_page", "run_names", "score",
    "write_page",
]
