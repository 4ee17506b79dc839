"""Streaming machinery of the covariance-based measures: accumulators and eigenvalues.

Every covariance-based measure is a function of :class:`repscope.stats.Moments` (count, mean,
centred cross-product sum, float64). The registry's ``accumulator``
(:class:`repscope.registry.Streaming`) makes the measure's empty accumulator, an immutable
value with the init / update / merge / compute protocol (:class:`repscope.registry.Accumulator`)::

    acc = registry.get("effective_rank").accumulator(d)   # init: empty state for d features
    acc = acc.update(X_batch)                              # once per batch, any batch sizes
    acc = acc.merge(other)                                 # partial state from another worker
    est = acc.compute({"param": value})                    # the batch function's Estimate

and the batch function is exactly ``accumulator(d).update(X).compute(params)``. Accumulators
are frozen dataclasses (a name and a state) and pickle, so map (update per shard) + reduce
(merge) runs on any executor. :func:`measures_from_batches` computes many measures in one pass.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from repscope import registry
from repscope._validate import (
    ArrayLike,
    as_numpy,
    as_torch,
    check_array,
    check_choice,
    check_int,
)
from repscope.registry import compute_accumulated
from repscope.results import Estimate
from repscope.stats import Moments

__all__ = [
    "CovarianceAccumulator",
    "UnitSum",
    "UnitSumAccumulator",
    "batch_moments",
    "covariance_eigenvalues",
    "measure_from_batches",
    "measure_from_moments",
    "measures_from_batches",
    "moments_from_batches",
    "spectrum_from_batches",
]

log = logging.getLogger(__name__)


def degenerate(fn: str, reason: str) -> float:
    """Warn that ``fn`` is undefined on this input and return NaN (the documented result)."""
    warnings.warn(f"{fn} is undefined here ({reason}); returning NaN.", RuntimeWarning,
                  stacklevel=3)
    return float("nan")


def moments_of(X: ArrayLike, fn: str, *, min_samples: int = 2, device: Any = None) -> Moments:
    """Validate ``X`` (n, d) and return its float64 :class:`Moments` (one streaming update)."""
    X = check_array(X, fn, min_samples=min_samples)
    return Moments.init(X.shape[1]).merge(batch_moments(X, device))


def batch_moments(X: ArrayLike, device: Any = None) -> Moments:
    """Moments of one batch computed with torch in float64 on ``device`` (e.g. ``"cuda"``).

    The same arithmetic as ``Moments.init(d).update(X)`` (batch mean, centred ``Xc^T Xc``),
    with the O(b d^2) product on the accelerator; only the (d,) mean and (d, d) sum come back.
    ``device=None`` uses the device of a CUDA tensor input, else numpy on the CPU.
    """
    if device is None and isinstance(X, torch.Tensor) and X.device.type != "cpu":
        device = X.device
    if device is None:
        return Moments.init(X.shape[1]).update(X)
    Xt = as_torch(X).to(device=device, dtype=torch.float64)  # (b, d)
    mean = Xt.mean(0)  # (d,)
    Xc = Xt - mean  # (b, d)
    return Moments(int(Xt.shape[0]), mean.cpu().numpy(), (Xc.T @ Xc).cpu().numpy())


def check_state(state: Moments, fn: str, *, min_samples: int = 2) -> None:
    if state.n < min_samples:
        raise ValueError(f"{fn} needs at least {min_samples} samples (rows); got n_samples={state.n}.")


@dataclass(frozen=True)
class CovarianceAccumulator:
    """Streaming state of a measure that is a function of the covariance (:class:`Moments`).

    Immutable: ``update`` and ``merge`` return new accumulators; picklable (a name and a
    Moments), so partial states travel between workers. ``compute`` runs the measure's
    registered ``Moments -> Estimate`` function (:attr:`repscope.registry.Streaming.compute`).
    """

    measure: str
    "Registered measure name."
    state: Moments
    "Float64 count, mean and centred cross-product sum of the rows seen."
    device: str | None = None
    "Torch device for the per-batch product (None: numpy on the CPU)."
    state_key: ClassVar[str] = "moments"
    "Accumulators with the same key share one state in :func:`measures_from_batches`."
    blocks: ClassVar[type | None] = None

    @classmethod
    def empty(cls, measure: str, d: int, device: str | None = None) -> CovarianceAccumulator:
        """The empty state of ``measure`` for ``d`` features."""
        d = check_int(d, "d", f"{measure} (streaming init)", low=1)
        return cls(measure, Moments.init(d), device)

    @classmethod
    def key(cls) -> str:
        return cls.state_key

    def update(self, X: ArrayLike) -> CovarianceAccumulator:
        """Add a batch of rows ``(b, d)`` (validated: float, finite, 2-D)."""
        X = check_array(X, f"{self.measure} (streaming update)")
        if X.shape[1] != self.state.d:
            raise ValueError(f"{self.measure} (streaming update) expects a batch of shape "
                             f"(b, {self.state.d}); got {tuple(X.shape)}.")
        return replace(self, state=self.state.merge(batch_moments(X, self.device)))

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """Combine with the partial state of another worker (associative, commutative)."""
        return replace(self, state=self.state.merge(other.state))

    def for_measure(self, name: str) -> CovarianceAccumulator:
        return replace(self, measure=name)

    def compute(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Estimate:
        """The measure's :class:`Estimate` from the accumulated state."""
        return compute_accumulated(self, self.state, params, kw)


