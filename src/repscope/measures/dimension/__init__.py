"""Intrinsic dimension: global estimators, local (per-point) estimators and ID-vs-scale curves.

Every kNN estimator takes ``neighbors=`` (a :class:`repscope.neighbors.Neighbors` computed on the
same X) so one neighbour table per representation serves them all; without it they compute
their own with :func:`repscope.neighbors.knn`. Duplicated rows are handled by the table's
``duplicates`` policy (default ``"drop"``); the policy and the duplicate fraction are recorded in
every result. Definitions, references and known biases: ``docs/dimension.md``.

The recommended estimate is :func:`intrinsic_dimension`: a panel calibrated on reference data
of the same sample size, with an interval covering sampling and estimator bias. Known bias of
the raw estimators: every neighbour-distance estimator (TwoNN, MLE, GRIDE, MiND_ML, MADA, TLE,
correlation dimension) underestimates the dimension once it reaches ~10 and more (the number of
points needed grows exponentially with the dimension); ``ess`` and ``danco`` are calibrated
against balls; PCA-based counts measure linear, not intrinsic, dimension.

Modules, one concept each: :mod:`.pca` (PCA-based counts, participation ratio), :mod:`.knn`
(TwoNN, MLE, GRIDE, correlation dimension), :mod:`.ess`, :mod:`.mind` (MiND_ML),
:mod:`.danco` (DANCo, MiND_KL), :mod:`.geomle` (regression-corrected MLE), :mod:`.tle_mada`
(TLE, MADA), :mod:`.local` (per-point estimates), :mod:`.recommended`
(``intrinsic_dimension``) with :mod:`._panel` (its panel) and :mod:`._calibration` (reference
data, disk cache), :mod:`.scale` (ID-vs-scale curves), :mod:`._core` (the estimators' maths as
pure functions) and :mod:`._common` (result type, neighbour table, bootstrap). Every public
name is re-exported here.
"""

from repscope.measures.dimension._common import IDEstimate
from repscope.measures.dimension._core import participation_ratio_from_eigenvalues
from repscope.measures.dimension.danco import danco, mind_kl
from repscope.measures.dimension.ess import ess
from repscope.measures.dimension.geomle import geomle
from repscope.measures.dimension.knn import correlation_dimension, gride, mle, twonn
from repscope.measures.dimension.local import local_mle, local_twonn
from repscope.measures.dimension.mind import mind_ml
from repscope.measures.dimension.pca import participation_ratio, pca, pca_noise
from repscope.measures.dimension.recommended import intrinsic_dimension
from repscope.measures.dimension.scale import ScaleCurve, id_scale_curve
from repscope.measures.dimension.tle_mada import mada, tle

__all__ = [
    "IDEstimate",
    "ScaleCurve",
    "correlation_dimension",
    "danco",
    "ess",
    "geomle",
    "gride",
    "id_scale_curve",
    "intrinsic_dimension",
    "local_mle",
    "local_twonn",
    "mada",
    "mind_kl",
    "mind_ml",
    "mle",
    "participation_ratio",
    "participation_ratio_from_eigenvalues",
    "pca",
    "pca_noise",
    "tle",
    "twonn",
]
