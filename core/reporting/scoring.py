"""A trained model scored on a test split, class by class: the confusion
matrix, each class's accuracy, and the mistakes it makes most confidently.

One pass of the network gives all of it: the predicted class of a sample is
its most probable one (what :meth:`laminae.Model.predict` returns), and
that probability is how sure the model was.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.data import Split
from laminae.model import Model
from laminae.training.data_checks import check_data

MISTAKES = 24
"""How many wrong predictions a report shows per run, unless told otherwise."""


@attrs.frozen(eq=False)
class Mistakes:
    """Test samples the model got wrong, the most confident first: their
    indices in the test split, images, true and predicted labels, and the
    probability the model gave its (wrong) prediction."""

    indices: np.ndarray
    images: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


@attrs.frozen(eq=False)
class ClassScores:
    """How a model did on a test split.

    ``confusion[t, p]`` counts the samples of true class ``t`` predicted as
    ``p`` (rows: true classes, columns: predictions), so its diagonal holds
    the correct ones and it sums to the split's size.
    """

    class_names: tuple[str, ...]
    confusion: np.ndarray
    mistakes: Mistakes
    source: str
    """The data set in words ("MNIST from /data/mnist (IDX)")."""

    @property
    def samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else float("nan")

    @property
    def class_counts(self) -> np.ndarray:
        """The test samples of each true class."""
        return self.confusion.sum(axis=1)

    @property
    def class_accuracy(self) -> np.ndarray:
        """Each class's share of its samples predicted right (NaN for a class with none)."""
        counts = self.class_counts
        return np.where(counts > 0, np.diag(self.confusion) / np.maximum(counts, 1), np.nan)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``classes`` x ``classes`` counts: row the true class, column the prediction."""
    flat = np.bincount(true.astype(np.int64) * classes + predicted, minlength=classes * classes)
    return flat.reshape(classes, classes)


def score(
    model: Model, test: Split, class_names: tuple[str, ...], source: str, mistakes: int = MISTAKES
) -> ClassScores:
    """Predict every sample of ``test`` once; the confusion matrix over
    ``class_names``, and up to ``mistakes`` wrong predictions, the most
    probable first (ties: the lower index first)."""
    check_data(model.network, test.x, test.y, "test data")
    probabilities = model.predict_proba(test.x)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(predicted != test.y)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")[:mistakes]]
    outputs = probabilities.shape[1]  # a model may output more classes than the data set has
    names = class_names + tuple(str(label) for label in range(len(class_names), outputs))
    return ClassScores(
        class_names=names,
        confusion=confusion_matrix(test.y, predicted, len(names)),
        mistakes=Mistakes(worst, test.x[worst], test.y[worst], predicted[worst], confidence[worst]),
        source=source,
    )
