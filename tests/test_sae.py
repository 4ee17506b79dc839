"""SAE architectures: shapes, activations, save/load, recovery of a known sparse dictionary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.dictionaries import activations as act
from repscope.dictionaries.evaluate import mean_max_cosine
from repscope.dictionaries.io import load_sae, save_sae
from repscope.dictionaries.sae import ARCHITECTURES, MatchingPursuitSAE, TopKSAE, build_sae
from repscope.dictionaries.train import TrainConfig, train_sae


def sparse_dictionary_data(n: int, d: int, n_features: int, s: int, seed: int = 0):
    """X = Z D with D (n_features, d) unit rows and exactly s active codes per row in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_features, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = np.zeros((n, n_features))
    active = np.argsort(rng.random((n, n_features)), axis=1)[:, :s]  # (n, s)
    np.put_along_axis(Z, active, rng.uniform(0.5, 1.5, (n, s)), axis=1)
    return (Z @ D).astype(np.float32), D


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_shapes_and_names(arch):
    sae = build_sae(arch, 8, 40, **({"k": 4} if arch in ("topk", "batchtopk", "mp") else {}))
    assert tuple(sae.W_enc.shape) == (8, 40) and tuple(sae.W_dec.shape) == (40, 8)
    assert tuple(sae.b_enc.shape) == (40,) and tuple(sae.b_dec.shape) == (8,)
    x = torch.randn(5, 8)
    z = sae.encode(x)
    assert z.shape == (5, 40) and (z >= 0).all()
    assert sae.decode(z).shape == (5, 8)


def test_topk_and_batch_topk_counts():
    pre = torch.randn(6, 30)
    assert ((act.topk(pre, 4) > 0).sum(1) <= 4).all()
    z = act.batch_topk(pre.abs() + 0.1, 4)
    assert int((z > 0).sum()) == 24  # k * n over the batch, unevenly per row
    assert torch.equal(act.jumprelu(torch.tensor([[0.1, 0.5, -1.0]]), 0.2), torch.tensor([[0.0, 0.5, -0.0]]))


def test_afa_k_matches_norm():
    acts = torch.tensor([[3.0, 0.0, 4.0, 0.1, 0.2]])
    k, order = act.afa_k(acts, torch.tensor([5.0]), torch.ones(5))
    assert int(k) == 2 and order[0, :2].tolist() == [2, 0]
    z = act.topk_afa(acts, torch.tensor([5.0]), torch.ones(5))
    assert torch.equal(z, torch.tensor([[3.0, 0.0, 4.0, 0.0, 0.0]]))


def test_batchtopk_threshold_used_at_inference():
    sae = build_sae("batchtopk", 4, 12, k=2)
    sae.after_step(torch.tensor([[0.0, 0.7, 0.3], [0.4, 0.0, 0.0]]))
    assert float(sae.threshold) == pytest.approx(0.3)
    pre = torch.tensor([[0.2, 0.31, 5.0]])
    assert torch.equal(sae.codes(None, pre, train=False), torch.tensor([[0.0, 0.31, 5.0]]))


