"""A claim: a paper's finding as a named, seeded, offline experiment ending in PASS or FAIL.

A :class:`Claim` names the paper, quotes or paraphrases its statement, holds the quick and
full parameters and a ``run(params) -> Outcome`` function. :func:`run_claim` times it and
wraps the outcome into a frozen :class:`ClaimResult` (measured numbers beside the paper's,
the checks that make the verdict, the figure's data, the analysis, every parameter and the
repscope version). The verdict is the conjunction of the checks; nothing tunes a check to
the measured value: each threshold is stated with its reason in the claim's module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from repscope._version import __version__

__all__ = ["Check", "Claim", "ClaimResult", "Line", "Outcome", "Panel", "Row", "run_claim"]


@dataclass(frozen=True)
class Check:
    """One criterion of the verdict."""

    description: str
    "What must hold, in words, with its threshold."
    passed: bool
    measured: str
    "The measured value(s) the criterion was decided on."


@dataclass(frozen=True)
class Row:
    """One line of the numbers table: our value beside the paper's."""

    quantity: str
    ours: str
    paper: str = ""
    "The paper's value or finding for this quantity ('' when the paper gives none)."


@dataclass(frozen=True)
class Line:
    """A curve of a panel; ``lo``/``hi`` an optional band."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    lo: tuple[float, ...] | None = None
    hi: tuple[float, ...] | None = None
    style: str = "-o"


@dataclass(frozen=True)
class Panel:
    """One subplot of a claim's figure."""

    title: str
    xlabel: str
    ylabel: str
    lines: tuple[Line, ...]
    logx: bool = False
    logy: bool = False
    hline: float | None = None
    "A reference level drawn dashed (e.g. 0 for a null value)."


@dataclass(frozen=True)
class Outcome:
    """What a claim's run function returns."""

    checks: tuple[Check, ...]
    rows: tuple[Row, ...]
    panels: tuple[Panel, ...]
    analysis: str
    "Why the verdict came out as it did (a FAIL's analysis is the finding)."
    details: Mapping[str, Any] = field(default_factory=dict)
    "Further measured numbers (JSON-able) recorded with the result."


@dataclass(frozen=True)
class Claim:
    """A paper's claim and how repscope checks it."""

    name: str
    title: str
    citation: str
    statement: str
    "The paper's claim, quoted or paraphrased (with where in the paper)."
    protocol: str
    "Our protocol, and where our model / data differ from the paper's."
    run: Callable[[Mapping[str, Any]], Outcome]
    quick: Mapping[str, Any]
    full: Mapping[str, Any]
    needs: tuple[str, ...] = ()
    "Bundled assets it loads (for the listing): 'smollm2', 'minilm', 'fashion-mnist', ..."

    def params(self, mode: str) -> dict[str, Any]:
        return dict(self.quick if mode == "quick" else self.full)


@dataclass(frozen=True)
class ClaimResult:
    """A claim's run: verdict, numbers, figure data, analysis, parameters, runtime."""

    claim: str
    mode: str
    "'quick' or 'full'."
    checks: tuple[Check, ...]
    rows: tuple[Row, ...]
    panels: tuple[Panel, ...]
    analysis: str
    params: Mapping[str, Any]
    seconds: float
    details: Mapping[str, Any] = field(default_factory=dict)
    version: str = __version__

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        return _jsonable(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClaimResult:
        raw = {k: v for k, v in data.items() if k != "verdict"}

        def line(d: Mapping[str, Any]) -> Line:
            return Line(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

        panels = tuple(Panel(**{**p, "lines": tuple(line(ln) for ln in p["lines"])})
                       for p in raw.pop("panels"))
        return cls(checks=tuple(Check(**c) for c in raw.pop("checks")),
                   rows=tuple(Row(**r) for r in raw.pop("rows")), panels=panels, **raw)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def run_claim(claim: Claim, mode: str = "quick", **overrides: Any) -> ClaimResult:
    """Run ``claim`` with its ``mode`` parameters (``overrides`` replace single ones)."""
    from repscope._validate import check_choice, param_error

    mode = check_choice(mode, "mode", "run_claim", ["quick", "full"])
    params = claim.params(mode)
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise param_error("run_claim", unknown[0], f"one of {sorted(params)}", overrides[unknown[0]])
    params.update(overrides)
    t0 = time.perf_counter()
    out = claim.run(params)
    return ClaimResult(claim=claim.name, mode=mode, checks=out.checks, rows=out.rows,
                       panels=out.panels, analysis=out.analysis, params=params,
                       seconds=round(time.perf_counter() - t0, 2), details=_jsonable(out.details))
