"""Label-aware geometry: neural-collapse measures NC1-NC4 and cross-validated linear probes.

Notation (Papyan, Han and Donoho 2020, "Prevalence of neural collapse during the terminal phase
of deep learning training", PNAS): rows ``h_i`` with labels ``y_i`` in ``C`` classes, class means
``mu_c``, global mean ``mu_G`` (mean of all rows), within-class covariance
``Sigma_W = 1/n sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``, between-class covariance
``Sigma_B = 1/C sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` and classifier weights ``W`` of shape
``(C, d)``. All measures go to 0 at perfect collapse, except the probe (an accuracy).

Every function is ``fn(X, *, labels, ...)``; labels are any hashable values, one per row, with
at least two classes. Computation is float64 whatever the input dtype.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np

from repscope._validate import (
    ArrayLike,
    as_numpy,
    check_array,
    check_choice,
    check_float,
    check_int,
)
from repscope.registry import register
from repscope.results import Estimate

__all__ = [
    "check_labels",
    "class_means",
    "linear_probe",
    "nc1",
    "nc2_equiangularity",
    "nc2_equinorm",
    "nc3",
    "nc4",
]

_INV = {"rotation", "translation", "scale", "permutation"}


def check_labels(labels: Any, n: int, fn: str, *, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate one label per row and at least ``min_classes`` classes.

    Returns ``(codes, classes)``: ``codes`` (n,) int64 in ``[0, C)`` and the sorted class values.
    """
    if labels is None:
        raise ValueError(f"{fn} needs class labels: pass labels= with one label per row of X.")
    y = as_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"The 'labels' parameter of {fn} must be a 1-D array with one label per "
                         f"row of X. Got an array of shape {tuple(y.shape)} instead.")
    if y.shape[0] != n:
        raise ValueError(f"The 'labels' parameter of {fn} must have one label per row of X "
                         f"(n_samples={n}). Got {y.shape[0]} labels instead.")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(f"The 'labels' parameter of {fn} contains NaN or inf; labels must be "
                         f"class identifiers.")
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < min_classes:
        raise ValueError(f"The 'labels' parameter of {fn} must contain at least {min_classes} "
                         f"classes. Got {classes.size} class(es): {classes.tolist()[:5]}.")
    return codes.astype(np.int64), classes