@dataclass(frozen=True)
class UnitSum:
    """Count and sum of unit-normalised rows: the sufficient statistic of mean cosine."""

    n: int
    "Rows seen so far."
    total: np.ndarray
    "(d,) float64 sum of x_i / ||x_i||."

    def merge(self, other: UnitSum) -> UnitSum:
        if other.total.shape != self.total.shape:
            raise ValueError(f"Cannot merge UnitSum of d={self.total.shape[0]} with "
                             f"d={other.total.shape[0]}.")
        return UnitSum(self.n + other.n, self.total + other.total)


@dataclass(frozen=True)
class UnitSumAccumulator:
    """Streaming state of measures of the mean unit vector (anisotropy); same protocol."""

    measure: str
    state: UnitSum
    state_key: ClassVar[str] = "unit_sum"
    blocks: ClassVar[type | None] = None

    @classmethod
    def empty(cls, measure: str, d: int, device: str | None = None) -> UnitSumAccumulator:
        d = check_int(d, "d", f"{measure} (streaming init)", low=1)
        return cls(measure, UnitSum(0, np.zeros(d)))

    @classmethod
    def key(cls) -> str:
        return cls.state_key

    def update(self, X: ArrayLike) -> UnitSumAccumulator:
        fn = f"{self.measure} (streaming update)"
        X = as_numpy(check_array(X, fn), np.float64)  # (b, d)
        norms = np.linalg.norm(X, axis=1)  # (b,)
        if np.any(norms == 0):
            raise ValueError(
                f"{fn} needs rows with non-zero norm (cosine is undefined for a zero vector); "
                f"got {int(np.sum(norms == 0))} zero row(s), the first at row {int(np.argmax(norms == 0))}."
            )
        return replace(self, state=self.state.merge(UnitSum(X.shape[0], (X / norms[:, None]).sum(0))))

    def merge(self, other: UnitSumAccumulator) -> UnitSumAccumulator:
        return replace(self, state=self.state.merge(other.state))

    def for_measure(self, name: str) -> UnitSumAccumulator:
        return replace(self, measure=name)

    def compute(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Estimate:
        return compute_accumulated(self, self.state, params, kw)


def covariance_eigenvalues(
    state: Moments,
    *,
    method: str = "exact",
    n_components: int | None = None,
    device: Any = None,
    seed: int = 0,
    fn: str = "covariance_eigenvalues",
) -> np.ndarray:
    """Descending eigenvalues of the sample covariance ``m2 / (n - 1)`` (float64, clipped at 0).

    ``method="exact"`` uses ``torch.linalg.eigvalsh`` in float64 on ``device`` (CPU or CUDA) and
    returns all ``d`` eigenvalues (at most ``n - 1`` of them are non-zero). ``"randomized"``
    returns the top ``n_components`` from seeded randomized subspace iteration (Halko, Martinsson
    and Tropp 2011) on the covariance, for large ``d`` when only the head of the spectrum matters.
    """
    method = check_choice(method, "method", fn, ["exact", "randomized"])
    cov = torch.from_numpy(state.covariance(ddof=1)).to(device=device)  # (d, d) float64
    if method == "exact":
        ev = torch.linalg.eigvalsh(cov)  # ascending
    else:
        d = state.d
        if n_components is None:
            raise ValueError(f"The 'n_components' parameter of {fn} must be an int in [1, d={d}] "
                             f"when method='randomized'. Got None instead.")
        k = check_int(n_components, "n_components", fn, low=1, high=d, high_inclusive=True,
                      high_name="d")
        ev = _randomized_eigvalsh(cov, k, seed=seed)
    ev = ev.flip(0).clamp_min(0.0).cpu().numpy()  # (d,) or (k,), descending
    return np.ascontiguousarray(ev)


def _randomized_eigvalsh(C: torch.Tensor, k: int, *, seed: int, n_iter: int = 6,
                         oversample: int = 10) -> torch.Tensor:
    """Top-k eigenvalues (ascending) of a PSD matrix by randomized subspace iteration."""
    d = C.shape[0]
    q = min(d, k + oversample)
    g = torch.Generator(device=C.device).manual_seed(seed)
    Q = torch.randn(d, q, generator=g, device=C.device, dtype=C.dtype)  # (d, q)
    Q, _ = torch.linalg.qr(C @ Q)
    for _ in range(n_iter):
        Q, _ = torch.linalg.qr(C @ Q)
    B = Q.T @ C @ Q  # (q, q)
    return torch.linalg.eigvalsh((B + B.T) / 2)[-k:]


def measure_from_moments(name: str, state: Moments, **params: Any) -> Estimate:
    """Compute the covariance measure ``name`` from accumulated :class:`Moments`."""
    spec = registry.get(name)  # unknown names raise listing close matches
    if spec.accumulator is None or spec.accumulator.kind is not CovarianceAccumulator:
        covariance = [s.name for s in registry.specs() if s.accumulator is not None
                      and s.accumulator.kind is CovarianceAccumulator]
        raise ValueError(f"Measure '{name}' is not computed from Moments; covariance measures: "
                         f"{covariance}.")
    return CovarianceAccumulator(name, state).compute(params)


def moments_from_batches(batches: Iterable[ArrayLike]) -> Moments:
    """Accumulate float64 :class:`Moments` over an iterable of ``(b, d)`` batches."""
    state: Moments | None = None
    for X in batches:
        X = check_array(X, "moments_from_batches")
        state = (state or Moments.init(X.shape[1])).update(X)
    if state is None:
        raise ValueError("moments_from_batches got no batches; it needs at least one (b, d) array.")
    return state


def measures_from_batches(
    names: Sequence[str],
    batches: Iterable[ArrayLike],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    device: str | None = None,
) -> dict[str, Estimate]:
    """Compute several streamable single-representation measures in ONE pass over ``batches``.

    Measures whose accumulators share a ``state_key`` (every covariance measure shares
    ``"moments"``) share one state, so the cost is one covariance accumulation however many
    spectral measures are asked for. ``params`` maps a measure name to its keyword parameters.
    ``device`` (e.g. ``"cuda"``) runs the per-batch covariance product there, in float64.
    """
    params = dict(params or {})
    specs = [registry.get(n) for n in names]
    for s in specs:
        if s.accumulator is None or s.kind != "single":
            streamable = [t.name for t in registry.specs() if t.accumulator is not None
                          and t.kind == "single"]
            raise ValueError(f"Measure '{s.name}' is not streamable; streamable measures: "
                             f"{streamable}.")
    shared: dict[str, Any] = {}  # state_key -> accumulator holding the shared state
    for X in batches:
        X = check_array(X, "measures_from_batches")
        if not shared:
            for s in specs:
                acc = s.accumulator(X.shape[1], device=device)
                shared.setdefault(acc.state_key, acc)
        shared = {key: acc.update(X) for key, acc in shared.items()}
    if not shared:
        raise ValueError("measures_from_batches got no batches; it needs at least one (b, d) array.")
    out = {}
    for s in specs:
        kw = dict(params.get(s.name, {}))
        if device is not None and "device" in s.defaults:
            kw.setdefault("device", device)
        out[s.name] = shared[s.accumulator.state_key(kw)].for_measure(s.name).compute(kw)
    log.debug("streamed %d rows for %s", next(iter(shared.values())).state.n, list(names))
    return out


def measure_from_batches(name: str, batches: Iterable[ArrayLike], *, device: str | None = None,
                         **params: Any) -> Estimate:
    """Compute one streamable measure over an iterable of batches (e.g. ``store.iter_batches``)."""
    return measures_from_batches([name], batches, {name: params}, device=device)[name]


def spectrum_from_batches(batches: Iterable[ArrayLike], *, device: str | None = None,
                          **params: Any) -> Estimate:
    """The ``spectrum`` measure over a stream of batches, in memory O(d^2) whatever n is::

        store = ActivationStore.open(path)
        est = spectrum_from_batches(store.iter_batches("encoder.layer.3", batch_size=16384))
    """
    return measure_from_batches("spectrum", batches, device=device, **params)


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a probability vector; 0 log 0 = 0."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum()) if p.size else 0.0

