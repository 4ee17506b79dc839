"""repscope: capture the activations of any PyTorch model and measure their geometry.

Importing repscope is cheap and changes nothing global: heavy submodules (transformers,
duckdb, plotly) are imported only when used.
"""

from repscope._version import __version__
from repscope.results import Estimate

__all__ = ["Estimate", "__version__"]
