"""Sparse-feature pages (``repscope sae inspect``) linked from the analysis report.

A feature page ``NAME.html`` written by :func:`repscope.dictionaries.page.feature_page` comes
with a sidecar ``NAME.json`` (``"kind": "repscope.feature_page"``) holding what the report
lists: layer, architecture, ``d_in``, ``d_sae``, FVU and mean L0 when evaluated, the SAE
directory. :func:`find_feature_pages` collects the sidecars under a report's directory so
``report.html`` can link to every page; the page links back to the report. It sits in the
bottom layer (standard library only) because both sides use it: the page writer in
``dictionaries`` and the report reader above it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FEATURE_PAGE_KIND", "FeaturePageInfo", "find_feature_pages", "sidecar_path"]

FEATURE_PAGE_KIND = "repscope.feature_page"
#: directory levels below the report searched for feature pages
MAX_DEPTH = 3


@dataclass(frozen=True)
class FeaturePageInfo:
    """One feature page as the report lists it."""

    href: str
    "Path of the HTML page relative to the report's directory (POSIX separators)."
    title: str
    "The page's title."
    summary: dict[str, Any]
    "layer, architecture, d_in, d_sae, fvu, l0_mean, sae (the SAE directory), ... when known."


def sidecar_path(page: str | Path) -> Path:
    """``NAME.json`` next to the page ``NAME.html``."""
    return Path(page).with_suffix(".json")


def _read(sidecar: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("kind") != FEATURE_PAGE_KIND:
        return None
    return meta


def find_feature_pages(root: str | Path, *, max_depth: int = MAX_DEPTH) -> list[FeaturePageInfo]:
    """Feature pages under directory ``root`` (at most ``max_depth`` levels down), sorted by
    layer then path. A page counts when its sidecar JSON has the feature-page ``kind`` and the
    HTML file exists; anything else is ignored."""
    root = Path(root)
    found: list[FeaturePageInfo] = []
    if not root.is_dir():
        return found
    for here, dirs, files in os.walk(root):
        depth = len(Path(here).relative_to(root).parts)
        if depth >= max_depth:
            dirs.clear()
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            sidecar = Path(here) / name
            page = sidecar.with_suffix(".html")
            meta = _read(sidecar) if page.is_file() else None
            if meta is None:
                continue
            summary = {k: v for k, v in meta.items() if k not in ("kind", "title", "page")}
            found.append(FeaturePageInfo(href=page.relative_to(root).as_posix(),
                                         title=str(meta.get("title", page.stem)), summary=summary))
    return sorted(found, key=lambda p: (str(p.summary.get("layer", "")), p.href))
