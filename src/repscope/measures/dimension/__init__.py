"""Intrinsic dimension: global estimators, local (per-point) estimators and ID-vs-scale curves.

Every kNN estimator takes ``neighbors=`` (a :class:`repscope.neighbors.Neighbors` computed on the
same X) so one neighbour table per representation serves them all; without it they compute
their own with :func:`repscope.neighbors.knn`. Duplicated rows are handled by the table's
``duplicates`` policy (default ``"drop"``); the policy and the duplicate fraction are recorded in
every result. Definitions, references and known biases: ``docs/dimension.md``.

Known bias: every neighbour-distance estimator (TwoNN, MLE, GRIDE, correlation dimension)
underestimates the dimension once it reaches ~10 and more (the number of points needed grows
exponentially with the dimension); ``ess`` is angle-based and calibrated, and is the one to use
there. PCA-based counts measure linear, not intrinsic, dimension.

Modules, one concept each: :mod:`.pca` (PCA-based counts, participation ratio), :mod:`.knn`
(TwoNN, MLE, GRIDE, correlation dimension), :mod:`.ess`, :mod:`.local` (per-point estimates),
:mod:`.scale` (ID-vs-scale curves), :mod:`._core` (the estimators' maths as pure functions) and
:mod:`._common` (result type, neighbour table, bootstrap). Every public name is re-exported here.
"""

from repscope.measures.dimension._common import IDEstimate
from repscope.measures.dimension._core import participation_ratio_from_eigenvalues
from repscope.measures.dimension.ess import ess
from repscope.measures.dimension.knn import correlation_dimension, gride, mle, twonn
from repscope.measures.dimension.local import local_mle, local_twonn
from repscope.measures.dimension.pca import participation_ratio, pca, pca_noise
from repscope.measures.dimension.scale import ScaleCurve, id_scale_curve

__all__ = [
    "IDEstimate",
    "ScaleCurve",
    "correlation_dimension",
    "ess",
    "gride",
    "id_scale_curve",
    "local_mle",
    "local_twonn",
    "mle",
    "participation_ratio",
    "participation_ratio_from_eigenvalues",
    "pca",
    "pca_noise",
    "twonn",
]
