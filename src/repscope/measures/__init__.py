"""Measures: plain functions over (n, d) arrays returning frozen result dataclasses.

Modules: ``dimension`` (intrinsic dimension), ``spectrum`` (spectra, effective rank, spread,
outliers), ``similarity`` (CKA, CCA, shape metrics, RSA, neighbourhoods), ``classes``
(label-aware geometry). Look measures up by name with :mod:`repscope.registry`.
"""
