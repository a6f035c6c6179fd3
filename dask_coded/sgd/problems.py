"""The objectives SGD minimises, in NumPy: losses, gradients on row blocks, and reference optima.

A problem is the average over rows of a per-row loss, plus an optional ridge
term. Gradients are returned as *sums* over the rows given (not means), so
the gradients of row partitions add up to the full-data sum; the trainers
divide by the number of rows they used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import optimize, special

__all__ = ["LeastSquares", "LogisticRegression", "Problem", "make_problem"]


class Problem:
    """``loss(w) = mean_i loss_i(w) + l2 / 2 * |w|^2`` over the rows of ``X``.

    Subclasses define :meth:`residual` (``d loss_i / d (x_i . w)`` from the
    row predictions) and :meth:`_row_losses`.
    """

    name = "problem"

    def __init__(self, l2: float = 0.0) -> None:
        if not np.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be a non-negative number, got {l2!r}")
        self.l2 = float(l2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(l2={self.l2:g})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.l2 == self.l2  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.l2))

    def check_targets(self, y: np.ndarray) -> None:
        """Raise ``ValueError`` when ``y`` is not a valid target vector for this problem."""

    def residual(self, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _row_losses(self, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient_sum(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``sum_i d loss_i / d w`` over the rows of ``X`` (the ridge term excluded)."""
        return X.T @ self.residual(X @ w, y)

    def gradient_and_loss_sum(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """(:meth:`gradient_sum`, the sum of the row losses) from one product ``X @ w``."""
        predictions = X @ w
        return X.T @ self.residual(predictions, y), float(self._row_losses(predictions, y).sum())

    def loss_sums(self, parameters: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sum of the row losses for each row of ``parameters`` (ridge term excluded), in pieces.

        Examples
        --------
        >>> import numpy as np
        >>> X, y = np.eye(2), np.zeros(2)
        >>> LeastSquares().loss_sums(np.array([[1.0, 1.0], [2.0, 0.0]]), X, y)
        array([1., 2.])
        """
        parameters = np.atleast_2d(parameters)
        # Pieces of parameters keep the rows x pieces matrix of predictions near 32 MB.
        piece = max(1, 4_000_000 // max(len(y), 1))
        return np.concatenate(
            [
                self._row_losses(X @ parameters[i : i + piece].T, y[:, None]).sum(axis=0)
                for i in range(0, len(parameters), piece)
            ]
            or [np.zeros(0)]
        )

    def hessian_sum(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``sum_i d^2 loss_i / d w^2`` over the rows of ``X`` (the ridge term excluded)."""
        raise NotImplementedError

    def loss(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """The objective at ``w`` on all of ``X``, ``y``."""
        return float(self._row_losses(X @ w, y).mean() + 0.5 * self.l2 * (w @ w))

    def optimum(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The minimiser, to near machine precision (the reference every trainer is checked against)."""
        raise NotImplementedError


class LeastSquares(Problem):
    """``mean_i (x_i . w - y_i)^2 / 2 + l2 / 2 * |w|^2``, solved in closed form.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> problem = LeastSquares()
    >>> w = problem.optimum(X, X @ np.array([1.0, -1.0]))
    >>> np.round(w, 12)
    array([ 1., -1.])
    >>> problem.loss(w, X, X @ w) < 1e-20
    True
    """

    name = "least-squares"

    def residual(self, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
        return predictions - y

    def _row_losses(self, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * (predictions - y) ** 2

    def hessian_sum(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return X.T @ X

    def optimum(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.l2:
            n, d = X.shape
            return np.linalg.solve(X.T @ X / n + self.l2 * np.eye(d), X.T @ y / n)
        return np.linalg.lstsq(X, y, rcond=None)[0]


class LogisticRegression(Problem):
    """Mean log-loss of labels ``y`` in {0, 1}, plus ``l2 / 2 * |w|^2``; reference optimum by L-BFGS.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((200, 3))
    >>> y = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype(float)
    >>> problem = LogisticRegression(l2=0.1)
    >>> w = problem.optimum(X, y)
    >>> bool(np.linalg.norm(problem.gradient_sum(w, X, y) / len(y) + problem.l2 * w) < 1e-8)
    True
    """

    name = "logistic"

    def check_targets(self, y: np.ndarray) -> None:
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("logistic regression needs labels y in {0, 1}")

    def residual(self, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
        return special.expit(predictions) - y

    def _row_losses(self, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
        # log(1 + e^z) - y z, without overflow
        return np.logaddexp(0.0, predictions) - y * predictions

    def hessian_sum(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = special.expit(X @ w)
        return X.T @ ((p * (1.0 - p))[:, None] * X)

    def optimum(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        n = len(y)

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            return self.loss(w, X, y), self.gradient_sum(w, X, y) / n + self.l2 * w

        result = optimize.minimize(
            objective, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0}
        )
        return np.asarray(result.x)


_PROBLEMS = {"least-squares": LeastSquares, "logistic": LogisticRegression}


def make_problem(problem: Problem | str, **options: Any) -> Problem:
    """A problem object from an instance or a name (``"least-squares"``, ``"logistic"``).

    Examples
    --------
    >>> make_problem("logistic", l2=0.01)
    LogisticRegression(l2=0.01)
    """
    if isinstance(problem, Problem):
        return problem
    if problem not in _PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; choose one of {sorted(_PROBLEMS)} or pass a Problem")
    return _PROBLEMS[problem](**options)
