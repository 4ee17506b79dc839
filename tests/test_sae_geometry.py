"""SAE feature geometry: co-occurrence lobes, crystals, decoder spectrum (planted structure)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from repscope.dictionaries.crystals import crystals, lda_projection, project_out
from repscope.dictionaries.geometry import decoder_spectrum, feature_geometry
from repscope.dictionaries.lobes import (
    affinity,
    cooccurrence,
    lobes,
    spatial_modularity,
    window_ids,
)
from repscope.dictionaries.sae import build_sae

# ----------------------------------------------------------------------------- windows, counts


def test_window_ids_known_answer():
    doc = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert window_ids(doc, 2).tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5]
    assert window_ids(doc, 2, drop_partial=True).tolist() == [0, 0, 1, 1, -1, 2, 2, 3, 3, 4, 4]
    assert window_ids(doc, 10).tolist() == [0] * 5 + [1] * 2 + [2] * 4


def _naive(codes, doc, window, threshold=0.0):
    wid = window_ids(doc, window)
    occ = np.zeros((wid.max() + 1, codes.shape[1]), dtype=bool)
    for r, w in enumerate(wid):
        occ[w] |= codes[r] > threshold
    return occ


def test_cooccurrence_matches_naive_count_and_any_batching():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((97, 12)) < 0.15, rng.random((97, 12)), 0.0).astype(np.float32)
    doc = np.repeat(np.arange(9), [5, 20, 1, 13, 7, 30, 2, 10, 9])
    occ = _naive(codes, doc, 6).astype(np.int64)
    ref = occ.T @ occ
    for bs in (1, 7, 1000):
        c = cooccurrence(codes, doc_ids=doc, window=6, latents=np.arange(12), batch_size=bs)
        assert c.n_windows == occ.shape[0]
        np.testing.assert_array_equal(c.both, ref)
        np.testing.assert_array_equal(c.count, occ.sum(0))


def test_affinities_against_independent_definitions():
    rng = np.random.default_rng(1)
    codes = (rng.random((400, 6)) < [0.1, 0.3, 0.5, 0.2, 0.05, 0.4]).astype(np.float32)
    codes[:, 1] = np.maximum(codes[:, 1], codes[:, 0])  # latent 1 fires whenever 0 does
    c = cooccurrence(codes, window=1, latents=np.arange(6))  # one row per window
    occ = codes > 0
    phi = affinity(c, "phi")
    np.testing.assert_allclose(phi, np.corrcoef(occ.T.astype(float)), atol=1e-12)  # phi = Pearson of binaries
    inter = occ.T.astype(int) @ occ.astype(int)
    union = occ.sum(0)[:, None] + occ.sum(0)[None, :] - inter
    np.testing.assert_allclose(affinity(c, "jaccard"), inter / union)
    assert affinity(c, "overlap")[0, 1] == pytest.approx(1.0)  # subset
    np.testing.assert_allclose(affinity(c, "smc"), (occ[:, :, None] == occ[:, None, :]).mean(0))
    with pytest.raises(ValueError, match="'kind' parameter of affinity"):
        affinity(c, "cosine")


def _planted_codes(n_lobes=3, per_lobe=15, n_windows=300, rows=6, p_in=0.45, p_out=0.03, seed=0):
    rng = np.random.default_rng(seed)
    m = n_lobes * per_lobe
    truth = np.repeat(np.arange(n_lobes), per_lobe)
    codes = np.zeros((n_windows * rows, m), dtype=np.float32)
    for w in range(n_windows):
        topic = rng.integers(n_lobes) if n_lobes else -1
        p = np.where(truth == topic, p_in, p_out)
        on = np.flatnonzero(rng.random(m) < p)
        codes[w * rows + rng.integers(rows, size=on.size), on] = rng.random(on.size) + 0.1
    return codes, np.repeat(np.arange(n_windows), rows), truth


def test_planted_block_cooccurrence_gives_the_planted_lobes():
    codes, doc, truth = _planted_codes()
    c = cooccurrence(codes, doc_ids=doc, window=6)
    assert c.n_windows == 300
    for negative in ("clip", "shift"):
        lb = lobes(c, 3, negative=negative, seed=0)
        assert adjusted_rand_score(truth[c.latents], lb.labels) == 1.0, negative
    lb = lobes(c, 3)
    assert sorted(lb.sizes.tolist()) == [15, 15, 15]
    # no planted blocks: independent latents still give a partition (spectral clustering always
    # returns one; its modularity on a noise graph is ~0.2), but a much weaker one
    flat, doc0, _ = _planted_codes(p_in=0.1, p_out=0.1, seed=1)
    lb0 = lobes(cooccurrence(flat, doc_ids=doc0, window=6), 3)
    assert lb.modularity > 0.5 and lb0.modularity < 0.3


def test_spatial_modularity_detects_lobes_that_sit_together_in_decoder_space():
    codes, doc, truth = _planted_codes()
    lb = lobes(cooccurrence(codes, doc_ids=doc, window=6), 3)
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 32))
    W_near = centres[truth] + 0.3 * rng.standard_normal((45, 32))  # lobes are spatial clusters
    sm = spatial_modularity(lb, W_near, n_perm=100)
    assert sm.ami > 0.9 and sm.p_value < 0.02
    sm0 = spatial_modularity(lb, rng.standard_normal((45, 32)), n_perm=100)  # random geometry
    assert abs(sm0.ami) < 0.2 and sm0.p_value > 0.02


def test_cooccurrence_through_an_sae_equals_counting_its_codes():
    torch.manual_seed(0)
    sae = build_sae("topk", 16, 40, k=4, seed=0)
    X = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)
    doc = np.repeat(np.arange(10), 12)
    with torch.no_grad():
        z = sae.encode(torch.from_numpy(X)).numpy()
    a = cooccurrence(X, sae=sae, doc_ids=doc, window=5, batch_size=17)
    b = cooccurrence(z, doc_ids=doc, window=5)
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(a.both, b.both)


def test_cooccurrence_bad_input():
    codes = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="'doc_ids' parameter of cooccurrence"):
        cooccurrence(codes, doc_ids=np.zeros(3))
    with pytest.raises(ValueError, match="'window' parameter of cooccurrence"):
        cooccurrence(codes, window=0)
    with pytest.raises(ValueError, match="no complete window"):
        cooccurrence(codes, window=20, drop_partial=True)


# ----------------------------------------------------------------------------- crystals


def _planted_crystals(seed=0, d=48, n_rel=3, per_rel=5, extra=10, distractor=8.0, noise=0.01):
    rng = np.random.default_rng(seed)
    rel = rng.standard_normal((n_rel, d)) * 1.2
    pts, truth, labels = [], [], []
    for k in range(n_rel):
        for _ in range(per_rel):
            a = rng.standard_normal(d)
            pts += [a, a + rel[k] + noise * rng.standard_normal(d)]
            truth.append((len(pts) - 2, len(pts) - 1))
            labels.append(k)
    pts += list(rng.standard_normal((extra, d)))
    P = np.array(pts)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    P = P + distractor * rng.standard_normal((len(P), 1)) * u  # a global distractor direction
    return P, np.array(truth), np.array(labels), u


def _recovered(found, truth, labels):
    """Best Jaccard between each planted relation's pairs and a found crystal."""
    out = []
    for k in np.unique(labels):
        want = {tuple(sorted(p)) for p in truth[labels == k]}
        best = 0.0
        for c in found.crystals:
            got = {tuple(sorted(map(int, p))) for p in c.pairs}
            best = max(best, len(want & got) / len(want | got))
        out.append(best)
    return np.array(out)


