"""intrinsic_dimension: interval coverage on reference manifolds, the calibration cache, the
verdict, duplicates and bad input. The calibration is built once into a temporary cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import repscope
from repscope.data import manifolds as M
from repscope.measures import dimension as D
from repscope.measures.dimension import _calibration as C
from repscope.measures.dimension import intrinsic_dimension
from repscope.measures.dimension._calibration import reference_sample
from repscope.neighbors import knn

N = 300  # every data set below has N distinct rows: one calibration serves them all


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("REPSCOPE_CACHE", str(root))
    C._MEMORY.clear()
    yield root / "id-calibration"
    C._MEMORY.clear()
    mp.undo()


@pytest.fixture(scope="module")
def coverage_runs():
    out = []
    for family in ("cube", "ball"):
        for m in (2, 6, 12, 24):
            for s in range(6):
                Y = reference_sample(family, N, m, np.random.default_rng([4242, s, m]))
                Q, _ = np.linalg.qr(np.random.default_rng(s).standard_normal((m + 3, m + 3)))
                X = np.hstack([Y, np.zeros((N, 3))]) @ Q  # rotated into 3 extra dimensions
                out.append((family, m, intrinsic_dimension(X)))
    return out


def test_interval_covers_the_true_id_on_cubes_and_balls(coverage_runs):
    covered = [r.ci[0] <= m <= r.ci[1] for _, m, r in coverage_runs]
    assert np.mean(covered) >= 0.9, np.mean(covered)  # nominal 95 % (sampling + bias)
    for m in (2, 6, 12, 24):
        vals = [r.value for _, mm, r in coverage_runs if mm == m]
        assert abs(np.mean(vals) - m) <= 0.1 * m, (m, vals)
        assert np.mean([r.ci[0] <= m <= r.ci[1] for _, mm, r in coverage_runs if mm == m]) >= 0.75


def test_raw_knn_estimators_read_low_at_high_id_and_are_corrected(coverage_runs):
    r = next(r for _, m, r in coverage_runs if m == 24)
    assert r.diagnostics["panel_raw"]["mle"] < 0.8 * 24  # the finite-sample bias ...
    assert abs(r.diagnostics["panel"]["mle"] - 24) < 0.15 * 24  # ... removed by calibration
    assert any("ID above ~20" in v for v in r.diagnostics["verdict"])


def test_result_records_what_the_interval_covers(coverage_runs):
    r = coverage_runs[0][2]
    assert r.measure == "intrinsic_dimension" and r.n_samples == N
    assert r.params["interval"] == "sampling + estimator bias"
    assert r.params["families"] == ["ball", "cube", "sphere", "gaussian"]
    assert r.stderr ** 2 == pytest.approx(r.diagnostics["sd_sampling"] ** 2 + r.diagnostics[
        "sd_family"] ** 2 + r.diagnostics["sd_disagreement"] ** 2)
    assert set(r.diagnostics["panel"]) == {"twonn", "mle", "mind_ml", "mada", "tle", "ess", "angles"}
    assert isinstance(r.diagnostics["verdict"], list) and r.diagnostics["verdict"]
    assert repscope.intrinsic_dimension is intrinsic_dimension


def test_calibration_is_cached_verified_and_rebuilt(cache, coverage_runs):
    files = sorted(cache.glob("panel-*.npz"))
    assert len(files) == 1 and not list(cache.glob(".*.tmp"))
    X = reference_sample("cube", N, 6, np.random.default_rng(1))
    first = intrinsic_dimension(X)
    C._MEMORY.clear()  # a new process: read back from disk, same result
    assert intrinsic_dimension(X) == first
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt the stored readings
    files[0].write_bytes(bytes(data))
    C._MEMORY.clear()
    assert intrinsic_dimension(X) == first  # detected, recomputed, replaced
    C._MEMORY.clear()
    assert intrinsic_dimension(X) == first


def test_disagreement_widens_the_interval_and_is_named():
    """A strongly curved manifold (a flat 4-torus in R^8, unresolved at this n): the angle
    statistics read far above the distance ratios; the verdict and the interval say so."""
    t = np.random.default_rng(3).random((N, 4)) * 2 * np.pi
    X = np.hstack([np.cos(t), np.sin(t)])
    r = intrinsic_dimension(X)
    panel = np.array(list(r.diagnostics["panel"].values()))
    assert r.diagnostics["sd_disagreement"] > 2 * r.diagnostics["sd_sampling"]
    assert r.ci[1] - r.ci[0] > np.ptp(panel)
    assert any("disagree" in v or "Angle-based" in v for v in r.diagnostics["verdict"])


def test_subsample_duplicates_and_torch_input():
    X, _ = M.sphere(N + 40, 3, seed=5)
    r = intrinsic_dimension(torch.as_tensor(X), max_samples=N)
    assert r.n_samples == N and r.params["max_samples"] == N
    assert any("subsample of 300 of the 340 rows" in v for v in r.diagnostics["verdict"])
    Xd = np.vstack([X[:N], X[:15]])  # 5 % exact duplicates: dropped, same calibration n
    with pytest.warns(RuntimeWarning, match=r"intrinsic_dimension: 4.8 % duplicates \(fraction "
                                            r"0.04762 of 315 rows: 15 exact, 0 near"):
        rd = intrinsic_dimension(Xd[:315])
    assert any("duplicates dropped (15 exact, 0 near)" in v for v in rd.diagnostics["verdict"])


def test_bad_input():
    X = M.sphere(60, 2, seed=0).X
    with pytest.raises(ValueError, match=r"'duplicates' parameter of intrinsic_dimension must be "
                                         r"one of \{'drop', 'raise'\}. Got 'keep'"):
        intrinsic_dimension(X, duplicates="keep")
    two = np.repeat(X[:2], 30, axis=0)
    with pytest.raises(ValueError, match=r"intrinsic_dimension needs at least 12 distinct rows; "
                                         r"only 2 of the 60 rows of X are distinct") as err:
        intrinsic_dimension(two)
    assert "'k'" not in str(err.value)
    with pytest.raises(ValueError, match=r"twonn needs at least 3 distinct rows, but only 2 of "
                                         r"the 60 rows of X are distinct") as err:
        D.twonn(two)
    assert "'k'" not in str(err.value)
    with pytest.raises(ValueError, match="at least 12"):
        intrinsic_dimension(X[:11])


def test_duplicate_fraction_is_one_number_everywhere():
    """10 % exact and 3 % near duplicates: the 'raise' message, the report and the warnings
    give the same fraction and name both kinds."""
    X = M.sphere(1000, 3, seed=6).X
    rng = np.random.default_rng(0)
    near = X[:30] + 1e-9 * rng.standard_normal((30, X.shape[1]))
    Xd = np.vstack([X, X[rng.choice(1000, 100, replace=False)], near])
    frac = 130 / 1130
    with pytest.raises(ValueError, match=rf"fraction {frac:.4g} of 1130 rows: 100 exact, 30 near"):
        knn(Xd, 5, duplicates="raise")
    with pytest.warns(RuntimeWarning, match=rf"mle: 12 % duplicates \(fraction {frac:.4g} of 1130 "
                                            r"rows: 100 exact, 30 near .*dropped"):
        est = D.mle(Xd, n_boot=0)
    assert est.diagnostics["duplicate_fraction"] == pytest.approx(frac)
    assert est.diagnostics["n_exact_duplicates"] == 100
    with pytest.warns(RuntimeWarning, match=rf"duplicates='keep' kept 12 % duplicates \(fraction "
                                            rf"{frac:.4g} of 1130 rows: 100 exact, 30 near"):
        D.mle(Xd, duplicates="keep", n_boot=0)
    with warnings.catch_warnings():  # below 1 %: quiet
        warnings.simplefilter("error")
        D.mle(np.vstack([X, X[:5]]), n_boot=0)


@pytest.mark.slow
def test_minilm_layers_show_the_panel_disagreement_in_the_interval_and_verdict():
    """Mean-pooled MiniLM layers (the issue: ESS reads ~2x what TwoNN/MLE read, each with a
    narrow interval): intrinsic_dimension's interval spans the panel and the verdict says why."""
    from repscope.data.corpus import load_corpus
    from repscope.data.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok, *_ = load_model("minilm")
        paragraphs = [p.strip() for d in load_corpus().documents for p in d.split("\n\n")
                      if len(p.strip()) > 40]
        docs = list(dict.fromkeys(paragraphs))[:N]  # distinct texts
        pooled = [[] for _ in range(7)]
        with torch.no_grad():
            for i in range(0, N, 50):
                b = tok(docs[i:i + 50], padding=True, truncation=True, max_length=48,
                        return_tensors="pt")
                hidden = model(**b, output_hidden_states=True).hidden_states
                mask = b["attention_mask"][..., None].float()
                for j, h in enumerate(hidden):
                    pooled[j].append(((h * mask).sum(1) / mask.sum(1)).numpy())
    finally:
        torch.set_num_threads(threads)
    for j in (2, 4, 6):
        X = np.concatenate(pooled[j]).astype(np.float64)  # (300, 384)
        r = intrinsic_dimension(X)
        panel = np.array(list(r.diagnostics["panel"].values()))
        sampling_only = D.twonn(X, fit="mle").ci
        assert r.diagnostics["sd_disagreement"] > 2 * r.diagnostics["sd_sampling"], j
        assert r.ci[1] - r.ci[0] > 3 * (sampling_only[1] - sampling_only[0]), j
        assert r.ci[0] <= np.median(panel) <= r.ci[1], j
        assert any(v.startswith("kNN estimators disagree") for v in r.diagnostics["verdict"]), j
