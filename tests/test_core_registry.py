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
