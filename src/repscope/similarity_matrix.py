"""Deprecated location of :func:`repscope.measures.similarity.similarity_matrix`.

``from repscope.similarity_matrix import similarity_matrix`` keeps working with a
DeprecationWarning; the module moved into the similarity package
(``from repscope.measures.similarity import similarity_matrix``). Resolved on use, so this
module imports nothing at load time.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = ("SimilarityMatrix", "similarity_matrix")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"repscope.similarity_matrix.{name} moved to "
                      f"repscope.measures.similarity.{name}; import it from there.",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("repscope.measures.similarity.matrix"), name)
    raise AttributeError(f"module 'repscope.similarity_matrix' has no attribute {name!r}")
