"""core.params: parameter constraints declared once per estimator, checked by validate and read by the front
ends; Projector and PACE as scikit-learn estimators (get_params, set_params, clone)."""
from __future__ import annotations

import inspect
from numbers import Integral, Real

import numpy as np
import pytest
from sklearn.base import clone

from core.concepts import PACE
from core.concepts.explain import EXPLAIN_CONSTRAINTS, default_estimator
from core.params import Interval, Options, bounds, describe, describe_value, is_valid, options, validate
from core.projection import Projector

C = {"n": [Interval(Integral, 2, 200)], "x": [Interval(Real, 0, 1, closed="right")],
     "a": [Interval(Real, 0, None, closed="neither"), "array-like"], "m": [Options(("umap", "pca"))],
     "seed": [Interval(Integral, 0, None), None], "flag": [bool], "d": [Options((2, 3))]}


@pytest.mark.parametrize("name,value,ok", [
    ("n", 2, True), ("n", 200, True), ("n", 201, False), ("n", 1, False), ("n", np.int64(15), True),
    ("n", 15.0, False), ("n", True, False),            # a bool or a float is not an integer
    ("x", 0.0, False), ("x", 1, True), ("x", 0.5, True), ("x", float("nan"), False),
    ("a", 1e-9, True), ("a", 0.0, False), ("a", float("inf"), False), ("a", [0.1, 0.2], True), ("a", "1", False),
    ("m", "pca", True), ("m", "PCA", False), ("m", None, False),
    ("seed", None, True), ("seed", -1, False), ("flag", np.bool_(True), True), ("flag", 1, False),
    ("d", 3, True), ("d", True, False), ("d", 4, False),
])
def test_constraints_accept_exactly_what_they_declare(name, value, ok):
    assert is_valid(value, C, name) is ok


def test_validate_names_the_owner_the_parameter_the_allowed_values_and_the_value():
    with pytest.raises(ValueError, match=r"^Projector: n must be an integer in \[2, 200\]; got 1$"):
        validate({"n": 1}, C, "Projector")
    with pytest.raises(ValueError, match=r"^PACE: a must be a finite number > 0 or an array; got -1\.0$"):
        validate({"a": -1.0}, C, "PACE")
    with pytest.raises(ValueError, match=r"m must be one of 'umap', 'pca'; got 'tsne'"):
        validate({"m": "tsne"}, C, "f")
    with pytest.raises(ValueError, match="unknown parameter 'zzz'"):
        validate({"zzz": 1}, C, "f")
    validate({"n": 5, "x": 1.0, "seed": None, "flag": False}, C, "f")  # no error


def test_bounds_options_and_help_for_front_ends():
    assert bounds(C, "n") == (2, 200)
    assert bounds(C, "x", step=0.01) == (0.01, 1.0)      # an open end moves to the widget's grid
    assert bounds(C, "a", step=0.05) == (0.05, None)
    assert bounds(C, "seed") == (0, None)
    assert options(C, "m") == ("umap", "pca")
    assert describe_value(C, "seed") == "an integer >= 0 or None"
    assert describe(C, "a", default=0.1) == "a finite number > 0; default 0.1"  # one typed value: no array
    with pytest.raises(ValueError, match="not declared as a number"):
        bounds(C, "m")
    with pytest.raises(KeyError, match="no constraints declared for 'nope'"):
        bounds(C, "nope")


def test_a_bad_interval_is_refused():
    with pytest.raises(TypeError):
        Interval(str, 0, 1)
    with pytest.raises(ValueError, match="closed"):
        Interval(int, 0, 1, closed="open")
    with pytest.raises(ValueError, match="must not exceed"):
        Interval(int, 2, 1)


@pytest.mark.parametrize("cls", [Projector, PACE])
def test_every_parameter_of_the_estimators_is_declared(cls):
    init = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(init) == sorted(cls.parameter_constraints)
    assert sorted(cls().get_params()) == sorted(init)
    validate(cls().get_params(), cls.parameter_constraints, cls.__name__)  # the defaults are allowed


def test_projector_clone_get_params_and_set_params_round_trip():
    p = Projector("pca", n_components=3, n_neighbors=30, min_dist=0.25, gap_corrected=True, random_state=7)
    q = clone(p)
    assert q is not p and q.get_params() == p.get_params()
    assert repr(q) == repr(p) and "n_neighbors=30" in repr(p) and "method='pca'" in repr(p)
    assert p.set_params(n_neighbors=12) is p and p.n_neighbors == 12 and q.n_neighbors == 30
    with pytest.raises(ValueError, match="Invalid parameter 'k'"):
        p.set_params(k=3)
    # a clone of a fitted projector is unfitted and fits to the same map
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    fitted = Projector("pca").fit(X)
    again = clone(fitted)
    assert not hasattr(again, "embedding_")
    np.testing.assert_array_equal(again.fit(X).embedding_, fitted.embedding_)


