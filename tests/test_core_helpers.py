"""Shared helpers: the one row-take, the one natural sort, the one progress bar."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from repscope._arrays import take_rows
from repscope._names import natural_key
from repscope._progress import ProgressBar


def test_take_rows_keeps_the_kind_and_the_rows():
    X = np.arange(12.0).reshape(4, 3)  # (n, d)
    idx = np.array([3, 0, 0])
    got = take_rows(X, idx)
    assert isinstance(got, np.ndarray) and np.array_equal(got, X[[3, 0, 0]])
    T = torch.from_numpy(X)
    for i in (idx, torch.as_tensor(idx), idx.tolist()):
        got_t = take_rows(T, i)
        assert isinstance(got_t, torch.Tensor) and got_t.device == T.device
        assert np.array_equal(got_t.numpy(), X[[3, 0, 0]])
    assert np.array_equal(take_rows(X.tolist(), [1]), X[[1]])  # sequences become numpy
    mask = np.array([True, False, True, False])
    assert np.array_equal(take_rows(T, mask).numpy(), X[mask])
    assert take_rows(X, np.array([], dtype=np.int64)).shape == (0, 3)


def test_natural_key_orders_numbers_by_value_and_is_total():
    names = ["layer.10", "layer.2", "layer.1", "Layer.1", "embed", "layer.02", "1x", "a1b10",
             "a1b9", "step-100", "step-20"]
    got = sorted(names, key=natural_key)
    assert got == ["1x", "a1b9", "a1b10", "embed", "Layer.1", "layer.1", "layer.02",
                   "layer.2", "layer.10", "step-20", "step-100"]
    assert sorted(reversed(names), key=natural_key) == got  # no ties left to input order


def test_progress_bar_is_a_no_op_when_disabled_and_draws_when_enabled():
    with ProgressBar(3, enabled=False) as bar:
        bar.update(advance=1)  # nothing to draw, nothing imported or started
    assert bar._bar is None
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with ProgressBar(4, "{task.description}", "{task.fields[rate]}", description="work",
                     console=console, rate="0/s") as bar:
        bar.update(advance=3, rate="7/s")
    text = out.getvalue()
    assert "work" in text and "3/4" in text and "7/s" in text


@pytest.mark.parametrize("bad", [None, "x"])
def test_take_rows_refuses_what_is_not_an_index(bad):
    with pytest.raises((IndexError, TypeError, ValueError)):
        take_rows(np.zeros((3, 2)), bad)
