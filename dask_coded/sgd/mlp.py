"""A model-parallel multilayer perceptron whose every matrix product runs on the cluster (CodeNet).

Dutta, Bai, Jeong, Low, Grover, "A Unified Coded Deep Neural Network
Training Strategy Based on Generalized PolyDot Codes" (ISIT 2018) code the
products of each layer so that a few workers returning garbage cannot spoil
training. Here each layer's weights are split by rows (blocks of neurons)
over the workers, and the three products of a step — ``W a`` forward,
``W^T delta`` backward, and the weight gradient ``delta a^T`` — are
distributed products chosen by ``product``:

- ``"plain"``: ``da.dot`` on the row blocks (what Dask does today);
- ``"replication"``: ``2t + 1 + s`` copies of each block, outvoted per block;
- ``"coded"``: an MDS code with ``s + 2t`` parity blocks, decoded around up
  to ``t`` wrong products and ``s`` late ones (``dask_coded.dot(...,
  max_errors=t)``);
- ``"numpy"``: on the client, the error-free reference.

Parameters and the softmax live on the client; only products go to workers.
"""

from __future__ import annotations

import time
from typing import Any

import dask.array as da
import numpy as np

from ..codes import Code, MDSCode, ReplicationCode
from ..linalg import dot

__all__ = ["MLP", "synthetic_classification"]

PRODUCTS = ("numpy", "plain", "replication", "coded")


