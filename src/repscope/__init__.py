"""repscope: capture the activations of any PyTorch model and measure their geometry.

Importing repscope is cheap and changes nothing global: heavy submodules (transformers,
duckdb, plotly) are imported only when used.
"""

from repscope._version import __version__
from repscope.results import Estimate

__all__ = ["Estimate", "__version__", "intrinsic_dimension"]


def __getattr__(name: str):
    """``repscope.intrinsic_dimension``, imported on first use (keeps ``import repscope`` cheap)."""
    if name == "intrinsic_dimension":
        from repscope.measures.dimension import intrinsic_dimension

        return intrinsic_dimension
    raise AttributeError(f"module 'repscope' has no attribute {name!r}")
