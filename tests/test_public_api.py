"""The public surface: ``repscope.__all__`` (lazy, torch-free import), numpydoc sections, short
reprs of results, and ``AnalysisRun.to_pandas()``."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import repscope
from analysis_support import (  # noqa: F401
    register_toys,
    store,  # noqa: F401 (shared fixture)
    unregister_toys,
)


def test_import_is_torch_free_and_every_public_name_resolves():
    code = ("import sys, repscope; heavy = [m for m in ('torch', 'duckdb', 'transformers', "
            "'plotly', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(repscope.__all__) >= 20 and sorted(repscope.__all__) == repscope.__all__
    for name in repscope.__all__:
        assert getattr(repscope, name) is not None, name
    assert set(repscope.__all__) <= set(dir(repscope))
    assert "cka_linear" in repscope.list_measures()
    assert repscope.get_measure("cka_linear").fn is repscope.cka_linear
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        repscope.nope  # noqa: B018


def test_public_functions_have_numpydoc_parameter_and_return_sections():
    missing = []
    for name in repscope.__all__:
        obj = getattr(repscope, name)
        if not inspect.isfunction(obj) or name.startswith("_"):
            continue
        doc = inspect.getdoc(obj) or ""
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.kind is not p.VAR_KEYWORD and p.name != "self"]
        if params and "Parameters\n----------" not in doc:
            missing.append(f"{name}: Parameters")
        if "Returns\n-------" not in doc and "Yields\n------" not in doc:
            missing.append(f"{name}: Returns")
    assert not missing, missing


def test_result_reprs_summarise_arrays():
    from repscope.inference import permutation_test
    from repscope.neighbors import knn

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 12))  # (n, d)
    nb = knn(X, 5)
    text = repr(nb)
    assert len(text) < 800 and "indices=array(shape=(400, 5), int64" in text
    assert "DuplicateReport(policy='drop'" in text
    res = permutation_test("cka_linear", X, X + 0.5 * rng.normal(size=X.shape), n_perm=30)
    text = repr(res)
    assert len(text) < 800 and "'null': array(shape=(30,), float64, min=" in text
    assert f"p_value={res.p_value:.4g}" in text
    from repscope.measures.dimension import participation_ratio

    est = participation_ratio(X)
    assert "'eigenvalues': array(shape=(12,), float64, min=" in repr(est)


@pytest.fixture
def _toys():
    register_toys()
    yield
    unregister_toys()


def test_to_pandas_is_one_tidy_frame_with_intervals_and_p_values(store, tmp_path, _toys):  # noqa: F811
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.pipeline import analyze

    cfg = AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=("_toy_pr", "_toy_sim"),
                        layers=("embeddings", "encoder.layer.2"), max_rows=120, permutations=19,
                        report=False)
    run = analyze(cfg)
    df = run.to_pandas()
    from repscope.analysis.db import TIDY_COLUMNS

    assert tuple(df.columns) == TIDY_COLUMNS
    pr = df[df.measure == "_toy_pr"]
    assert list(pr.layer) == ["embeddings", "encoder.layer.2"]
    assert (pr.ci_low < pr.value).all() and (pr.value < pr.ci_high).all()
    assert pr.p_value.isna().all()
    pair = df[(df.measure == "_toy_sim") & (df.layer != df.layer_b)]
    assert len(pair) == 1
    # a shared rank-3 signal: no shuffled draw reaches the observed similarity
    assert pair.p_value.iloc[0] == pytest.approx(1 / 20)
    assert pair.calibrated.iloc[0] == pytest.approx(pair.value.iloc[0] - pair.null_mean.iloc[0])
    assert pair.n_perm.iloc[0] == 19
    # a second run over the same plan finds the same results (cached), same frame
    again = analyze(cfg).to_pandas()
    assert again[["measure", "layer", "value"]].equals(df[["measure", "layer", "value"]])