def test_matching_pursuit_residual_decreases_monotonically():
    torch.manual_seed(0)
    sae = MatchingPursuitSAE(16, 64, k=12, seed=3)
    x = torch.randn(200, 16)
    norms = sae.residual_norms(x)  # (n, k + 1)
    assert norms.shape == (200, 13)
    assert (norms[:, 1:] <= norms[:, :-1] + 1e-5).all()
    assert (norms[:, -1] < norms[:, 0]).float().mean() > 0.99
    # the codes reproduce the pursuit's reconstruction exactly
    z = sae.encode(x)
    resid = x - sae.decode(z)
    assert torch.allclose(resid.norm(dim=1), norms[:, -1], atol=1e-4)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_save_load_roundtrip(tmp_path, arch):
    sae = build_sae(arch, 6, 18, **({"k": 3} if arch in ("topk", "batchtopk", "mp") else {}))
    with torch.no_grad():
        sae.input_scale.fill_(2.5)
        sae.b_dec.add_(0.3)
    save_sae(sae, tmp_path / "sae", hook_name="layer")
    back = load_sae(tmp_path / "sae")
    assert type(back) is type(sae) and back.hyperparams() == sae.hyperparams()
    x = torch.randn(9, 6)
    assert torch.equal(back.encode(x), sae.encode(x))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"The 'k' parameter of TopKSAE must be an int in \[1, d_sae=10\]. Got 11"):
        TopKSAE(4, 10, k=11)
    with pytest.raises(ValueError, match=r"The 'k' parameter of MatchingPursuitSAE must be an int in \[1, d_sae=5\]"):
        build_sae("mp", 4, 5, k=6)
    with pytest.raises(ValueError, match=r"The 'architecture' parameter of build_sae must be one of"):
        build_sae("vanilla", 4, 5)
    sae = TopKSAE(4, 10, k=2)
    save_sae(sae, tmp_path / "s")
    with pytest.raises(ValueError, match=r"built for d_in=4 features; got activations of shape \(3, 5\)"):
        load_sae(tmp_path / "s").encode(torch.randn(3, 5))
    X = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        train_sae(X, TrainConfig(d_sae=8, k=2, batch_size=16, steps=2))
    with pytest.raises(ValueError, match=r"The 'k' parameter of TopKSAE must be an int in \[1, d_sae=8\]"):
        train_sae(X[:3], TrainConfig(d_sae=8, k=9, batch_size=2, steps=2))
    with pytest.raises(TypeError, match="floating-point dtype"):
        train_sae(np.ones((10, 4), dtype=np.int64), TrainConfig(d_sae=8, k=2))
    with pytest.raises(FileNotFoundError, match="not a saved SAE"):
        load_sae(tmp_path / "missing")


# Recovery of a known dictionary. TopK / BatchTopK / ReLU+L1 / MP: 32 features in 16
# dimensions (superposition), 3 active per row, 64 latents. top-AFA picks its own sparsity and
# assumes quasi-orthogonal features: it is tested on a complete dictionary (32 features in 32
# dimensions, 32 latents); in superposition (32 in 16) it settles on denser codes.
RECOVERY = {  # arch: (hyper-parameters, d, n_features, d_sae)
    "topk": ({"k": 3}, 16, 32, 64),
    "batchtopk": ({"k": 3}, 16, 32, 64),
    "mp": ({"k": 3}, 16, 32, 64),
    "relu": ({"l1_coeff": 0.1}, 16, 32, 64),
    "topafa": ({}, 32, 32, 32),
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("arch", sorted(RECOVERY))
def test_recovers_known_sparse_dictionary(arch, one_thread):
    hyper, d, n_features, d_sae = RECOVERY[arch]
    X, D = sparse_dictionary_data(4096, d, n_features, 3)
    cfg = TrainConfig(architecture=arch, d_sae=d_sae, batch_size=256, steps=400, lr=1e-2,
                      warmup_steps=50, dead_window_tokens=10_000, **hyper)
    result = train_sae(X, cfg)
    score = mean_max_cosine(D, result.sae.W_dec.detach())
    assert score > 0.9, f"{arch}: mean max-cosine {score:.3f}"
    if arch in ("topk", "mp"):
        assert result.history[-1]["l0"] <= 3


def test_topk_sparse_decoder_gradients_match_dense():
    torch.manual_seed(0)
    sae = TopKSAE(10, 40, k=4, k_aux=3, seed=2).double()
    x = torch.randn(32, 10, dtype=torch.float64)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[::3] = True
    step = sae.training_loss(x, dead)
    step.loss.backward()
    fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    xn = sae.normalize(x)
    pre = sae.pre_acts(xn)
    z = act.topk(pre, 4)
    recon = z @ sae.W_dec + sae.b_dec
    loss = (recon - xn).pow(2).sum(-1).mean() / 10 + sum(sae.extra_losses(xn, pre, z, recon, dead).values())
    loss.backward()
    assert torch.allclose(step.loss, loss)
    for name, p in sae.named_parameters():
        assert torch.allclose(fast[name], p.grad, atol=1e-12), name
    assert torch.equal(step.codes, z.detach())
