"""methods.catalog reads the built-in methods' declarations from their source, without importing torch: the
reading must equal what ``inspect`` sees on the imported classes (names, defaults, types, ranges)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from methods import catalog, hparams
from methods.base import METHODS


@pytest.mark.parametrize("name", catalog.BUILTIN)
def test_the_source_reading_equals_the_imported_class(name):
    cls = METHODS.get(name)
    live = hparams.from_signature(cls.__init__)
    read = catalog.method_info(name)
    assert read.hparams == live
    assert list(read.hparams) == list(live)  # signature order
    assert read.consumes == tuple(cls.consumes)
    assert read.summary == cls.__doc__.strip().splitlines()[0]
    assert read.module == cls.__module__


def test_declared_ranges_and_literals_are_read():
    dkd, diffkd, fitnet = (catalog.method_info(n).hparams for n in ("dkd", "diffkd", "fitnet"))
    assert dkd["beta"].ranges == (hparams.Range(ge=0),)
    from methods.diffkd import TIME_EMBEDDING_ROWS

    assert diffkd["num_train_timesteps"].ranges == (hparams.Range(ge=2, le=TIME_EMBEDDING_ROWS),)
    with pytest.raises(catalog.UserError, match="must be one of none, pkd"):
        catalog.check_hparams("fitnet", {"feat_norm": "l2"})
    assert fitnet["feat_norm"].default == "none"


def test_a_misspelt_name_gets_a_suggestion():
    with pytest.raises(catalog.UserError, match=r"unknown method 'difkd'; did you mean 'diffkd'"):
        catalog.method_info("difkd")
    with pytest.raises(catalog.UserError, match=r"did you mean 'temperature'"):
        catalog.check_hparams("kd", {"temprature": 2})


def test_the_catalogue_does_not_import_torch():
    code = ("import sys; from methods import catalog; [catalog.default_hparams(n) for n in catalog.method_names()]; "
            "catalog.check_hparams('dkd', {'beta': 2.0}); sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_signature_the_reader_cannot_evaluate_is_refused_with_its_place(tmp_path):
    src = tmp_path / "odd.py"
    src.write_text(
        "from methods.base import Method, register\n"
        "@register\nclass Odd(Method):\n    '''Odd.'''\n    name = 'odd'\n"
        "    def __init__(self, student_taps, teacher_taps, w: float = some_function()):\n        pass\n"
    )
    with pytest.raises(RuntimeError, match=r"odd.py: odd.w: cannot read 'some_function\(\)'"):
        catalog.read_source(src, "odd")