def test_planted_parallelograms_are_recovered_once_the_distractor_is_projected_out():
    P, truth, labels, u = _planted_crystals()
    raw = crystals(P)
    assert _recovered(raw, truth, labels).max() < 0.5  # the distractor hides the faces
    # the distractor direction given, or estimated as the top principal direction of a larger
    # cloud sharing it (40 points estimate it too roughly: the residual ~ sqrt(2 d / n))
    rng = np.random.default_rng(9)
    ref = rng.standard_normal((3000, P.shape[1])) + 8.0 * rng.standard_normal((3000, 1)) * u
    for kw in ({"distractors": u[None, :]}, {"projection": project_out(ref, 1)}):
        found = crystals(P, **kw)
        np.testing.assert_array_equal(_recovered(found, truth, labels), 1.0)
        big = [c for c in found.crystals if len(c.pairs) >= 3]
        assert len(big) == 3 and all(c.spread < 0.1 for c in big)
        assert all(c.n_parallelograms == 10 for c in big)
    basis = project_out(P, u[None, :])
    np.testing.assert_allclose(basis.T @ u, 0, atol=1e-12)
    np.testing.assert_allclose(basis.T @ basis, np.eye(P.shape[1] - 1), atol=1e-12)
    np.testing.assert_allclose(crystals(P, distractors=2).projection, project_out(P, 2))


