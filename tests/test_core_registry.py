import pytest

from repscope import registry


def test_every_registered_name_resolves_and_unknown_suggests():
    names = registry.names()
    for name in names:
        assert registry.get(name).name == name
    with pytest.raises(KeyError, match="Unknown measure 'no_such_measure'"):
        registry.get("no_such_measure")
    if names:
        typo = names[0][:-1] + ("x" if names[0][-1] != "x" else "y")
        with pytest.raises(KeyError, match="Did you mean"):
            registry.get(typo)


def test_register_reads_defaults_and_rejects_bad_metadata():
    @registry.register("_test_measure", family="spread")
    def _m(X, *, k: int = 3, seed: int = 0):
        """A test measure."""
        return X

    spec = registry.get("_test_measure")
    assert spec.defaults == {"k": 3, "seed": 0}
    assert spec.description == "A test measure."
    assert spec.resolve_params({"k": 5}) == {"k": 5, "seed": 0}
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['kk'\] for measure '_test_measure'"):
        spec.resolve_params({"kk": 5})
    with pytest.raises(ValueError, match="Unknown invariance"):
        registry.register("_bad", family="spread", invariances={"shear"})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("_test_measure", family="spread")(lambda X: X)
    registry._REGISTRY.pop("_test_measure")


# ------------------------------------------------------------ one entry per measure -------
import dataclasses  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

SPECS = registry.specs()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_spec_is_complete_and_consistent(spec):
    assert spec.family in registry.FAMILIES
    assert spec.kind in ("single", "pair")
    assert spec.description and spec.fn.__doc__
    assert spec.invariances <= registry.INVARIANCES
    lo, hi = spec.bounds
    assert lo is None or hi is None or lo < hi
    assert isinstance(spec.min_samples, int) and spec.min_samples >= 1
    assert not (spec.symmetric and spec.kind == "single")
    assert not (spec.prepared is not None and spec.kind == "single")
    if spec.accumulator is not None:
        acc = spec.accumulator
        assert acc.measure == spec.name
        assert set(acc.options) <= set(spec.defaults), "state options must be parameters"
        empty = acc(*((3, 2) if spec.kind == "pair" else (3,)))
        assert isinstance(empty, registry.Accumulator) and empty.measure == spec.name
        assert empty.state_key == acc.state_key(spec.defaults)
    if spec.scale_param is not None:
        target = registry.get(spec.scale_param.via or spec.name)
        assert spec.scale_param.param in target.defaults


def test_families_and_report_titles_come_from_the_registry():
    from repscope.report.data import FAMILIES

    assert FAMILIES is registry.FAMILIES
    assert {s.family for s in SPECS} <= set(FAMILIES)


def test_register_validates_every_capability():
    def _m(X, Y):
        """A test pair measure."""

    with pytest.raises(ValueError, match=r"register\('_p'\): a pair measure must declare prepared="):
        registry.register("_p", family="similarity", kind="pair")(_m)
    with pytest.raises(ValueError, match=r"register\('_p'\): unknown family 'simil'"):
        registry.register("_p", family="simil", kind="pair", prepared=None)
    with pytest.raises(ValueError, match=r"register\('_p'\): only pair measures have a prepared"):
        registry.register("_p", family="spread", prepared=registry.Prepared(_m, _m))
    with pytest.raises(ValueError, match=r"register\('_p'\): accumulator must be a Streaming"):
        registry.register("_p", family="spread", accumulator=lambda d: None)
    with pytest.raises(ValueError, match=r"register\('_p'\): unknown field\(s\) \['streamable'\]"):
        registry.register("_p", family="spread", streamable=True)
    with pytest.raises(ValueError, match=r"kind must be 'single' or 'pair'; got 'triple'"):
        registry.register("_p", family="spread", kind="triple")
    assert "_p" not in registry._REGISTRY


def test_measure_modules_are_discovered_by_walking_the_package():
    import importlib
    import pkgutil

    import repscope.measures as pkg

    modules = [m.name for m in pkgutil.walk_packages(pkg.__path__, "repscope.measures.")]
    assert len(modules) > 15
    assert all(name in sys.modules for name in modules)  # every module was imported
    registering = {s.fn.__module__ for s in SPECS}
    assert registering <= set(modules)
    assert importlib.import_module("repscope.measures.similarity.cka").cka_linear is registry.get(
        "cka_linear").fn


PREPARED = [s for s in SPECS if s.prepared is not None]


@pytest.mark.parametrize("spec", PREPARED, ids=[s.name for s in PREPARED])
def test_a_declared_prepared_path_is_used_never_the_slow_one(spec, monkeypatch):
    """Matrices and permutation tests of a measure that declares a prepared path never call
    its plain function (a missing path cannot silently fall back)."""
    from repscope.inference import permutation_test
    from repscope.measures.similarity import similarity_matrix

    def refuse(*args, **kwargs):
        raise AssertionError("the slow path ran")

    monkeypatch.setitem(registry._REGISTRY, spec.name, dataclasses.replace(spec, fn=refuse))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    Y = X @ rng.normal(size=(4, 3)) + rng.normal(size=(30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        M = similarity_matrix({"a": X, "b": Y}, spec.name)
        res = permutation_test(spec.name, X, Y, n_perm=3)
    assert np.isfinite(M.values[0, 1]) and np.isfinite(res.value)


_FRESH = """
import pickle, sys
import repscope._validate, repscope.registry, repscope.stats, repscope.results
assert "torch" not in sys.modules, "a bottom-layer module imported torch"
assert not [m for m in sys.modules if m.startswith("repscope.measures")], "stats imports measures"
states = pickle.loads(sys.stdin.buffer.read())
print(repr([acc.compute().value for acc in states]))
"""


def test_accumulators_compute_in_a_fresh_process():
    """A pickled state computes where no measure module was imported beforehand (the registry
    finds the measure's compute), and the bottom layer imports neither torch nor measures."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(40, 5)), rng.normal(size=(40, 3))
    states = [registry.get("effective_rank").accumulator(5).update(X),
              registry.get("anisotropy").accumulator(5).update(X),
              registry.get("cca_mean").accumulator(5, 3).update(X, Y)]
    out = subprocess.run([sys.executable, "-c", _FRESH], input=pickle.dumps(states),
                         capture_output=True, check=True)
    assert eval(out.stdout.decode()) == [acc.compute().value for acc in states]


def test_moved_names_still_resolve_with_a_deprecation_warning():
    import repscope.similarity_matrix as old_matrix
    import repscope.stats as stats
    from repscope import inference
    from repscope.measures import similarity

    with pytest.warns(DeprecationWarning, match="moved to repscope.inference.permutation_test"):
        assert stats.permutation_test is inference.permutation_test
    with pytest.warns(DeprecationWarning, match="repscope.measures.similarity.similarity_matrix"):
        assert old_matrix.similarity_matrix is similarity.similarity_matrix
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        stats.nothing  # noqa: B018
