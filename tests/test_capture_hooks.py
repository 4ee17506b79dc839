"""Forward hooks: exact values, glob selection, cleanup, early stop, inputs, pooling."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from repscope.capture import LayerNotFoundError, capture, pool, resolve_layers
from repscope.capture.hf import block_layers, default_layers
from repscope.capture.hooks import first_tensor, natural_key


@dataclass
class Out:
    hidden: torch.Tensor
    extra: int = 0


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(x + torch.tanh(self.lin(x)))
        return h, h.sum(-1)  # tuple output like transformer blocks


class Tiny(nn.Module):
    """Embedding + 11 blocks (two-digit names test natural sort) + a head with dataclass output."""

    def __init__(self, d: int = 8, n_blocks: int = 11, vocab: int = 20) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.head = nn.Linear(d, 3)
        self.calls = 0

    def forward(self, ids: torch.Tensor) -> Out:
        self.calls += 1
        h = self.embeddings(ids)
        for block in self.layers:
            h, _ = block(h)
        return Out(self.head(h))


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.arange(15).reshape(3, 5) % 20  # (batch, seq)


def manual_forward(model: Tiny, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"embeddings": model.embeddings(ids)}
    h = out["embeddings"]
    for i, block in enumerate(model.layers):
        h, _ = block(h)
        out[f"layers.{i}"] = h
    out["head"] = model.head(h)
    return out


def test_captured_equals_manual_forward_bit_for_bit(tiny: Tiny, ids: torch.Tensor) -> None:
    with torch.no_grad():
        expected = manual_forward(tiny, ids)
    with capture(tiny, ["embeddings", "layers.*", "head"]) as acts:
        tiny(ids)
    assert list(acts) == list(expected)  # execution order
    for name, value in expected.items():
        assert torch.equal(acts[name], value), name
        assert not acts[name].requires_grad


def test_glob_natural_sort_and_dot_boundaries(tiny: Tiny) -> None:
    names = resolve_layers(tiny, "layers.*")
    assert names == [f"layers.{i}" for i in range(11)]  # 2 before 10, no children
    assert resolve_layers(tiny, "layers.1?") == ["layers.10"]
    assert resolve_layers(tiny, "layers.**.lin")[:2] == ["layers.0.lin", "layers.1.lin"]
    assert resolve_layers(tiny, ["head", "layers.0", "head"]) == ["head", "layers.0"]
    assert sorted(["a.10", "a.2", "a.1"], key=natural_key) == ["a.1", "a.2", "a.10"]


def test_unknown_layer_lists_close_matches(tiny: Tiny) -> None:
    with pytest.raises(LayerNotFoundError, match=r"matches layer 'layer\.3'.*Close matches: \['layers\.3'"):
        resolve_layers(tiny, "layer.3")
    with pytest.raises(KeyError):  # also a KeyError (and a ValueError)
        with capture(tiny, ["encoder.layer.*"]):
            pass
    with pytest.raises(ValueError, match="Top-level modules"):
        resolve_layers(tiny, "nothing*")


def n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_exception(tiny: Tiny, ids: torch.Tensor) -> None:
    assert n_hooks(tiny) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with capture(tiny, ["layers.*"]):
            tiny(ids)
            assert n_hooks(tiny) == 11
            raise RuntimeError("boom")
    assert n_hooks(tiny) == 0
    with pytest.raises(LayerNotFoundError):  # also when resolving fails
        with capture(tiny, ["layers.0", "missing"]):
            pass
    assert n_hooks(tiny) == 0


def test_forward_that_raises_propagates_and_cleans_up(ids: torch.Tensor) -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(5, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.a(x)
            raise ValueError("forward failed on purpose")

    model = Broken()
    with pytest.raises(ValueError, match="forward failed on purpose"):
        with capture(model, ["a"]):
            model(torch.ones(2, 5))
    assert n_hooks(model) == 0


def test_stop_after_last_skips_later_layers(tiny: Tiny, ids: torch.Tensor) -> None:
    calls = []
    handle = tiny.head.register_forward_hook(lambda *a: calls.append(1))
    try:
        reached = False
        with capture(tiny, ["layers.2", "embeddings"], stop_after_last=True) as acts:
            tiny(ids)
            reached = True
        assert not reached and not calls  # the forward ended after layers.2
        assert set(acts) == {"embeddings", "layers.2"}
        with torch.no_grad():
            assert torch.equal(acts["layers.2"], manual_forward(tiny, ids)["layers.2"])
    finally:
        handle.remove()
    assert n_hooks(tiny) == 0


def test_capture_inputs_and_inference_mode(tiny: Tiny, ids: torch.Tensor) -> None:
    with capture(tiny, ["layers.0", "head"], which="input") as acts:
        out = tiny(ids)
        assert torch.is_inference_mode_enabled()
    with torch.no_grad():
        ref = manual_forward(tiny, ids)
    assert torch.equal(acts["layers.0"], ref["embeddings"])
    assert torch.equal(acts["head"], ref["layers.10"])
    assert out.hidden.is_inference()
    with pytest.raises(ValueError, match=r"'which' parameter of capture must be one of"):
        with capture(tiny, ["head"], which="outputs"):  # type: ignore[arg-type]
            pass


def test_first_tensor_handles_containers() -> None:
    t = torch.ones(2)
    assert first_tensor(t) is t
    assert first_tensor((None, [t])) is t
    assert first_tensor({"a": 3, "b": t}) is t
    assert first_tensor(Out(t)) is t
    assert first_tensor("text") is None


def test_module_without_tensor_output_is_reported() -> None:
    class NoTensor(nn.Module):
        def forward(self, x: torch.Tensor) -> str:
            return "done"

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = NoTensor()

        def forward(self, x: torch.Tensor) -> str:
            return self.inner(x)

    m = Wrap()
    with pytest.raises(TypeError, match="module 'inner' produced no tensor"):
        with capture(m, ["inner"]):
            m(torch.ones(1))
    assert n_hooks(m) == 0


def test_default_layers_of_a_generic_model(tiny: Tiny) -> None:
    assert block_layers(tiny) == [f"layers.{i}" for i in range(11)]
    assert default_layers(tiny) == ["embeddings"] + [f"layers.{i}" for i in range(11)]
    with pytest.raises(ValueError, match="Cannot find the blocks"):
        default_layers(nn.Linear(2, 2))


def test_pooling_respects_the_mask() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(3, 6, 4)  # (b, t, d)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0]])
    garbage = hidden.clone()
    garbage[mask == 0] = 1e6  # padding values must not matter
    for h in (hidden, garbage):
        mean = pool(h, mask, "mean")
        assert torch.allclose(mean[0], hidden[0, :3].mean(0))
        assert torch.allclose(mean[2], hidden[2, 2:5].mean(0))
        assert torch.equal(pool(h, mask, "first")[2], hidden[2, 2])  # left padding
        assert torch.equal(pool(h, mask, "last")[0], hidden[0, 2])  # right padding
        assert torch.equal(pool(h, mask, "none"), hidden[mask.bool()])
    assert pool(hidden, mask, "none").shape == (int(mask.sum()), 4)
    with pytest.raises(ValueError, match="'pooling' parameter of pool must be one of"):
        pool(hidden, mask, "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"pool expects hidden states of shape \(batch, seq, d\)"):
        pool(hidden[0], mask, "mean")
