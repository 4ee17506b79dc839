"""Label-aware geometry: neural-collapse measures NC1-NC4 and cross-validated linear probes.

Notation (Papyan, Han and Donoho 2020, "Prevalence of neural collapse during the terminal phase
of deep learning training", PNAS): rows ``h_i`` with labels ``y_i`` in ``C`` classes, class means
``mu_c``, global mean ``mu_G = 1/C sum_c mu_c`` (the mean of the class means, as in the paper's
reference code: the centre of the simplex the means collapse to; with balanced classes it is
the mean of all rows, with imbalanced classes the mean of all rows is pulled towards the big
classes and hides collapse), within-class covariance
``Sigma_W = 1/n sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``, between-class covariance
``Sigma_B = 1/C sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` (rank <= C - 1) and classifier weights ``W``
of shape ``(C, d)``. All measures go to 0 at perfect collapse, except the probe (an accuracy).
When all class means coincide (e.g. constant data) NC1-NC4 are undefined: NaN with a
RuntimeWarning.

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


def _centre(X: np.ndarray, codes: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, d) class means and (C, d) class means minus the mean of the class means."""
    M = class_means(X, codes, C)  # (C, d)
    return M, M - M.mean(0)


def _means_coincide(Mc: np.ndarray, X: np.ndarray) -> bool:
    """Whether the centred class means ``Mc`` are zero up to rounding (all class means equal).

    Rounding in a class mean is about ``eps * max|X|`` per coordinate (an offset shared by all
    rows does not cancel); anything below 1e-10 of the RMS within-data spread is no separation.
    """
    spread = float(np.sqrt(np.mean(np.sum((X - X.mean(0)) ** 2, axis=1))))
    tol = 1e-10 * spread + 100 * np.finfo(np.float64).eps * np.sqrt(X.shape[1]) * float(np.abs(X).max())
    return float(np.linalg.norm(Mc, axis=1).max()) <= tol


def _undefined(fn: str, reason: str = "all class means are equal") -> float:
    warnings.warn(f"{fn} is undefined here ({reason}); returning NaN.", RuntimeWarning, stacklevel=3)
    return float("nan")


# ----------------------------------------------------------------------------- NC1
@register("nc1", family="classes", invariances=_INV, bounds=(0.0, None), needs_labels=True,
          higher_is_better=False, min_samples=4)
def nc1(X: ArrayLike, *, labels: ArrayLike) -> Estimate:
    """NC1, within-class variability collapse: ``1/C tr(Sigma_W Sigma_B^+)`` (Papyan et al. 2020).

    ``Sigma_B`` has rank at most ``C - 1`` (its rows are centred on the mean of the class means),
    so its pseudo-inverse is truncated to the top ``min(C - 1, d)`` eigenvalues, as the paper's
    reference code does (``svds(Sb, k=C-1)``), and to the numerically non-zero ones: computed
    from the SVD of the (C, d) centred means, ``tr(Sigma_W Sigma_B^+) = sum_k ||R v_k||^2 /
    (n lambda_k)`` (``R`` the within-class residuals), so rounding-level eigenvalues never enter
    and the value is rotation invariant to rounding. 0 when every row equals its class mean;
    large (about ``(n/C - 1)``-fold the between-class variation) for random labels.
    Diagnostics: ``tr_within``, ``tr_between``, ``between_rank`` (eigenvalues kept),
    ``between_eigenvalues``, class counts. NaN with a warning when all class means coincide.
    """
    X, codes, classes = _prepare(X, labels, "nc1")
    C, (n, d) = classes.size, X.shape
    M, Mc = _centre(X, codes, C)  # (C, d), (C, d)
    R = X - M[codes]  # (n, d) within-class residuals
    tr_w = float(np.sum(R**2) / n)
    _, sv, Vt = np.linalg.svd(Mc, full_matrices=False)  # sv (min(C, d),), Vt (min(C, d), d)
    keep = (np.arange(sv.size) < min(C - 1, d)) & (sv > sv[0] * max(C, d) * np.finfo(float).eps)
    lam = sv[keep] ** 2 / C  # (r,) non-zero eigenvalues of Sigma_B
    if _means_coincide(Mc, X):
        value = _undefined("nc1")
    else:
        proj = R @ Vt[keep].T  # (n, r) residuals along the between-class directions
        value = float(np.sum(np.sum(proj**2, axis=0) / (n * lam)) / C)
    return Estimate(measure="nc1", value=value, n_samples=int(n), params={},
                    diagnostics={"tr_within": tr_w, "tr_between": float(np.sum(sv**2) / C),
                                 "between_rank": int(keep.sum()), "between_eigenvalues": lam,
                                 "class_counts": _counts(codes, C), "n_classes": int(C)})


