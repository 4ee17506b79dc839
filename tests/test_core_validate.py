import numpy as np
import pytest
import torch

from repscope._validate import (
    as_numpy,
    as_torch,
    check_array,
    check_choice,
    check_float,
    check_int,
    check_paired,
)


def test_check_int_message_names_parameter_and_value():
    with pytest.raises(ValueError, match=r"The 'k' parameter of twonn must be an int in \[2, n_samples=50\)\. Got 1 instead\."):
        check_int(1, "k", "twonn", low=2, high=50, high_name="n_samples")
    with pytest.raises(ValueError, match="Got 50 instead"):
        check_int(50, "k", "twonn", low=2, high=50)
    assert check_int(np.int64(5), "k", "f", low=2, high=50) == 5
    with pytest.raises(ValueError, match="Got True instead"):
        check_int(True, "k", "f")
    with pytest.raises(ValueError, match="Got 2.0 instead"):
        check_int(2.0, "k", "f")
    assert check_int(50, "k", "f", high=50, high_inclusive=True) == 50


def test_check_float_and_choice():
    assert check_float(0.5, "q", "f", low=0, high=1) == 0.5
    with pytest.raises(ValueError, match=r"must be a float in \(0, 1\]\. Got 0.0"):
        check_float(0.0, "q", "f", low=0, high=1, low_inclusive=False)
    with pytest.raises(ValueError, match="Got nan"):
        check_float(float("nan"), "q", "f")
    with pytest.raises(ValueError, match=r"one of \{'a', 'b'\}\. Got 'c'"):
        check_choice("c", "metric", "knn", ["a", "b"])


@pytest.mark.parametrize("make", [np.asarray, torch.as_tensor])
def test_check_array_errors(make):
    X = np.random.default_rng(0).normal(size=(10, 3))
    out = check_array(make(X), "f")
    assert out.shape == (10, 3)
    with pytest.raises(ValueError, match="2-D.*shape \\(10,\\).*reshape"):
        check_array(make(X[:, 0]), "f")
    with pytest.raises(TypeError, match="floating-point dtype.*int64"):
        check_array(make((X * 10).astype(np.int64)), "f")
    with pytest.raises(ValueError, match="empty"):
        check_array(make(X[:0]), "f")
    with pytest.raises(ValueError, match="at least 20 samples.*n_samples=10"):
        check_array(make(X), "f", min_samples=20)
    bad = X.copy()
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"1 non-finite value.*\(4, 1\)"):
        check_array(make(bad), "f")


def test_check_paired_and_conversions():
    a, b = np.zeros((5, 2)), np.zeros((4, 2))
    with pytest.raises(ValueError, match="same number of rows; got 5 and 4"):
        check_paired(a, b, "cka")
    t = as_torch(np.ones((2, 2), dtype=np.float32))
    assert t.dtype == torch.float32
    assert as_numpy(torch.ones(2, 2, dtype=torch.bfloat16)).dtype == np.float32
