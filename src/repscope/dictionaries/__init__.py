"""Sparse dictionaries: train, evaluate and inspect sparse autoencoders and semi-NMF.

- :mod:`~repscope.dictionaries.sae`: architectures (ReLU+L1, TopK+AuxK, BatchTopK, top-AFA,
  Matching Pursuit) with the field's names (``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``);
  :mod:`~repscope.dictionaries.jumprelu` and :mod:`~repscope.dictionaries.matryoshka` add
  JumpReLU and Matryoshka BatchTopK (imported here so that they register in ``ARCHITECTURES``);
- :mod:`~repscope.dictionaries.train`: :func:`train_sae` from arrays or an ActivationStore,
  held-out rows, checkpoints and exact resume (``cfg.json``, ``sae.safetensors``, ``manifest.json``,
  ``state.safetensors``); :mod:`~repscope.dictionaries.io` reads and writes SAELens, sparsify and
  dictionary_learning layouts; :mod:`~repscope.dictionaries.splice` evaluates an SAE spliced into a model;
- :mod:`~repscope.dictionaries.evaluate`: FVU, MSE, cosine, L0, dead/dense fractions,
  shrinkage, decoder max-cosine, density histogram, stability across seeds;
- :mod:`~repscope.dictionaries.inspect` / :mod:`~repscope.dictionaries.page`: top-activating
  rows with token contexts, quantile samples, the HTML feature page, data-set comparison;
- :mod:`~repscope.dictionaries.nmf`: semi-NMF baseline.
"""

from repscope.dictionaries.evaluate import SAEEvaluation, evaluate_sae, fvu, match_dictionaries
from repscope.dictionaries.inspect import FeatureStats, compare_datasets, feature_stats
from repscope.dictionaries.io import load_sae, save_sae
from repscope.dictionaries.jumprelu import JumpReLUSAE
from repscope.dictionaries.matryoshka import MatryoshkaSAE
from repscope.dictionaries.nmf import SemiNMF, semi_nmf
from repscope.dictionaries.page import feature_page
from repscope.dictionaries.sae import (
    ARCHITECTURES,
    BatchTopKSAE,
    MatchingPursuitSAE,
    ReLUSAE,
    SparseAutoencoder,
    TopAFASAE,
    TopKSAE,
    build_sae,
)
from repscope.dictionaries.train import TrainConfig, TrainResult, train_sae

__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "FeatureStats",
    "JumpReLUSAE",
    "MatchingPursuitSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "SAEEvaluation",
    "SemiNMF",
    "SparseAutoencoder",
    "TopAFASAE",
    "TopKSAE",
    "TrainConfig",
    "TrainResult",
    "build_sae",
    "compare_datasets",
    "evaluate_sae",
    "feature_page",
    "feature_stats",
    "fvu",
    "load_sae",
    "match_dictionaries",
    "save_sae",
    "semi_nmf",
    "train_sae",
]