# ----------------------------------------------------------------------------- NC2
def _centred_means(X: ArrayLike, labels: Any, fn: str) -> tuple[np.ndarray, bool, int]:
    """Class means minus the mean of the class means, whether they coincide, and n."""
    Xn, codes, classes = _prepare(X, labels, fn)
    _, Mc = _centre(Xn, codes, classes.size)  # (C, d)
    return Mc, _means_coincide(Mc, Xn), int(Xn.shape[0])


@register("nc2_equinorm", family="classes", invariances=_INV, bounds=(0.0, None),
          needs_labels=True, higher_is_better=False)
def nc2_equinorm(X: ArrayLike, *, labels: ArrayLike, ddof: int = 0) -> Estimate:
    """NC2 equinorm: ``std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||`` (Papyan et al. 2020).

    Coefficient of variation of the norms of the class means centred on the mean of the class
    means: 0 when all class means are equally far from their centre, as in a simplex
    equiangular tight frame. ``ddof=0`` (default) is the standard deviation over the C
    classes as a population; ``ddof=1`` is the sample standard deviation of the paper's
    reference code (``torch.std``), larger by ``sqrt(C / (C - 1))``.
    """
    fn = "nc2_equinorm"
    M, same, n = _centred_means(X, labels, fn)
    ddof = check_choice(ddof, "ddof", fn, [0, 1])
    norms = np.linalg.norm(M, axis=1)  # (C,)
    value = _undefined(fn) if same else float(norms.std(ddof=ddof) / norms.mean())
    return Estimate(measure=fn, value=value, n_samples=n, params={"ddof": ddof},
                    diagnostics={"mean_norms": norms})


@register("nc2_equiangularity", family="classes", invariances=_INV, bounds=(0.0, None),
          needs_labels=True, higher_is_better=False)
def nc2_equiangularity(X: ArrayLike, *, labels: ArrayLike) -> Estimate:
    """NC2 equiangularity: ``std_{c != c'} cos(mu_c - mu_G, mu_c' - mu_G)`` (Papyan et al. 2020).

    Class means centred on the mean of the class means. 0 when all pairs meet at the same
    angle (always 0 for C = 2, where there is one pair). ``diagnostics["max_angle"]`` is Papyan
    et al.'s maximal-angle measure ``mean_{c != c'} |cos + 1/(C - 1)|``, 0 for a simplex
    equiangular tight frame.
    """
    fn = "nc2_equiangularity"
    M, same, n = _centred_means(X, labels, fn)
    C = M.shape[0]
    norms = np.linalg.norm(M, axis=1)  # (C,)
    if same or np.any(norms == 0):
        reason = "all class means are equal" if same else "a class mean equals the mean of the class means"
        return Estimate(measure=fn, value=_undefined(fn, reason), n_samples=n, params={})
    U = M / norms[:, None]  # (C, d)
    cos = (U @ U.T)[~np.eye(C, dtype=bool)]  # (C (C - 1),)
    return Estimate(measure=fn, value=float(cos.std()), n_samples=n, params={},
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

    ``M`` is the ``(C, d)`` matrix of centred class means ``mu_c - mu_G`` (``mu_G`` the mean of
    the class means) and ``W`` the
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
    _, M = _centre(X, codes, C)  # (C, d)
    nw, nm = np.linalg.norm(W), np.linalg.norm(M)
    if nw == 0 or _means_coincide(M, X):
        value = _undefined("nc3", "zero classifier or equal class means")
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
    mean ``argmin_c ||h - mu_c||`` disagree (Papyan et al. 2020). In ``[0, 1]``; 0 at
    collapse. Without ``weights`` a fitted multinomial logistic regression stands in for the
    classifier (as in :func:`nc3`). ``diagnostics``: the accuracy of both classifiers against
    the labels. NaN with a warning when all class means coincide (e.g. constant data): the
    nearest-class-mean rule then has no decision, and a silent 0 would read as perfect collapse.
    """
    X, codes, classes = _prepare(X, labels, "nc4")
    C = classes.size
    W, b, source = _classifier(X, codes, C, weights, bias, "nc4")
    M, Mc = _centre(X, codes, C)  # (C, d), (C, d)
    pred_w = np.argmax(X @ W.T + b, axis=1)  # (n,)
    Xc = X - M.mean(0)  # (n, d) centred like the means, so a large offset does not cancel
    d2 = (Xc**2).sum(1)[:, None] - 2 * Xc @ Mc.T + (Mc**2).sum(1)[None, :]  # (n, C)
    pred_ncc = np.argmin(d2, axis=1)  # (n,)
    value = _undefined("nc4") if _means_coincide(Mc, X) else float(np.mean(pred_w != pred_ncc))
    return Estimate(
        measure="nc4", value=value, n_samples=int(X.shape[0]),
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
