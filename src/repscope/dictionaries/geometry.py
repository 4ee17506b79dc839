"""Geometry of an SAE's features at three scales (Li, Michaud, Baek, Engels, Sun and Tegmark 2024,
"The geometry of concepts: sparse autoencoder feature structure", Entropy 27(4):344):

- **atom**: parallelogram crystals among decoder directions (:mod:`repscope.dictionaries.crystals`);
- **brain**: co-occurrence lobes and their spatial modularity (:mod:`repscope.dictionaries.lobes`);
- **galaxy**: the eigenvalue spectrum of the decoder point cloud (:func:`decoder_spectrum`), a
  power law ``lambda_r ~ r^-alpha`` fitted with the registered ``power_law_alpha`` measure, next
  to the same fit on an isotropic Gaussian cloud of the same shape (whose spectrum is
  Marchenko-Pastur, not a power law) and, when given, on the activations themselves.

:func:`feature_geometry` runs all three for the feature page (``repscope sae inspect
--geometry``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope._validate import as_numpy, check_int
from repscope.dictionaries.crystals import Crystals, crystals, project_out
from repscope.dictionaries.lobes import (
    Cooccurrence,
    Lobes,
    SpatialModularity,
    cooccurrence,
    lobes,
    spatial_modularity,
)

__all__ = ["DecoderSpectrum", "FeatureGeometry", "decoder_spectrum", "feature_geometry"]


@dataclass(frozen=True)
class DecoderSpectrum:
    """Power-law fit of the decoder cloud's covariance spectrum."""

    alpha: float
    "Fitted decay exponent of the decoder rows' covariance eigenvalues."
    alpha_stderr: float
    "OLS standard error of the slope."
    r2: float
    "Goodness of the log-log fit."
    fit_range: tuple[int, int]
    "1-based ranks fitted."
    eigenvalues: np.ndarray
    "(d_in,) descending."
    null_alpha: float
    "The same fit on a seeded isotropic Gaussian cloud of the decoder's shape."
    null_eigenvalues: np.ndarray
    "Its eigenvalues."
    activation_alpha: float | None = None
    "The same fit on the activations, when given."
    activation_eigenvalues: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _fit(X: np.ndarray, rank_min: int, rank_max: int | None) -> Any:
    from repscope import registry

    return registry.get("power_law_alpha")(X, rank_min=rank_min, rank_max=rank_max)


def decoder_spectrum(W_dec: Any, *, rank_min: int = 1, rank_max: int | None = None,
                     activations: Any = None, seed: int = 0) -> DecoderSpectrum:
    """Power law of the decoder cloud's spectrum (rows of ``W_dec`` (d_sae, d_in) as points,
    centred covariance), with the isotropic null and optionally the activations' spectrum, all
    fitted over the same ranks (``rank_max=None``: every numerically non-zero eigenvalue)."""
    W = as_numpy(W_dec, np.float64)
    if W.ndim != 2 or W.shape[0] < 3:
        raise ValueError(f"decoder_spectrum expects W_dec of shape (d_sae, d_in) with d_sae >= 3; "
                         f"got shape {W.shape}.")
    est = _fit(W, rank_min, rank_max)
    lo, hi = est.diagnostics["fit_range"]
    null = _fit(np.random.default_rng(seed).standard_normal(W.shape), lo, hi)
    act = None if activations is None else _fit(as_numpy(activations, np.float64), lo, hi)
    return DecoderSpectrum(
        alpha=float(est.value), alpha_stderr=float(est.stderr), r2=float(est.diagnostics["r2"]),
        fit_range=(int(lo), int(hi)), eigenvalues=np.asarray(est.diagnostics["eigenvalues"]),
        null_alpha=float(null.value), null_eigenvalues=np.asarray(null.diagnostics["eigenvalues"]),
        activation_alpha=None if act is None else float(act.value),
        activation_eigenvalues=None if act is None else np.asarray(act.diagnostics["eigenvalues"]),
        params={"rank_min": rank_min, "rank_max": rank_max, "seed": seed, "centred": True,
                "d_sae": int(W.shape[0]), "d_in": int(W.shape[1])})


@dataclass(frozen=True)
class FeatureGeometry:
    """The three scales for one SAE on one set of rows."""

    cooccurrence: Cooccurrence
    lobes: Lobes
    modularity: SpatialModularity
    crystals: Crystals
    crystal_latents: np.ndarray
    "(m,) the latents whose decoder directions were searched for crystals (``crystals`` indexes them)."
    spectrum: DecoderSpectrum
    params: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-able headline numbers (the feature page's sidecar)."""
        return {
            "lobes": int(self.lobes.sizes.size), "lobe_sizes": self.lobes.sizes.tolist(),
            "lobe_modularity": self.lobes.modularity, "lobe_ami": self.modularity.ami,
            "lobe_ami_null": self.modularity.null_mean, "lobe_ami_p": self.modularity.p_value,
            "crystals": len(self.crystals.crystals), "parallelograms": self.crystals.n_parallelograms,
            "decoder_alpha": self.spectrum.alpha, "decoder_alpha_null": self.spectrum.null_alpha,
            "activation_alpha": self.spectrum.activation_alpha, "windows": self.cooccurrence.n_windows,
        }


def feature_geometry(sae: Any, data: Any, *, layer: str | None = None, doc_ids: Any = None,
                     window: int = 256, n_latents: int = 512, n_lobes: int = 4,
                     crystal_latents: int = 64, crystal_distractors: int = 1, tol: float = 0.2,
                     n_perm: int = 200, seed: int = 0) -> FeatureGeometry:
    """Lobes over the ``n_latents`` most frequent latents (co-occurrence in ``window``-row blocks
    of each document), crystals among the decoder directions of the ``crystal_latents`` most
    frequent ones (the top ``crystal_distractors`` principal directions of the whole decoder
    projected out), and the
    decoder spectrum with the activations' spectrum (``data``) for comparison."""
    fn = "feature_geometry"
    n_latents = check_int(n_latents, "n_latents", fn, low=2)
    crystal_latents = check_int(crystal_latents, "crystal_latents", fn, low=3)
    cooc = cooccurrence(data, sae=sae, layer=layer, doc_ids=doc_ids, window=window, max_latents=n_latents)
    m = cooc.latents.size
    lb = lobes(cooc, min(n_lobes, m - 1), seed=seed)
    W = sae.W_dec.detach().float().cpu().numpy()  # (d_sae, d_in)
    mod = spatial_modularity(lb, W, n_perm=n_perm, seed=seed)
    top = cooc.latents[np.argsort(-cooc.count, kind="stable")[:crystal_latents]]
    # distractors: the top principal directions of the whole decoder (a few points estimate them poorly)
    basis = project_out(W, crystal_distractors) if crystal_distractors else None
    cr = crystals(W[top], projection=basis, tol=tol)
    from repscope.dictionaries.source import as_source

    src = as_source(data, layer, fn)
    rows = np.sort(np.random.default_rng(seed).choice(src.n_rows, min(src.n_rows, 20000), replace=False))
    spec = decoder_spectrum(W, activations=src.read(rows), seed=seed)
    return FeatureGeometry(cooccurrence=cooc, lobes=lb, modularity=mod, crystals=cr, crystal_latents=top,
                           spectrum=spec,
                           params={"window": window, "n_latents": n_latents, "n_lobes": lb.sizes.size,
                                   "crystal_latents": int(top.size), "crystal_distractors": crystal_distractors,
                                   "tol": tol, "n_perm": n_perm, "seed": seed, "layer": layer})