def test_pace_clone_keeps_an_array_prior_and_set_params_is_checked_at_fit():
    p = PACE(3, alpha=np.array([0.1, 0.2, 0.3]), covariance="diag", random_state=4)
    q = clone(p)
    assert q.get_params()["covariance"] == "diag" and q.random_state == 4
    np.testing.assert_array_equal(q.alpha, p.alpha)
    assert q.alpha is not p.alpha
    X = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    q.set_params(shrinkage=1.5)  # set_params stores; fit checks every parameter once
    with pytest.raises(ValueError, match=r"^PACE: shrinkage must be a finite number in \[0, 1\]; got 1\.5$"):
        q.fit(X)
    with pytest.raises(ValueError, match=r"^PACE: random_state must be an integer in \[0, 4294967295\] or None"):
        PACE(2, random_state=-3).fit(X)


def test_bad_projector_parameter_message_names_it_its_range_and_value():
    with pytest.raises(ValueError, match=r"^Projector: n_neighbors must be an integer in \[2, 200\]; got 500$"):
        Projector(n_neighbors=500).fit(np.ones((10, 4), np.float32))
    with pytest.raises(ValueError, match=r"^Projector: init must be one of 'pca', 'spectral', 'random'; got 'tsne'$"):
        Projector(init="tsne").fit(np.ones((10, 4), np.float32))


def test_the_map_view_and_the_concepts_defaults_read_the_declarations():
    from core.mapview import PARAMETERS

    Pc = Projector.parameter_constraints
    assert (PARAMETERS["n_neighbors"].low, PARAMETERS["n_neighbors"].high) == bounds(Pc, "n_neighbors")
    assert (PARAMETERS["min_dist"].low, PARAMETERS["min_dist"].high) == bounds(Pc, "min_dist")
    assert PARAMETERS["method"].choices == options(Pc, "method")
    assert PARAMETERS["dim"].choices == options(Pc, "n_components")
    assert PARAMETERS["n_neighbors"].default == Projector().n_neighbors
    est = default_estimator(n_concepts=5)
    assert (est.n_concepts, est.covariance, est.n_init) == (5, "isotropic", 4)
    assert bounds(EXPLAIN_CONSTRAINTS, "attention_smoothing") == (0.0, None)


def test_cli_options_are_checked_against_the_declared_constraints(tmp_path, capsys):
    from core.cli import main

    args = ["concepts", str(tmp_path / "missing"), "--model", "demo", "--json"]
    assert main([*args, "--k", "0"]) == 2
    assert "--k must be an integer in [1, 200]; got 0" in capsys.readouterr().err
    assert main([*args, "--alpha", "0"]) == 2
    assert "--alpha must be a finite number > 0; got 0.0" in capsys.readouterr().err
    assert main([*args, "--seed", "-1"]) == 2
    assert "--seed must be an integer in [0, 4294967295]; got -1" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "missing"), "--model", "demo", "--text", "x", "--k", "0"]) == 2
    assert "--k must be an integer >= 1; got 0" in capsys.readouterr().err
    quality = ["quality", str(tmp_path / "missing"), "--model", "demo"]
    assert main([*quality, "--k", "0"]) == 2
    assert "--k must be an integer >= 1; got 0" in capsys.readouterr().err
    assert main([*quality, "--sample", "9"]) == 2
    assert "--sample must be an integer >= 10; got 9" in capsys.readouterr().err


def test_quality_analysis_checks_its_declared_parameters_before_reading_anything():
    from core.quality import QUALITY_CONSTRAINTS, quality_analysis

    assert describe(QUALITY_CONSTRAINTS, "k", default=10) == "an integer >= 1; default 10"
    for bad in ({"k": 0}, {"sample": 5}, {"hub_sigma": 0.0}, {"k": 2.5}):
        with pytest.raises(ValueError, match=f"quality_analysis.*{next(iter(bad))}"):
            quality_analysis(None, "demo", **bad)  # no workspace is read: the check comes first


def test_a_command_configures_only_its_own_options(tmp_path):
    """Reading the declarations of `concepts` imports scikit-learn (PACE is its estimator); `jointscope info`
    and `jointscope map`'s options do not wait for that (only the subcommand asked for gets its options, and
    the map's settings are declared outside its estimator)."""
    import subprocess
    import sys

    code = ("import sys, core.cli\n"
            f"assert core.cli.main(['info', {str(tmp_path / 'none')!r}]) == 1\n"
            "assert core.cli.main(['--version']) == 0\n"
            "assert 'sklearn' not in sys.modules, 'scikit-learn imported for info'\n"
            "assert core.cli.main(['map', '--help']) == 0 and 'sklearn' not in sys.modules, 'map settings'\n"
            "assert core.cli.main(['concepts', '--help']) == 0 and 'sklearn' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)


def test_reading_a_cached_map_and_its_settings_does_not_import_scikit_learn(tmp_path):
    """The map's settings and cached maps are read without the estimator, whose module imports scikit-learn
    (seconds): opening the Map on a saved map must not wait for it. The declared defaults are the estimator's."""
    import subprocess
    import sys

    code = ("import sys, core.projection, core.maps, core.mapview, core.workspace\n"
            "from core.mapview import MapParams\n"
            "MapParams(method='umap', n_neighbors=30)\n"
            "assert 'sklearn' not in sys.modules, 'scikit-learn imported'\n"
            "from core.projection import PROJECTOR_DEFAULTS, Projector\n"
            "assert Projector().get_params() == PROJECTOR_DEFAULTS and 'sklearn' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)