def _prepare(X: ArrayLike, labels: Any, fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = check_array(X, fn, min_samples=2)
    codes, classes = check_labels(labels, X.shape[0], fn)
    return as_numpy(X, np.float64), codes, classes


def class_means(X: np.ndarray, codes: np.ndarray, C: int) -> np.ndarray:
    """(C, d) class means from float64 rows and integer class codes."""
    sums = np.zeros((C, X.shape[1]))
    np.add.at(sums, codes, X)
    return sums / np.bincount(codes, minlength=C)[:, None]


def _counts(codes: np.ndarray, C: int) -> np.ndarray:
    return np.bincount(codes, minlength=C)


# ----------------------------------------------------------------------------- NC1
@register("nc1", family="classes", invariances=_INV, bounds=(0.0, None), needs_labels=True,
          higher_is_better=False, min_samples=4)
def nc1(X: ArrayLike, *, labels: ArrayLike) -> Estimate:
    """NC1, within-class variability collapse: ``1/C tr(Sigma_W Sigma_B^+)`` (Papyan et al. 2020).

    ``Sigma_B^+`` is the Moore-Penrose pseudo-inverse (``Sigma_B`` has rank <= C - 1). 0 when
    every row equals its class mean; large (about ``(n/C - 1)``-fold the between-class
    variation) for random labels. Diagnostics: ``tr_within``, ``tr_between``, class counts.
    NaN with a warning when all class means coincide (``Sigma_B = 0``).
    """
    X, codes, classes = _prepare(X, labels, "nc1")
    C = classes.size
    M = class_means(X, codes, C)  # (C, d)
    mu_g = X.mean(0)  # (d,)
    R = X - M[codes]  # (n, d) within-class residuals
    sw = R.T @ R / X.shape[0]  # (d, d)
    Mc = M - mu_g  # (C, d)
    sb = Mc.T @ Mc / C  # (d, d)
    if np.trace(sb) <= 1e-12 * (np.trace(sw) + np.trace(sb)):  # zero up to rounding
        warnings.warn("nc1 is undefined here (all class means are equal); returning NaN.",
                      RuntimeWarning, stacklevel=2)
        value = float("nan")
    else:
        value = float(np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / C)
    return Estimate(measure="nc1", value=value, n_samples=int(X.shape[0]), params={},
                    diagnostics={"tr_within": float(np.trace(sw)), "tr_between": float(np.trace(sb)),
                                 "class_counts": _counts(codes, C), "n_classes": int(C)})


# ----------------------------------------------------------------------------- NC2
def _centred_means(X: ArrayLike, labels: Any, fn: str) -> tuple[np.ndarray, np.ndarray, int]:
    Xn, codes, classes = _prepare(X, labels, fn)
    M = class_means(Xn, codes, classes.size) - Xn.mean(0)  # (C, d)
    return M, codes, int(Xn.shape[0])


@register("nc2_equinorm", family="classes", invariances=_INV, bounds=(0.0, None),
          needs_labels=True, higher_is_better=False)
def nc2_equinorm(X: ArrayLike, *, labels: ArrayLike) -> Estimate:
    """NC2 equinorm: ``std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||`` (Papyan et al. 2020).

    Coefficient of variation (population std) of the centred class-mean norms: 0 when all
    class means are equally far from the global mean, as in a simplex equiangular tight frame.
    """
    M, codes, n = _centred_means(X, labels, "nc2_equinorm")
    norms = np.linalg.norm(M, axis=1)  # (C,)
    mean = norms.mean()
    value = float(norms.std() / mean) if mean > 0 else float("nan")
    if not mean > 0:
        warnings.warn("nc2_equinorm is undefined here (all class means are equal); returning NaN.",
                      RuntimeWarning, stacklevel=2)
    return Estimate(measure="nc2_equinorm", value=value, n_samples=n, params={},
                    diagnostics={"mean_norms": norms})


@register("nc2_equiangularity", family="classes", invariances=_INV, bounds=(0.0, None),
          needs_labels=True, higher_is_better=False)
def nc2_equiangularity(X: ArrayLike, *, labels: ArrayLike) -> Estimate:
    """NC2 equiangularity: ``std_{c != c'} cos(mu_c - mu_G, mu_c' - mu_G)`` (Papyan et al. 2020).

    0 when all pairs of centred class means meet at the same angle (always 0 for C = 2, where
    there is one pair). ``diagnostics["max_angle"]`` is Papyan et al.'s maximal-angle measure
    ``mean_{c != c'} |cos + 1/(C - 1)|``, 0 for a simplex equiangular tight frame.
    """
    M, codes, n = _centred_means(X, labels, "nc2_equiangularity")
    C = M.shape[0]
    norms = np.linalg.norm(M, axis=1)  # (C,)
    if np.any(norms == 0):
        warnings.warn("nc2_equiangularity is undefined here (a class mean equals the global "
                      "mean); returning NaN.", RuntimeWarning, stacklevel=2)
        return Estimate(measure="nc2_equiangularity", value=float("nan"), n_samples=n, params={})
    U = M / norms[:, None]  # (C, d)
    cos = (U @ U.T)[~np.eye(C, dtype=bool)]  # (C (C - 1),)
    return Estimate(measure="nc2_equiangularity", value=float(cos.std()), n_samples=n, params={},
                    diagnostics={"cosines": cos, "mean_cosine": float(cos.mean()),
                                 "max_angle": float(np.abs(cos + 1 / (C - 1)).mean())})


# ----------------------------------------------------------------------------- classifier
def _few_threads(X: np.ndarray) -> Any:
    """One BLAS thread for small problems, where thread start-up dominates the solver's time."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1) if X.size < 2**20 else contextlib.nullcontext()


def _classifier(X: np.ndarray, codes: np.ndarray, C: int, weights: Any, bias: Any,
                fn: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(W (C, d), b (C,), source)``: the given classifier, or a fitted logistic regression."""
    d = X.shape[1]
    if weights is None:
        from sklearn.linear_model import LogisticRegression

        with _few_threads(X):
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(X, codes)
        W, b = clf.coef_, clf.intercept_
        if C == 2:  # sklearn returns one row for two classes: expand to (2, d)
            W, b = np.vstack([-W[0] / 2, W[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
        return W, b, "logistic_regression"
    W = as_numpy(weights, np.float64)
    if W.shape != (C, d):
        raise ValueError(f"The 'weights' parameter of {fn} must be classifier weights of shape "
                         f"(n_classes, n_features)=({C}, {d}). Got shape {tuple(W.shape)} instead.")
    b = np.zeros(C) if bias is None else as_numpy(bias, np.float64)
    if b.shape != (C,):
        raise ValueError(f"The 'bias' parameter of {fn} must have shape (n_classes,)=({C},). "
                         f"Got shape {tuple(b.shape)} instead.")
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise ValueError(f"The 'weights'/'bias' parameters of {fn} contain non-finite values.")
    return W, b, "given"


@register("nc3", family="classes", bounds=(0.0, 4.0), needs_labels=True, higher_is_better=False)
def nc3(X: ArrayLike, *, labels: ArrayLike, weights: ArrayLike | None = None,
        bias: ArrayLike | None = None) -> Estimate:
    """NC3, self-duality: ``|| W/||W||_F - M/||M||_F ||_F^2`` (Papyan et al. 2020).

    ``M`` is the ``(C, d)`` matrix of centred class means ``mu_c - mu_G`` and ``W`` the
    ``(C, d)`` last-layer classifier weights, rows in the sorted order of the class labels.
    In ``[0, 4]``; 0 when the classifier aligns with the class means. Without ``weights`` a
    multinomial logistic regression (L2, C = 1) fitted on X stands in for the classifier
    (``diagnostics["classifier"] = "logistic_regression"``): then the value describes that
    probe, not the network's own head. ``bias`` is unused by NC3 and accepted for symmetry
    with :func:`nc4`.
    """
    X, codes, classes = _prepare(X, labels, "nc3")
    C = classes.size
    W, _, source = _classifier(X, codes, C, weights, bias, "nc3")
    M = class_means(X, codes, C) - X.mean(0)  # (C, d)
    nw, nm = np.linalg.norm(W), np.linalg.norm(M)
    if nw == 0 or nm == 0:
        warnings.warn("nc3 is undefined here (zero classifier or equal class means); returning NaN.",
                      RuntimeWarning, stacklevel=2)
        value = float("nan")
    else:
        value = float(np.linalg.norm(W / nw - M / nm) ** 2)
    return Estimate(measure="nc3", value=value, n_samples=int(X.shape[0]),
                    params={"bias": None if bias is None else as_numpy(bias, np.float64)},
                    diagnostics={"classifier": source})


@register("nc4", family="classes", bounds=(0.0, 1.0), needs_labels=True, higher_is_better=False)
def nc4(X: ArrayLike, *, labels: ArrayLike, weights: ArrayLike | None = None,
        bias: ArrayLike | None = None) -> Estimate:
    """NC4, simplification to nearest class centre: classifier vs nearest-class-mean disagreement.

    The fraction of rows where the classifier ``argmax_c (W h + b)_c`` and the nearest class
    mean ``argmin_c ||h - mu_c||`` disagree (Papyan et al. 2020). In ``[0, 1]``; 0 at collapse. Without ``weights`` a fitted
    multinomial logistic regression stands in for the classifier (as in :func:`nc3`).
    ``diagnostics``: the accuracy of both classifiers against the labels.
    """
    X, codes, classes = _prepare(X, labels, "nc4")
    C = classes.size
    W, b, source = _classifier(X, codes, C, weights, bias, "nc4")
    M = class_means(X, codes, C)  # (C, d)
    pred_w = np.argmax(X @ W.T + b, axis=1)  # (n,)
    d2 = (X**2).sum(1)[:, None] - 2 * X @ M.T + (M**2).sum(1)[None, :]  # (n, C)
    pred_ncc = np.argmin(d2, axis=1)  # (n,)
    return Estimate(
        measure="nc4", value=float(np.mean(pred_w != pred_ncc)), n_samples=int(X.shape[0]),
        params={"bias": None if bias is None else as_numpy(bias, np.float64)},
        diagnostics={"classifier": source, "classifier_accuracy": float(np.mean(pred_w == codes)),
                     "ncc_accuracy": float(np.mean(pred_ncc == codes))},
    )


# ----------------------------------------------------------------------------- linear probe
def _cv_accuracy(X: np.ndarray, y: np.ndarray, folds: int, C: float, max_iter: int,
                 standardize: bool, seed: int) -> tuple[np.ndarray, bool]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    accs, converged = [], True
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        steps = [StandardScaler()] if standardize else []
        model = make_pipeline(*steps, LogisticRegression(C=C, max_iter=max_iter))
        with warnings.catch_warnings(record=True) as caught, _few_threads(X):
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X[train], y[train])
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        accs.append(float(np.mean(model.predict(X[test]) == y[test])))
    return np.asarray(accs), converged


@register("linear_probe", family="classes", bounds=(0.0, 1.0), needs_labels=True,
          higher_is_better=True, min_samples=10)
def linear_probe(X: ArrayLike, *, labels: ArrayLike, folds: int = 5, C: float = 1.0,
                 max_iter: int = 1000, standardize: bool = True, control: str = "shuffle",
                 seed: int = 0) -> Estimate:
    """Cross-validated accuracy of a linear (multinomial logistic-regression) probe.

    Stratified ``folds``-fold cross-validation (shuffled with ``seed``) of an L2 logistic
    regression with inverse strength ``C`` on standardised features (Alain and Bengio 2017,
    "Understanding intermediate layers using linear classifier probes"). The same protocol is
    run on a control task (Hewitt and Liang 2019, "Designing and interpreting probes with
    control tasks"): ``control="shuffle"`` permutes the labels across rows (keeps the class
    frequencies), ``"random"`` draws uniform random classes. ``diagnostics``:
    ``control_accuracy``, ``selectivity = accuracy - control_accuracy``, ``chance`` (majority
    class share), per-fold accuracies and ``converged``. ``stderr`` is the standard error of the
    fold mean. Each class needs at least ``folds`` rows.
    """
    fn = "linear_probe"
    X, y, classes = _prepare(X, labels, fn)
    folds = check_int(folds, "folds", fn, low=2)
    C = check_float(C, "C", fn, low=0.0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", fn, low=1)
    control = check_choice(control, "control", fn, ["shuffle", "random"])
    counts = _counts(y, classes.size)
    if counts.min() < folds:
        small = classes[int(np.argmin(counts))].item()
        raise ValueError(f"{fn} needs at least folds={folds} rows per class for stratified "
                         f"cross-validation; class {small!r} has {int(counts.min())}. Lower "
                         f"'folds' or pass more rows.")
    acc, ok = _cv_accuracy(X, y, folds, C, max_iter, standardize, seed)
    rng = np.random.default_rng(seed)
    y_ctl = rng.permutation(y) if control == "shuffle" else rng.integers(0, classes.size, y.size)
    ctl_counts = _counts(y_ctl, classes.size)
    ctl_folds = min(folds, int(ctl_counts[ctl_counts > 0].min()))
    if ctl_folds >= 2 and np.count_nonzero(ctl_counts) >= 2:
        acc_ctl, ok_ctl = _cv_accuracy(X, y_ctl, ctl_folds, C, max_iter, standardize, seed)
    else:
        acc_ctl, ok_ctl = np.array([float(np.max(ctl_counts) / y.size)]), True
    value = float(acc.mean())
    return Estimate(
        measure=fn, value=value, n_samples=int(X.shape[0]),
        stderr=float(acc.std(ddof=1) / np.sqrt(folds)),
        params={"folds": folds, "C": C, "max_iter": max_iter, "standardize": standardize,
                "control": control, "seed": seed},
        diagnostics={"fold_accuracies": acc, "control_accuracy": float(acc_ctl.mean()),
                     "selectivity": value - float(acc_ctl.mean()),
                     "chance": float(counts.max() / y.size), "converged": bool(ok and ok_ctl),
                     "n_classes": int(classes.size)},
    )
