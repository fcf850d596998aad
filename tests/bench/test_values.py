"""Numbers are numbers: one parser for flags, ``--set`` and YAML (what ``float()`` reads), booleans and lists refused
where a number is expected, ranges checked before anything starts; paths and stores refused in one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.jobs.grid import seeds_of
from bench.jobs.overrides import parse_sets
from bench.jobs.values import SEED_MAX, number, scalar
from bench.perf import bad_inputs
from methods.errors import UserError


@pytest.mark.parametrize(
    ("value", "kw", "expected"),
    [("1e-4", {}, 1e-4), ("1e30", {}, 1e30), ("1.0e30", {}, 1e30), (" 3 ", {}, 3), (2, {}, 2), (0.5, {}, 0.5),
     ("1e3", {"integer": True}, 1000), (3.0, {"integer": True}, 3), ("4294967296", {"integer": True}, 2**32)],
)  # fmt: skip
def test_what_float_reads_is_a_number(value, kw, expected):
    assert number(value, "x", **kw) == expected


@pytest.mark.parametrize(
    ("value", "kw", "needle"),
    [(True, {}, "got true"), ([3], {}, "got a list [3]"), ({"a": 1}, {}, "got a mapping"), (None, {}, "got null"),
     ("abc", {}, "must be a number, got 'abc'"), ("2.5", {"integer": True}, "must be an integer"),
     ("nan", {}, "finite"), (-1, {"integer": True, "low": 0}, "integer >= 0"),
     (2**32, {"integer": True, "low": 0, "high": SEED_MAX}, "within 0..4294967295")],
)  # fmt: skip
def test_booleans_lists_and_out_of_range_values_are_refused(value, kw, needle):
    with pytest.raises(UserError, match="^x must be") as err:
        number(value, "x", **kw)
    assert needle in str(err.value)


def test_set_values_that_float_reads_become_numbers_and_the_rest_stays():
    sets = parse_sets(["recipe.weight_decay=1e-4", "recipe.lr=1.0e30", "recipe.schedule=cosine", "dkd.beta=6",
                       "recipe.milestones=[1e2, 150]", "diffkd.use_ae=true"])  # fmt: skip
    assert sets["recipe"] == {"weight_decay": 1e-4, "lr": 1e30, "schedule": "cosine", "milestones": [100, 150]}
    assert sets["dkd"] == {"beta": 6} and sets["diffkd"] == {"use_ae": True}
    assert scalar("1_000") == 1000 and scalar(True) is True and scalar(None) is None


def test_seeds_stay_within_what_numpy_takes():
    assert seeds_of("3") == [0, 1, 2] and seeds_of("0,4294967295") == [0, SEED_MAX] and seeds_of((5, 5, 1)) == [5, 1]
    for bad, needle in (("0,4294967296", "out of range"), ("4294967296", "at most"), ("1.5,2", "comma list"),
                        ("0", "at least 1"), ("-1,2", ">= 0")):  # fmt: skip
        with pytest.raises(UserError, match=needle):
            seeds_of(bad)


@pytest.mark.parametrize(("name", "make"), bad_inputs.CASES[96:], ids=[n for n, _ in bad_inputs.CASES[96:]])
def test_each_bad_value_is_one_line_within_seconds(tmp_path, name, make):
    started = time.monotonic()
    ok, line = bad_inputs.check(make(tmp_path), tmp_path / "out")
    assert ok, line
    assert time.monotonic() - started < 60, name  # the sqlite URI under /proc took 121 s of MLflow retries


@pytest.mark.parametrize(
    ("name", "make", "field", "expected"), bad_inputs.ACCEPTED, ids=[c[0] for c in bad_inputs.ACCEPTED]
)
def test_each_number_is_read_as_that_number(tmp_path, name, make, field, expected):
    ok, line = bad_inputs.check_accepted(make(tmp_path), field, expected)
    assert ok, line


def test_the_matrix_keeps_its_earlier_cases():
    assert len(bad_inputs.CASES) >= 96 + 15
    assert len({n for n, _ in bad_inputs.CASES}) == len(bad_inputs.CASES)


def test_an_over_long_or_empty_output_is_refused_by_run_options_too():
    from bench.execute.options import RunOptions

    with pytest.raises(UserError, match="names are at most 255"):
        RunOptions(output=Path("/tmp") / ("x" * 300))
