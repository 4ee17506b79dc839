"""``Subspace``: theta_0 + P z through functional_call, SAID's per-tensor scales, the module left
untouched, gradients equal to P^T times the module's own gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from repscope.landscape.subspace import Subspace, select_parameters

F64 = torch.float64


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.BatchNorm1d(8), nn.Linear(8, 3)).double()


def _flat_grad(module: nn.Module, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    module.zero_grad()
    module(x).pow(2).sum().backward()
    params = dict(module.named_parameters())
    return torch.cat([params[n].grad.reshape(-1) for n in names])


@pytest.mark.parametrize("projection", ["dense", "sparse", "fastfood"])
def test_starts_at_theta0_and_gradient_is_projected(projection):
    net = _net().eval()
    x = torch.randn(5, 6, dtype=F64)
    sub = Subspace(net, 12, projection=projection, seed=3)
    assert torch.allclose(sub(x), net(x))
    sub(x).pow(2).sum().backward()
    g_theta = _flat_grad(net, x, sub.names)  # at theta_0 (z = 0)
    assert torch.allclose(sub.z.grad, sub.projection.transpose(g_theta), atol=1e-12)


def test_moves_along_the_projection_and_leaves_the_module_alone():
    net = _net().eval()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(4, 6, dtype=F64)
    sub = Subspace(net, 7, projection="dense", seed=1)
    with torch.no_grad():
        sub.z.copy_(torch.arange(7, dtype=F64) / 10)
    theta = torch.cat([t.reshape(-1) for t in sub.full_parameters().values()])
    assert torch.allclose(theta, sub.theta0 + sub.projection.P @ sub.z.detach())
    moved = copy.deepcopy(net)
    pieces = dict(zip(sub.names, theta.split(sub.sizes), strict=True))
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.copy_(pieces[name].view_as(p))
    assert torch.allclose(sub(x), moved(x))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [n for n, _ in sub.named_parameters()] == ["z"]
    assert sub.module is net


def test_said_scales_each_tensor():
    net = _net().eval()
    x = torch.randn(4, 6, dtype=F64)
    sub = Subspace(net, 20, projection="fastfood", said=True, seed=2)
    assert sub.n_scales == len(sub.names) == 6  # 2 Linear + BatchNorm weight and bias
    assert sub.z.numel() == 20 - 6
    sub(x).sum().backward()
    assert torch.count_nonzero(sub.scales.grad) == 0  # P z = 0 at the start: no signal yet
    with torch.no_grad():
        sub.z.normal_(generator=torch.Generator().manual_seed(0))
        sub.scales.copy_(torch.linspace(0.5, 2.0, 6, dtype=F64))
    delta = sub.projection(sub.z.detach()).split(sub.sizes)
    full = sub.full_parameters()
    for i, name in enumerate(sub.names):
        t0 = sub.theta0.split(sub.sizes)[i]
        assert torch.allclose(full[name].reshape(-1), t0 + sub.scales[i] * delta[i])
    by_module = Subspace(net, 20, said=True, said_groups="module")
    assert by_module.n_scales == 3  # one per module owning parameters


def test_include_exclude_select_theta():
    net = _net()
    assert [n for n, _ in select_parameters(net, include=("0.*",))] == ["0.weight", "0.bias"]
    assert [n for n, _ in select_parameters(net, exclude=("*.bias",))] == [
        "0.weight", "2.weight", "3.weight"]
    sub = Subspace(net, 5, exclude=("3.*",))
    assert sub.D == 6 * 8 + 8 + 8 + 8
    x = torch.randn(3, 6, dtype=F64)
    sub.train()
    net.train()
    with torch.no_grad():
        sub.z.fill_(1.0)
    frozen = net[3].weight.detach().clone()
    sub(x).sum().backward()
    assert torch.equal(net[3].weight, frozen)


def test_training_in_the_subspace_reduces_the_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 1))
    x, y = torch.randn(64, 10), torch.randn(64, 1)
    sub = Subspace(net, 30, seed=0)
    opt = torch.optim.Adam(sub.parameters(), lr=0.05)
    start = float(nn.functional.mse_loss(sub(x), y).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.mse_loss(sub(x), y)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * start


def test_subspace_input_errors():
    net = _net()
    with pytest.raises(ValueError, match=r"'d' parameter of Subspace must be an int in "
                                         r"\[7, 105\]\. Got 6"):
        Subspace(net, 6, said=True)
    with pytest.raises(ValueError, match=r"'include' parameter of Subspace must be globs "
                                         r"matching at least one parameter"):
        Subspace(net, 3, include=("nothing.*",))
    with pytest.raises(ValueError, match=r"'projection' parameter of Subspace must be one of"):
        Subspace(net, 3, projection="random")
    with pytest.raises(ValueError, match=r"'module' parameter of Subspace must be a "
                                         r"torch.nn.Module\. Got 'function'"):
        Subspace(lambda x: x, 3)
