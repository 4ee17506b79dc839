"""``repscope replicate``: the seed papers' claims as named, seeded, offline experiments.

Each claim (:class:`Claim`) runs on bundled models and data and ends in PASS or FAIL with our
numbers beside the paper's, a figure, the analysis and the runtime; ``quick`` parameters are
small enough for CI, ``full`` ones give the pages under ``docs/replications/``.

- :func:`all_claims`, :func:`get_claim`: the registry (one module per claim or small group);
- :func:`run_claim`: run one, returning a frozen :class:`ClaimResult`;
- :func:`write_page`, :func:`write_index`: Markdown + PNG + JSON pages.
"""

from __future__ import annotations

from repscope.replicate.claim import Check, Claim, ClaimResult, Line, Outcome, Panel, Row, run_claim
from repscope.replicate.page import read_result, write_index, write_page
from repscope.replicate.registry import all_claims, get_claim

__all__ = ["Check", "Claim", "ClaimResult", "Line", "Outcome", "Panel", "Row", "all_claims",
           "get_claim", "read_result", "run_claim", "write_index", "write_page"]
