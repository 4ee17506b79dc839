"""Spectra, spread, outliers and diffusion entropy of one representation.

Modules, one concept each: :mod:`.covariance` (covariance spectrum, power-law decay,
effective rank, spectral entropy, stable rank), :mod:`.spread` (anisotropy, IsoScore,
common-mean share), :mod:`.outliers` (outlier dimensions and rows), :mod:`.diffusion`
(diffusion spectral entropy and mutual information), :mod:`.stream` (the accumulators, the
covariance eigenvalues and the one-pass helpers over batches). Every public name is
re-exported here: ``from repscope.measures.spectrum import effective_rank``.
"""

from repscope.measures._finite_sample import FiniteSampleWarning
from repscope.measures.spectrum.covariance import (
    effective_rank,
    effective_rank_from_eigenvalues,
    effective_rank_uncentred,
    power_law_alpha,
    power_law_fit,
    spectral_entropy,
    spectrum,
    stable_rank,
    von_neumann_entropy,
)
from repscope.measures.spectrum.diffusion import dse, dse_liao2023, dsmi, dsmi_liao2023
from repscope.measures.spectrum.outliers import norm_outliers, outlier_dimensions
from repscope.measures.spectrum.spread import anisotropy, common_mean_share, isoscore
from repscope.measures.spectrum.stream import (
    CovarianceAccumulator,
    UnitSumAccumulator,
    covariance_eigenvalues,
    measure_from_batches,
    measure_from_moments,
    measures_from_batches,
    moments_from_batches,
    spectrum_from_batches,
)

__all__ = [
    "CovarianceAccumulator",
    "FiniteSampleWarning",
    "UnitSumAccumulator",
    "anisotropy",
    "common_mean_share",
    "covariance_eigenvalues",
    "dse",
    "dse_liao2023",
    "dsmi",
    "dsmi_liao2023",
    "effective_rank",
    "effective_rank_from_eigenvalues",
    "effective_rank_uncentred",
    "isoscore",
    "measure_from_batches",
    "measure_from_moments",
    "measures_from_batches",
    "moments_from_batches",
    "norm_outliers",
    "outlier_dimensions",
    "power_law_alpha",
    "power_law_fit",
    "spectral_entropy",
    "spectrum",
    "spectrum_from_batches",
    "stable_rank",
    "von_neumann_entropy",
]
