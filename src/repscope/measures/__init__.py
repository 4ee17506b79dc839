"""Measures: plain functions over (n, d) arrays returning frozen result dataclasses.

Subpackages and modules: ``dimension`` (intrinsic dimension), ``spectrum`` (spectra,
effective rank, spread, outliers, diffusion entropy), ``similarity`` (CKA, CCA, shape
metrics, RSA, neighbourhoods, layer x layer matrices), ``classes`` (label-aware geometry).
Every module registers its measures with :func:`repscope.registry.register`; the registry
finds them by walking this package, so a new measure is one module with one ``register``
call. Look measures up by name with :mod:`repscope.registry`.
"""
