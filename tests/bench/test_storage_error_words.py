"""A storage error is told in the words of what failed (the OS or SQLite), not in those of its wrappers."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from bench.jobs.files import describe_os_error


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as err:  # noqa: BLE001 - the test builds the chain
        return err
    raise AssertionError("unreachable")


def test_os_error_behind_a_wrapper() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/out/jobs/x/checkpoint.pt")
    assert describe_os_error(_wrapped(full, RuntimeError("mlflow failed"))) == (
        "No space left on device (/out/jobs/x/checkpoint.pt)"
    )


def test_sqlite_error_inside_sqlalchemys_wrapper() -> None:
    sa_exc = pytest.importorskip("sqlalchemy.exc")
    orig = sqlite3.OperationalError("attempt to write a readonly database")
    wrapper = sa_exc.OperationalError("INSERT INTO runs ...", {}, orig)
    err = _wrapped(wrapper, RuntimeError("(raised as a result of Query-invoked autoflush; consider using ...)"))
    assert describe_os_error(err) == "SQLite: attempt to write a readonly database"


def test_anything_else_is_its_first_line() -> None:
    assert describe_os_error(ValueError("bad value\nsecond line")) == "bad value"
