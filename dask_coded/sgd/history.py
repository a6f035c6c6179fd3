"""What a training run records: one row per parameter update, and one per gradient received."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["History"]


@dataclass
class History:
    """The error-versus-wall-clock record of one training run.

    Per update (arrays of equal length, the first row is the starting point):

    - ``time``: seconds since the run started (when the update was applied);
    - ``iteration``: updates applied so far;
    - ``gradients``: gradients (mini-batch or coded) applied so far;
    - ``loss``: the objective on the whole data set;
    - ``error``: ``|w - w*| / |w*|``, the distance to the optimum (NaN if unknown);
    - ``parameters``: the parameters after the update (one row each);
    - ``staleness``: mean staleness of the gradients the update applied
      (updates that happened between the parameters a gradient was computed
      at and the update that applied it; 0 for synchronous methods).

    Per gradient received (asynchronous methods): ``gradient_worker`` (the
    index of the worker that sent it) and ``gradient_staleness``.

    Examples
    --------
    >>> import numpy as np
    >>> h = History("sync", time=np.array([0.0, 1.0, 2.0]), error=np.array([1.0, 0.1, 0.01]))
    >>> h.time_to(0.1)
    1.0
    >>> sorted(h.as_dict())[:3]
    ['error', 'gradient_staleness', 'gradient_worker']
    """

    method: str
    time: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iteration: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    gradients: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    parameters: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    staleness: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gradient_worker: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    gradient_staleness: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def as_dict(self) -> dict[str, np.ndarray]:
        """The record as a dict of NumPy arrays (a table without pandas)."""
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "method"}

    def time_to(self, error: float) -> float:
        """Seconds until the distance to the optimum first fell to ``error`` (inf if it never did)."""
        reached = np.flatnonzero(np.asarray(self.error) <= error)
        return float(self.time[reached[0]]) if len(reached) else float("inf")

    def mean_iteration_time(self) -> float:
        """Mean seconds per update."""
        if len(self.time) < 2:
            return float("nan")
        return float((self.time[-1] - self.time[0]) / (self.iteration[-1] - self.iteration[0]))

    def plot(self, ax: Any = None, y: str = "error", **kwargs: Any) -> Any:
        """Plot ``y`` (``"error"`` or ``"loss"``) against wall time on a log scale; needs matplotlib."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.gca()
        ax.semilogy(self.time, getattr(self, y), label=kwargs.pop("label", self.method), **kwargs)
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("|w - w*| / |w*|" if y == "error" else "loss")
        return ax
