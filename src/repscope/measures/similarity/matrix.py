"""Layer x layer, model x model and checkpoint x checkpoint similarity matrices.

:func:`similarity_matrix` takes named representations of the same ``n`` inputs and a
registered pair measure. For measures with a prepared path (the registry's
:class:`~repscope.registry.Prepared` capability) each representation is prepared ONCE
(centred float64 copy and its Gram block for the moment-based measures, with their whitening
or partial whitening, a k-NN table for neighbourhood measures, the ranked RDM for RSA) and
every pair then costs only the cheap comparison step, e.g. one ``d x d`` cross-product for
linear CKA; symmetric measures with a batched ``all_pairs`` path (the moment-based ones) form
every cross block from one block matrix. Measures registered with ``prepared=None`` are
called pair by pair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope import registry
from repscope._validate import ArrayLike, check_array, param_error, resolve_device
from repscope.results import Estimate

__all__ = ["SimilarityMatrix", "similarity_matrix"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimilarityMatrix:
    """A square matrix of one pair measure between named representations."""

    names: tuple[str, ...]
    "Row / column labels, in the order given."
    values: np.ndarray
    "(m, m) float64; ``values[i, j] = measure(reps[names[i]], reps[names[j]])``."
    measure: str
    "Registered measure name."
    params: Mapping[str, Any] = field(default_factory=dict)
    "Resolved measure parameters."
    symmetric: bool = True
    "Whether only the upper triangle was computed and mirrored."
    estimates: Mapping[tuple[str, str], Estimate] = field(default_factory=dict)
    "Full result per computed (row, column) pair, with diagnostics."

    def pairs(self) -> Iterator[tuple[str, str, float]]:
        """(row name, column name, value) for every off-diagonal computed pair."""
        for (a, b), est in self.estimates.items():
            if a != b:
                yield a, b, est.value


def similarity_matrix(
    reps: Mapping[str, ArrayLike],
    measure: str = "cka_linear",
    *,
    params: Mapping[str, Any] | None = None,
    device: str | None = None,
    diagonal: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SimilarityMatrix:
    """All pairwise values of ``measure`` between the representations in ``reps``.

    Parameters
    ----------
    reps : name -> (n, d_name) array or tensor; every representation has the same n rows
        (the same inputs), widths may differ.
    measure : a registered pair measure (``repscope.registry.names(kind="pair")``).
    params : parameters of the measure (defaults filled in from its signature).
    device : torch device for the prepared statistics (measures with a ``device`` parameter).
    diagonal : also compute ``measure(X, X)`` (the identity value); else the diagonal is NaN.
    progress : called as ``progress(done, total)`` after each pair.

    Symmetric measures compute the upper triangle and mirror it; asymmetric ones (pwcca)
    compute every ordered pair.
    """
    fn = "similarity_matrix"
    spec = registry.get(measure)
    if spec.kind != "pair":
        raise param_error(fn, "measure", "a pair measure (registry.names(kind='pair'))", measure)
    resolved = spec.resolve_params(params)
    if device is not None and "device" in resolved:
        resolved["device"] = device
    names = tuple(reps)
    if len(names) < 1:
        raise ValueError(f"{fn} needs at least one representation; got none.")
    arrays = {name: check_array(reps[name], fn, name=name, min_samples=spec.min_samples)
              for name in names}
    n = arrays[names[0]].shape[0]
    for name, A in arrays.items():
        if A.shape[0] != n:
            raise ValueError(f"{fn} compares representations of the same inputs, so every one "
                             f"must have the same number of rows; '{names[0]}' has {n} and "
                             f"'{name}' has {A.shape[0]}.")
    todo = [(i, j) for i in range(len(names)) for j in range(len(names))
            if (diagonal or i != j) and (not spec.symmetric or j >= i)]
    prepared = spec.prepared
    if prepared is not None and prepared.all_pairs is not None and spec.symmetric:
        dev = resolve_device(arrays[names[0]], resolved.get("device") or device)
        batched = prepared.all_pairs(arrays, names, dev, resolved)
        log.info("%s: %s for %d representations in one block pass", fn, spec.name, len(names))

        def compute(a: str, b: str) -> Estimate:
            return batched[(a, b)]
    elif prepared is not None:
        dev = resolve_device(arrays[names[0]], resolved.get("device") or device)
        states = {name: prepared.prepare(arrays[name], dev, resolved, name) for name in names}
        log.info("%s: prepared %d representations for %s", fn, len(names), spec.name)

        def compute(a: str, b: str) -> Estimate:
            return prepared.compare(states[a], states[b], resolved)
    else:
        def compute(a: str, b: str) -> Estimate:
            return spec.fn(arrays[a], arrays[b], **resolved)

    values = np.full((len(names), len(names)), np.nan)
    estimates: dict[tuple[str, str], Estimate] = {}
    for done, (i, j) in enumerate(todo, start=1):
        est = compute(names[i], names[j])
        estimates[(names[i], names[j])] = est
        values[i, j] = est.value
        if spec.symmetric:
            values[j, i] = est.value
        if progress is not None:
            progress(done, len(todo))
    return SimilarityMatrix(names, values, spec.name, resolved, spec.symmetric, estimates)
