"""The plotly.js bundle inlined into repscope's self-contained HTML pages.

repscope ships plotly.js's *cartesian* partial bundle (``_assets/plotly-cartesian.min.js``,
MIT licence, the same plotly.js version as the ``plotly`` Python package it was checked
against): the trace types the report and the feature pages draw (scatter, bar, heatmap,
histogram, box, violin), at a third of the full bundle's size, so a report stays small and
loads fast while opening with no network. ``scripts/update_plotly_bundle.sh`` refreshes it
from npm. When the asset is missing (a stripped install) the full bundle of the ``plotly``
package is used instead, with a warning.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

__all__ = ["BUNDLE", "bundle_version", "plotly_js"]

log = logging.getLogger(__name__)

BUNDLE = Path(__file__).with_name("_assets") / "plotly-cartesian.min.js"
#: Trace types the partial bundle contains (its README); pages must draw only these.
TRACE_TYPES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d",
                         "histogram2dcontour", "image", "pie", "scatter", "scatterternary",
                         "violin"})


def bundle_version(text: str) -> str | None:
    """The plotly.js version in a bundle's licence header ('v4.1.1' -> '4.1.1'), or None."""
    m = re.search(r"plotly\.js(?: \([^)]*\))? v(\d+\.\d+\.\d+)", text[:400])
    return m.group(1) if m else None


@functools.cache
def plotly_js() -> str:
    """The JavaScript to inline: the partial bundle, or the full one when it is missing."""
    try:
        return BUNDLE.read_text(encoding="utf-8")
    except OSError:
        from plotly.offline import get_plotlyjs

        log.warning("%s is missing; inlining the full plotly.js bundle (about 4.8 MB).", BUNDLE)
        return get_plotlyjs()
