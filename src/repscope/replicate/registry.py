"""The claims, by name; each claim module adds itself with :func:`add`."""

from __future__ import annotations

import importlib

from repscope.replicate.claim import Claim

__all__ = ["CLAIMS", "MODULES", "add", "all_claims", "get_claim"]

#: claim modules, in the order of the listing
MODULES = (
    "repscope.replicate.similarity_bias",
    "repscope.replicate.neural_collapse",
    "repscope.replicate.grokking",
    "repscope.replicate.lm_depth",
    "repscope.replicate.outliers",
    "repscope.replicate.landscape_id",
    "repscope.replicate.genres",
    "repscope.replicate.dse_training",
    "repscope.replicate.anisotropy_depth",
)

CLAIMS: dict[str, Claim] = {}


def add(claim: Claim) -> Claim:
    CLAIMS[claim.name] = claim
    return claim


def all_claims() -> dict[str, Claim]:
    """Every claim (imports the claim modules on first use; they import torch lazily)."""
    for mod in MODULES:
        importlib.import_module(mod)
    return {name: CLAIMS[name] for name in sorted(CLAIMS, key=_order)}


def _order(name: str) -> tuple[int, str]:
    mod = CLAIMS[name].run.__module__
    return (MODULES.index(mod) if mod in MODULES else len(MODULES), name)


def get_claim(name: str) -> Claim:
    from repscope._validate import param_error

    claims = all_claims()
    if name not in claims:
        raise param_error("replicate", "name", f"one of {sorted(claims)}", name)
    return claims[name]
