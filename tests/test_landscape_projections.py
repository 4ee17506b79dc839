"""The Walsh-Hadamard transform and the three random projections: against dense references,
their adjoints, their column normalisation, their seeding and their input checks."""

from __future__ import annotations

import math

import pytest
import torch

from repscope.landscape.hadamard import factor_sizes, fwht, hadamard_matrix
from repscope.landscape.projections import (
    PROJECTIONS,
    FastfoodProjection,
    SparseProjection,
    make_projection,
)

F64 = torch.float64


def test_hadamard_matrix_is_sylvester_and_orthogonal():
    H = hadamard_matrix(16, dtype=F64)
    assert torch.equal(H, H.T)
    assert torch.equal(H @ H, 16 * torch.eye(16, dtype=F64))
    assert torch.equal(hadamard_matrix(4), torch.tensor(
        [[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]))


@pytest.mark.parametrize("b", [1, 2, 8, 64, 1024, 4096])
@pytest.mark.parametrize("radix", [1, 3, 5])
def test_fwht_matches_the_dense_matrix(b, radix):
    x = torch.randn(3, b, dtype=F64, generator=torch.Generator().manual_seed(b))
    ref = x @ hadamard_matrix(b, dtype=F64)
    assert torch.allclose(fwht(x, radix=radix), ref, atol=1e-9 * math.sqrt(b))
    assert torch.allclose(fwht(fwht(x, radix=radix), radix=radix), b * x, atol=1e-8 * b)
    assert math.prod(factor_sizes(b, radix)) == b
    assert max(factor_sizes(b, radix)) <= 2**radix


def test_fwht_textbook_example_and_shapes():
    x = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    assert fwht(x).tolist() == [4.0, 2.0, 0.0, -2.0, 0.0, 2.0, 0.0, 2.0]
    y = torch.randn(2, 3, 32)
    assert fwht(y).shape == (2, 3, 32)
    assert torch.equal(y, y.clone())  # input untouched


def test_fwht_rejects_bad_input():
    with pytest.raises(ValueError, match=r"'x' parameter of fwht must be a tensor whose last "
                                         r"axis has a power-of-2 length\. Got \(3, 12\)"):
        fwht(torch.zeros(3, 12))
    with pytest.raises(ValueError, match=r"'x' parameter of fwht must be a floating-point"):
        fwht(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"'b' parameter of hadamard_matrix must be a power "
                                         r"of 2\. Got 6"):
        hadamard_matrix(6)


@pytest.mark.parametrize("kind", PROJECTIONS)
@pytest.mark.parametrize(("D", "d"), [(64, 8), (100, 13), (700, 33)])
def test_forward_and_backward_are_the_matrix_and_its_transpose(kind, D, d):
    P = make_projection(kind, D, d, seed=5, sizes=[D // 3, D - D // 3], dtype=F64)
    M = P.matrix()  # (D, d)
    assert M.shape == (D, d)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(d, dtype=F64, generator=gen, requires_grad=True)
    g = torch.randn(D, dtype=F64, generator=gen)
    base = torch.randn(D, dtype=F64, generator=gen)
    out = P(z, base)
    assert torch.allclose(out, base + M @ z.detach(), atol=1e-12)
    (out @ g).backward()
    assert torch.allclose(z.grad, M.T @ g, atol=1e-11)
    assert torch.allclose(P.transpose(g), M.T @ g, atol=1e-11)
    assert torch.autograd.gradcheck(lambda v: P(v), (z.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_dense_and_sparse_columns_have_unit_length(kind):
    M = make_projection(kind, 500, 40, seed=2, dtype=F64).matrix()
    assert torch.allclose(M.norm(dim=0), torch.ones(40, dtype=F64), atol=1e-12)


def test_fastfood_columns_have_unit_length():
    # exact when the block divides D (each block's columns have norm sqrt(b sum G^2))
    M = FastfoodProjection(512, 30, seed=1, dtype=F64).matrix()
    assert torch.allclose(M.norm(dim=0), torch.ones(30, dtype=F64), atol=1e-12)
    # a truncated last block: unit length in expectation (mean over 200 columns within 3 %)
    M = FastfoodProjection(1000, 200, seed=1, dtype=F64).matrix()
    sq = M.norm(dim=0) ** 2
    assert abs(float(sq.mean()) - 1.0) < 0.03
    # entries look like N(0, 1/D): mean 0, variance 1/D
    assert abs(float(M.mean())) < 3 / math.sqrt(M.numel() * 1000)
    assert abs(float(M.var()) * 1000 - 1.0) < 0.05


def test_fastfood_preserves_lengths_like_a_gaussian_projection():
    # E ||P z||^2 = ||z||^2 for unit-norm columns that are nearly orthogonal (Le et al. 2013)
    P = FastfoodProjection(2**14, 64, seed=3, dtype=F64)
    z = torch.randn(200, 64, dtype=F64, generator=torch.Generator().manual_seed(0))
    ratios = torch.stack([P(v).norm() ** 2 / v.norm() ** 2 for v in z])
    assert abs(float(ratios.mean()) - 1.0) < 0.05


def test_sparse_density_follows_each_tensor():
    sizes = [10000, 400, 25]
    P = SparseProjection(sum(sizes), 200, seed=0, sizes=sizes, dtype=F64)
    M = P.matrix()
    start = 0
    for size in sizes:
        nnz = float((M[start:start + size] != 0).sum()) / 200  # per column
        assert abs(nnz - math.sqrt(size)) < 0.1 * math.sqrt(size) + 1
        start += size
    assert P.nnz == int((M != 0).sum())
    values = M[M != 0].abs()
    # within a column all non-zeros share one magnitude, 1/sqrt(nnz of the column)
    col = M[:, 0]
    nz = col[col != 0].abs()
    assert torch.allclose(nz, nz[0].expand_as(nz))
    assert float(values.max()) <= 1.0


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_seeded(kind):
    a = make_projection(kind, 300, 12, seed=7).matrix()
    b = make_projection(kind, 300, 12, seed=7).matrix()
    c = make_projection(kind, 300, 12, seed=8).matrix()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fastfood_block_option_reproduces_a_single_block():
    P = FastfoodProjection(1000, 10, seed=0, block=1024)
    assert (P.block, P.n_blocks) == (1024, 1)
    Q = FastfoodProjection(1000, 10, seed=0)
    assert (Q.block, Q.n_blocks) == (16, 63)


def test_projection_input_errors():
    with pytest.raises(ValueError, match=r"'kind' parameter of make_projection must be one of "
                                         r"\{'fastfood', 'sparse', 'dense'\}\. Got 'gauss'"):
        make_projection("gauss", 10, 2)
    with pytest.raises(ValueError, match=r"'d' parameter of make_projection must be an int in "
                                         r"\[1, D=10\]\. Got 11"):
        make_projection("dense", 10, 11)
    with pytest.raises(ValueError, match=r"'d' parameter of DenseProjection must be at most "
                                         r"max_dense / D = 10"):
        make_projection("dense", 100, 20, max_dense=1000)
    with pytest.raises(ValueError, match=r"'block' parameter of FastfoodProjection must be a "
                                         r"power of 2 >= max\(d, 2\) = 20\. Got 16"):
        FastfoodProjection(100, 20, block=16)
    with pytest.raises(ValueError, match=r"'sizes' parameter of SparseProjection must be "
                                         r"positive tensor sizes summing to D=10"):
        SparseProjection(10, 2, sizes=[4, 4])
    P = make_projection("fastfood", 50, 4)
    with pytest.raises(ValueError, match=r"'z' parameter of FastfoodProjection.forward must be "
                                         r"a tensor of shape \(4,\)\. Got \(5,\)"):
        P(torch.zeros(5))
