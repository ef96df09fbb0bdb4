"""Small models and data shared by the training, checkpoint and CLI tests."""
from __future__ import annotations

import signal
import textwrap

import attrs
import numpy as np
import pytest

import laminae
from laminae.randomness import rng_from_array, rng_to_array


def tiny_spec(seed: int = 0, lr: float = 0.1, **train) -> dict:
    return {
        "name": "tiny",
        "input": [1, 4, 4],
        "layers": [
            {"type": "affine", "units": 8},
            {"type": "relu"},
            {"type": "affine", "units": 3},
        ],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "sgd", "lr": lr, "momentum": 0.9},
        "train": {"dataset": "mnist-sample", "epochs": 3, "batch_size": 16, "seed": seed, **train},
    }


def tiny_model(registry, seed: int = 0, **kwargs):
    return laminae.build(tiny_spec(seed, **kwargs), registry=registry)


def tiny_data(samples: int = 90, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Three learnable classes; 90 samples in batches of 16 end with a partial batch of 10."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, samples).astype(np.int64)
    x = rng.random((samples, 1, 4, 4), dtype=np.float32) * 0.5
    x[np.arange(samples), 0, y, 0] += 0.5
    return x, y


def models_file(tmp_path, log: str) -> str:
    """A models.toml in ``tmp_path`` with one small model, ``net``, whose ``train.log`` is ``log`` (TOML)."""
    path = tmp_path / "models.toml"
    path.write_text(textwrap.dedent(f'''
        [models.net]
        input = [1, 28, 28]
        layers = [{{ type = "affine", units = 10 }}]
        loss = {{ type = "softmax_cross_entropy" }}
        optimizer = {{ type = "sgd", lr = 0.05 }}
        train = {{ dataset = "mnist-sample", epochs = 2, batch_size = 100, log = {log} }}
    '''))
    return str(path)


class Recorder:
    """A logger that keeps every event it hears."""

    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def of(self, kind: type) -> list:
        """The events of one kind (``EpochEnded``), in order."""
        return [event for event in self.events if isinstance(event, kind)]


class LossSpy:
    """Wraps a loss: counts training calls, and at call ``at`` sends ``signum`` or returns NaN."""

    def __init__(self, loss, at: int | None = None, signum: int = signal.SIGINT, nan: bool = False) -> None:
        self.loss, self.at, self.signum, self.nan = loss, at, signum, nan
        self.calls = 0

    def forward(self, output, target):
        self.calls += 1
        value = self.loss.forward(output, target)
        if self.calls == self.at:
            if self.nan:
                return float("nan")
            signal.raise_signal(self.signum)
        return value

    def backward(self):
        return self.loss.backward()


def params_equal(a: laminae.Network, b: laminae.Network) -> bool:
    """Bit for bit: same names, shapes, dtypes and bytes."""
    return a.params.keys() == b.params.keys() and all(
        a.params[k].dtype == b.params[k].dtype and a.params[k].tobytes() == b.params[k].tobytes() for k in a.params
    )


@attrs.define(eq=False)
class Noise:
    """Adds noise while training, from a generator that is the layer's own state."""

    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)
    _rng: np.random.Generator | None = attrs.field(init=False, default=None)

    def build(self, input_shape, ctx):
        self._rng = ctx.rng.spawn(1)[0]
        return tuple(input_shape)

    def forward(self, x, training):
        return x + self._rng.standard_normal(x.shape).astype(x.dtype) if training else x

    def backward(self, dout):
        return dout

    def state_dict(self):
        return {"rng": rng_to_array(self._rng)}

    def load_state_dict(self, state):
        self._rng = rng_from_array(state["rng"])


def onnx_probabilities(model: laminae.Model, x: np.ndarray, folder) -> np.ndarray:
    """What onnxruntime answers for ``x`` from ``model`` exported into ``folder``
    (skips the test where onnxruntime is not installed)."""
    ort = pytest.importorskip("onnxruntime")
    path = model.export_onnx(folder / "model.onnx")
    (probabilities,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    return probabilities
