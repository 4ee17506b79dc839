"""Representational similarity between two representations of the same inputs.

Importing this module registers every pair measure (``kind="pair"``, family "similarity").
Each name is one precise variant (see ``docs/similarity.md`` for the definitions):

========================== =============================================== ===============
name                       definition                                      range / better
========================== =============================================== ===============
cka_linear                 linear CKA, biased HSIC, feature space          [0, 1], higher
cka_linear_debiased        linear CKA, unbiased HSIC (Song et al. 2012)    [-1, 1], higher
cka_rbf                    RBF CKA, exact, blockwise                       [0, 1], higher
cka_rbf_nystroem           RBF CKA, Nystroem approximation (APPROXIMATE)   [0, 1], higher
cca_mean                   mean canonical correlation                      [0, 1], higher
svcca                      SVCCA (top PCs, then mean CCA)                  [0, 1], higher
pwcca                      projection-weighted CCA (asymmetric)            [0, 1], higher
procrustes_angular         angular Procrustes distance (radians)           [0, pi/2], lower
procrustes_euclidean       RMS residual after optimal rotation             [0, inf), lower
shape_alpha                generalized shape metric, partial whitening     [0, pi/2], lower
shape_mom                  moment estimate of Procrustes similarity        [0, 1], higher
rsa                        RDM correlation (rdm x compare parameters)      [-1, 1], higher
mutual_knn                 mean shared k-NN fraction                       [0, 1], higher
knn_jaccard                mean k-NN Jaccard, per point in 'local'         [0, 1], higher
relative_representations   agreement of cosine-to-anchor profiles          [-1, 1], higher
========================== =============================================== ===============

Modules, one concept each: :mod:`.cka`, :mod:`.cca`, :mod:`.shape` (Procrustes, shape
metrics), :mod:`.rsa`, :mod:`.neighborhood` (k-NN overlap, relative representations), and
the machinery they share: :mod:`.moments` (pair moments and their streaming states),
:mod:`.moment_measure` (one implementation of each moment-based measure, run by every path),
:mod:`.matrix` (layer x layer matrices) and :mod:`._common`. Every public name is re-exported
here. The prepared paths (per-representation work done once, used by matrices and permutation
tests) are the registry's ``prepared`` capability of each measure.
"""

from repscope.measures.similarity.cca import cca_mean, pwcca, svcca
from repscope.measures.similarity.cka import (
    LinearCKAAccumulator,
    cka_linear,
    cka_linear_debiased,
    cka_rbf,
    cka_rbf_nystroem,
)
from repscope.measures.similarity.matrix import SimilarityMatrix, similarity_matrix
from repscope.measures.similarity.moment_measure import MomentMeasure
from repscope.measures.similarity.moments import (
    BlockMoments,
    PairMomentsAccumulator,
    PairSums,
    pair_sums,
)
from repscope.measures.similarity.neighborhood import (
    knn_jaccard,
    mutual_knn,
    relative_representations,
)
from repscope.measures.similarity.rsa import rsa
from repscope.measures.similarity.shape import (
    ShapeMomentEstimate,
    procrustes_angular,
    procrustes_euclidean,
    shape_alpha,
    shape_mom,
)

__all__ = [
    "BlockMoments",
    "LinearCKAAccumulator",
    "MomentMeasure",
    "PairMomentsAccumulator",
    "PairSums",
    "ShapeMomentEstimate",
    "SimilarityMatrix",
    "cca_mean",
    "cka_linear",
    "cka_linear_debiased",
    "cka_rbf",
    "cka_rbf_nystroem",
    "knn_jaccard",
    "mutual_knn",
    "pair_sums",
    "procrustes_angular",
    "procrustes_euclidean",
    "pwcca",
    "relative_representations",
    "rsa",
    "shape_alpha",
    "shape_mom",
    "similarity_matrix",
    "svcca",
]