def test_random_points_hold_no_large_crystal():
    P = np.random.default_rng(5).standard_normal((40, 48))
    found = crystals(P, distractors=1)
    assert all(len(c.pairs) <= 2 for c in found.crystals)


def test_lda_on_labelled_relations_recovers_held_out_faces():
    P, truth, labels, _ = _planted_crystals(seed=2, distractor=6.0, noise=0.05)
    train = np.arange(len(truth)) % 5 < 3  # 3 of 5 pairs per relation fit the projection
    W = lda_projection(P, truth[train], labels[train])
    assert W.shape == (P.shape[1], 2)
    raw = crystals(P, pairs=truth, tol=0.2)
    assert _recovered(raw, truth, labels).mean() < 0.5  # faces found only by chance
    found = crystals(P, pairs=truth, projection=W, tol=0.2)
    np.testing.assert_array_equal(_recovered(found, truth, labels), 1.0)
    with pytest.raises(ValueError, match="'labels' parameter of lda_projection"):
        lda_projection(P, truth, labels[:3])


def test_crystals_bad_input():
    P = np.zeros((5, 3))
    with pytest.raises(ValueError, match="'pairs' parameter of crystals"):
        crystals(P, pairs=[[0, 0]])
    with pytest.raises(ValueError, match="'tol' parameter of crystals"):
        crystals(P, tol=0.0)
    with pytest.raises(ValueError, match="'projection' parameter of crystals"):
        crystals(np.eye(5), projection=np.eye(3))


# ----------------------------------------------------------------------------- galaxy


def test_decoder_spectrum_recovers_a_planted_power_law():
    rng = np.random.default_rng(0)
    d, alpha = 64, 1.0
    scales = np.arange(1, d + 1) ** (-alpha / 2)  # eigenvalues r^-alpha
    W = rng.standard_normal((4000, d)) * scales
    spec = decoder_spectrum(W, rank_max=48, activations=W[:2000])
    assert spec.alpha == pytest.approx(alpha, abs=0.08)
    assert spec.null_alpha < 0.35  # isotropic cloud: flat, Marchenko-Pastur spectrum
    assert spec.activation_alpha == pytest.approx(alpha, abs=0.12)
    assert spec.fit_range == (1, 48)


def test_feature_geometry_end_to_end_on_a_small_sae():
    rng = np.random.default_rng(0)
    sae = build_sae("topk", 24, 64, k=6, seed=0)
    X = rng.standard_normal((600, 24)).astype(np.float32)
    g = feature_geometry(sae, X, doc_ids=np.repeat(np.arange(30), 20), window=10, n_latents=40,
                         n_lobes=3, crystal_latents=20, n_perm=20)
    s = g.summary()
    assert s["lobes"] == 3 and sum(s["lobe_sizes"]) == g.cooccurrence.latents.size
    assert s["windows"] == 60
    assert np.isfinite(s["decoder_alpha"]) and np.isfinite(s["activation_alpha"])
    assert g.crystal_latents.size == 20


def test_sae_inspect_geometry_section_and_sidecar(tmp_path):
    import json

    from click.testing import CliRunner

    from repscope.capture import ActivationStore
    from repscope.cli import app
    from repscope.dictionaries.io import save_sae

    rng = np.random.default_rng(0)
    store = tmp_path / "store"
    with ActivationStore.create(store, layers={"layers.1": 8}, shard_rows=100,
                                vocab=[f"t{i}" for i in range(20)]) as w:
        for doc in range(6):
            w.append({"layers.1": rng.standard_normal((50, 8)).astype(np.float32)},
                     {"doc_id": np.full(50, doc), "position": np.arange(50),
                      "token_id": rng.integers(0, 20, 50)}, chunk=doc)
        w.finish()
    sae_dir = save_sae(build_sae("topk", 8, 24, k=3, seed=0), tmp_path / "sae", hook_name="layers.1")
    res = CliRunner().invoke(app, ["sae", "inspect", str(sae_dir), "--store", str(store), "--features", "3",
                                   "--geometry", "--window", "10", "--lobes", "2"])
    assert res.exit_code == 0, res.output
    page = (sae_dir / "features.html").read_text()
    for part in ("Feature geometry", "lobes-heatmap", "Crystals", "galaxy"):
        assert part in page
    side = json.loads((sae_dir / "features.json").read_text())["geometry"]
    assert side["lobes"] == 2 and side["windows"] == 30