class MLP:
    """A ReLU network trained with mini-batch SGD on softmax cross-entropy.

    Parameters
    ----------
    sizes
        Layer widths, input first and classes last (at least two hidden
        layers for CodeNet's setting, e.g. ``(20, 64, 64, 5)``).
    product
        How matrix products are computed (see the module docstring).
    blocks
        Row blocks (``k``) each product's left operand is split into.
    max_errors
        Wrong block products tolerated per product (``t``).
    stragglers
        Late block products not waited for (``s``).
    learning_rate, seed
        SGD step size; seed of the initial weights and of the batch order.

    Examples
    --------
    >>> X, y = synthetic_classification(300, features=8, classes=3, seed=0)
    >>> model = MLP((8, 16, 16, 3), product="numpy", learning_rate=0.5).fit(X, y, epochs=40, batch_size=100)
    >>> bool(model.score(X, y) > 0.9)
    True
    """

    def __init__(
        self,
        sizes: tuple[int, ...],
        *,
        product: str = "coded",
        blocks: int = 4,
        max_errors: int = 1,
        stragglers: int = 1,
        learning_rate: float = 0.1,
        seed: int = 0,
    ) -> None:
        if len(sizes) < 3 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must be at least (inputs, hidden, classes) positive widths, got {sizes}")
        if product not in PRODUCTS:
            raise ValueError(f"unknown product {product!r}; choose one of {PRODUCTS}")
        if blocks < 1 or max_errors < 0 or stragglers < 0:
            raise ValueError("blocks must be positive; max_errors and stragglers non-negative")
        self.sizes = tuple(int(s) for s in sizes)
        self.product = product
        self.blocks = blocks
        self.max_errors = max_errors
        self.stragglers = stragglers
        self.learning_rate = learning_rate
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.weights = [
            rng.standard_normal((out, inp)) * np.sqrt(2.0 / inp)
            for inp, out in zip(self.sizes, self.sizes[1:])
        ]
        self.biases = [np.zeros((out, 1)) for out in self.sizes[1:]]

    @property
    def block_products_per_product(self) -> int:
        """Block products (tasks) one distributed product costs: ``k``, ``k * r`` or ``n``."""
        if self.product == "replication":
            return self.blocks * (2 * self.max_errors + 1 + self.stragglers)
        if self.product == "coded":
            return self.blocks + self.stragglers + 2 * self.max_errors
        return self.blocks

    def _matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.product == "numpy":
            return a @ b
        k = min(self.blocks, a.shape[0])
        left = da.from_array(a, chunks=(-(-a.shape[0] // k), a.shape[1]))
        k = left.numblocks[0]
        if self.product == "plain":
            result = da.dot(left, b)
        else:
            code: Code = (
                ReplicationCode(k, 2 * self.max_errors + 1 + self.stragglers)
                if self.product == "replication"
                else MDSCode(k, k + self.stragglers + 2 * self.max_errors)
            )
            result = dot(left, b, code=code, max_errors=self.max_errors)
        return np.asarray(result.compute())

    def _forward(self, X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        activations, pre = [X.T], []
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = self._matmul(w, activations[-1]) + b
            pre.append(z)
            activations.append(z if layer == len(self.weights) - 1 else np.maximum(z, 0.0))
        return activations, pre

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, one row per sample (computed on the client, error free)."""
        a = np.asarray(X, dtype=float).T
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = w @ a + b
            if layer < len(self.weights) - 1:
                a = np.maximum(a, 0.0)
        return _softmax(a).T

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``X``, ``y`` (a network whose weights went non-finite scores as if it guessed 0)."""
        with np.errstate(invalid="ignore", over="ignore"):
            proba = np.nan_to_num(self.predict_proba(X), nan=-1.0)
        return float((proba.argmax(axis=1) == np.asarray(y)).mean())

    def step(self, X: np.ndarray, y: np.ndarray) -> None:
        """One SGD step on the batch ``X``, ``y``: 3 products per layer, all distributed."""
        activations, pre = self._forward(X)
        delta = _softmax(activations[-1])
        delta[np.asarray(y), np.arange(len(y))] -= 1.0
        delta /= len(y)
        for layer in range(len(self.weights) - 1, -1, -1):
            gradient = self._matmul(delta, activations[layer].T)
            if layer:
                back = self._matmul(self.weights[layer].T, delta)
            self.weights[layer] -= self.learning_rate * gradient
            self.biases[layer] -= self.learning_rate * delta.sum(axis=1, keepdims=True)
            if layer:
                delta = back * (pre[layer - 1] > 0)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 10,
        batch_size: int = 128,
        X_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
    ) -> MLP:
        """Train; ``history_`` holds per-epoch ``epoch``, ``time``, ``test_accuracy`` (on ``X_test``)."""
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must be 2-D with {self.sizes[0]} columns, got shape {X.shape}")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if y.min() < 0 or y.max() >= self.sizes[-1]:
            raise ValueError(f"labels must be in [0, {self.sizes[-1]}), got {y.min()}..{y.max()}")
        X_test, y_test = (X, y) if X_test is None else (np.asarray(X_test, dtype=float), np.asarray(y_test))
        rng = np.random.default_rng(self.seed)
        start = time.perf_counter()
        record: dict[str, list[Any]] = {
            "epoch": [0],
            "time": [0.0],
            "test_accuracy": [self.score(X_test, y_test)],
        }
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(X))
            for begin in range(0, len(X), batch_size):
                batch = order[begin : begin + batch_size]
                with np.errstate(all="ignore"):  # a wrong product may overflow; the record shows it
                    self.step(X[batch], y[batch])
            record["epoch"].append(epoch)
            record["time"].append(time.perf_counter() - start)
            record["test_accuracy"].append(self.score(X_test, y_test))
        self.history_ = {name: np.asarray(values) for name, values in record.items()}
        return self


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=0, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=0, keepdims=True)


def synthetic_classification(
    samples: int, *, features: int = 20, classes: int = 5, spread: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, two per class at random centres, so a class is not one convex region.

    ``spread`` scales the distance between centres (noise has unit variance):
    smaller is harder.

    Examples
    --------
    >>> X, y = synthetic_classification(100, features=4, classes=3)
    >>> X.shape, sorted(set(y.tolist()))
    ((100, 4), [0, 1, 2])
    """
    centres = np.random.default_rng([seed, 7]).standard_normal((2 * classes, features)) * spread
    rng = np.random.default_rng(seed)
    blob = rng.integers(2 * classes, size=samples)
    return centres[blob] + rng.standard_normal((samples, features)), blob % classes
