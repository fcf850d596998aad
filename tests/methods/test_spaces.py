"""Search spaces declared next to each hyper-parameter's range (``diffbench tune``), read without torch."""

from __future__ import annotations

import pytest

from methods import catalog
from methods.errors import UserError
from methods.hparams import Choice, IntUniform, LogUniform, Uniform, check_space


@pytest.mark.parametrize("method", catalog.BUILTIN)
def test_every_declared_space_lies_inside_its_range(method):
    spaces = catalog.method_space(method)
    assert spaces, f"{method} declares no search space"
    declared = catalog.method_info(method).hparams
    for name, space in spaces.items():
        check_space(method, declared[name], space)  # raises when an end of the space is out of range
        default = declared[name].default
        low, *_, high = sorted(space.values_at_bounds())
        assert low <= default <= high, f"{method}.{name}: the default {default} is outside {space.describe()}"


def test_dkd_kd_fitnet_and_diffkd_declare_their_search_spaces():
    assert catalog.method_space("dkd") == {
        "alpha": LogUniform(0.25, 4), "beta": LogUniform(1, 16), "temperature": Uniform(1, 8)}
    assert set(catalog.method_space("kd")) == {"temperature", "ce_weight", "kd_weight"}
    assert set(catalog.method_space("fitnet")) == {"feat_weight"}
    assert catalog.method_space("diffkd")["inference_steps"] == IntUniform(1, 10)


@pytest.mark.parametrize(
    ("method", "name", "space", "needle"),
    [
        ("dkd", "beta", Uniform(-1, 4), "beta must be >= 0"),
        ("kd", "temperature", Uniform(0, 4), "temperature must be > 0"),
        ("diffkd", "inference_steps", Uniform(1, 4), "is an integer"),
        ("diffkd", "num_train_timesteps", IntUniform(2, 5000), "num_train_timesteps must be <="),
        ("fitnet", "adapter", Choice("conv", "linear"), "adapter must be one of"),
        ("dkd", "betta", LogUniform(1, 2), "did you mean 'beta'"),
    ],
)
def test_a_space_outside_the_declared_range_is_refused_in_one_line(method, name, space, needle):
    with pytest.raises(UserError, match=needle) as err:
        catalog.check_space(method, name, space)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: LogUniform(0, 1), "must be > 0"),
        (lambda: Uniform(2, 1), "below the upper"),
        (lambda: IntUniform(1, 2.5), "integers"),
        (lambda: Choice(1), "at least two"),
        (lambda: Uniform(float("nan"), 1), "finite"),
    ],
)
def test_malformed_spaces_are_refused(make, needle):
    with pytest.raises(UserError, match=needle):
        make()
