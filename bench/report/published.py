"""Published numbers beside ours, only where the setting matches: recipe preset, starting weights and precision.

A paper's number belongs beside our runs only when they were trained as the paper trained: a 2-epoch smoke run
next to a 240-epoch published figure, a student trained from random weights next to one fine-tuned from an
ImageNet-pretrained backbone, or a bf16 run next to an fp32 figure invites exactly the wrong conclusion. The
reference file names each number's setting (``recipe_preset``, ``student_init``, ``precision``); job runs carry
theirs (tag ``recipe_preset``, params ``student_init`` and ``recipe.precision``). ``match`` (the default) hides
the others with one note per kind of difference; ``always`` shows them with the same notes as caveats. A setting
the reference leaves empty is not stated by the source: it is not checked, and a note says so.

Every cell that shows a published number also gets a verdict (:func:`add_verdicts`): does the paper's number lie
in the 95 % t-interval of our seeds' mean?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report import provenance
from bench.report.load import REFERENCE_INIT, REFERENCE_PRECISION, REFERENCE_RECIPE
from bench.report.schema import PAIR_KEYS, PRIMARY_METRIC, VANILLA
from bench.report.stats import mean_interval, verdicts

#: Reference columns → the tidy columns holding the paper's setting.
_SETTING_COLUMNS = {
    REFERENCE_RECIPE: "published_recipe",
    REFERENCE_INIT: "published_init",
    REFERENCE_PRECISION: "published_precision",
}


def _reference_lookup(reference: pd.DataFrame | None) -> pd.DataFrame:
    """Reference rows that can match a pair: named teacher and student, the task's primary metric.

    Names are compared case-insensitively because the model zoos spell them differently
    (``ResNet50`` in RepDistiller, ``resnet50`` in torchvision).
    """
    cols = [*PAIR_KEYS, "method", "published", "source", *_SETTING_COLUMNS.values()]
    if reference is None or reference.empty:
        return pd.DataFrame(columns=[*cols, "metric"])
    ref = reference.copy()
    for c in _SETTING_COLUMNS:
        if c not in ref:
            ref[c] = ""
    for c in (*PAIR_KEYS, "method", "metric", *_SETTING_COLUMNS):
        ref[c] = ref[c].fillna("").astype(str).str.strip()
    ref = ref[(ref["teacher"] != "?") & (ref["student"] != "?")]
    ref = ref[ref["metric"] == ref["task"].map(PRIMARY_METRIC)]
    for c in (*PAIR_KEYS, "method", REFERENCE_INIT, REFERENCE_PRECISION):
        ref[c] = ref[c].str.lower()
    ref = ref.rename(columns={"value": "published", **_SETTING_COLUMNS})
    ref["published"] = pd.to_numeric(ref["published"], errors="coerce")
    ref["source"] = ref["source"].fillna("") if "source" in ref else ""
    # One number per pair, method and recipe: a pair may carry one number per codebase that trained it
    # (mdistiller's and DIST's MobileNet-V1 baselines differ), told apart by the recipe they name.
    return ref.drop_duplicates([*PAIR_KEYS, "method", "published_recipe"], keep="first")[cols]


def _closest(candidates: pd.DataFrame, row_key: str, ours: str) -> pd.DataFrame:
    """Per ``row_key``, the candidate whose recipe is ours, else the first one the reference lists."""
    fit = candidates["published_recipe"].eq(candidates[ours]).astype(int)
    order = candidates.assign(_fit=fit, _order=np.arange(len(candidates)))
    best = order.sort_values([row_key, "_fit", "_order"], ascending=[True, False, True], kind="stable")
    return best.drop_duplicates(row_key, keep="first").set_index(row_key)


def _agreed(values: pd.Series) -> str:
    return values.iloc[0] if values.nunique() == 1 else ""


def attach_published(tidy: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    ref = _reference_lookup(reference)
    keys = [*PAIR_KEYS, "base_method"]
    settings = list(_SETTING_COLUMNS.values())
    low = tidy[keys].apply(lambda s: s.str.lower())
    low["_row"] = np.arange(len(tidy))
    low["_ours"] = tidy["recipe_preset"].fillna("").astype(str).to_numpy() if "recipe_preset" in tidy else ""
    cand = low.merge(ref.rename(columns={"method": "base_method"}), on=keys, how="left")
    exact = _closest(cand, "_row", "_ours").reindex(np.arange(len(tidy))).set_index(tidy.index)
    tidy["published"] = pd.to_numeric(exact["published"], errors="coerce")  # a float column, also without a reference
    tidy["source"] = exact["source"].fillna("")
    for c in settings:
        tidy[c] = exact[c].fillna("")
    # A student trained only without a teacher: the paper's vanilla number, when all its pairs agree. Where
    # several codebases publish the student's baseline, only those trained with our recipe count, when any are.
    van = ref[ref["method"] == VANILLA]
    mask = (tidy["teacher"] == "") & (tidy["base_method"] == VANILLA)
    if mask.any() and len(van):
        student = ["task", "dataset", "student"]
        cand = low[mask].merge(van.drop(columns=["teacher", "method"]), on=student, how="inner")
        ours_recipe = cand["published_recipe"] == cand["_ours"]
        has_ours = ours_recipe.groupby(cand["_row"]).transform("any")
        cand = cand[ours_recipe | ~has_ours]
        agree = cand.groupby("_row").agg(
            published_any=("published", lambda v: v.iloc[0] if v.nunique() == 1 else np.nan),
            source_any=("source", "first"),
            **{f"{c}_any": (c, _agreed) for c in settings},
        )
        j = agree.reindex(low.loc[mask, "_row"].to_numpy())
        tidy.loc[mask, "published"] = j["published_any"].to_numpy()
        for c in settings:
            tidy.loc[mask, c] = j[f"{c}_any"].fillna("").to_numpy()
        tidy.loc[mask, "source"] = j["source_any"].where(j["published_any"].notna(), "").fillna("").to_numpy()
    # Published numbers are of the primary metric: a table on another one (--metric excess_nll) shows none.
    other = tidy["metric"] != tidy["task"].map(PRIMARY_METRIC)
    if other.any():
        tidy.loc[other, "published"] = np.nan
        tidy.loc[other, ["source", *settings]] = ""
    return tidy


@dataclass(frozen=True)
class _Criterion:
    """One part of the setting a published number is matched on."""

    ours: str  # the tidy column of our cell's value(s) (comma-joined when the runs mix values)
    theirs: str  # the tidy column of the paper's
    differ: str  # "... although the <differ> differ"
    why: Callable[[str, str], str]
    unstated_hides: bool  # a number whose reference row leaves this empty: hidden (True) or shown unchecked


def _recipe_why(ours: str, theirs: str) -> str:
    if theirs == "":
        return "the reference file does not name the recipe preset of these published numbers"
    if ours == provenance.UNKNOWN:
        return f"these runs do not record their recipe preset (older diffbench); the papers used {theirs!r}"
    if "," in ours:
        return f"these runs mix recipes {ours.replace(',', ', ')}; the papers used {theirs!r}"
    return f"these runs use recipe {ours!r}, the papers used {theirs!r}"


def _init_why(ours: str, theirs: str) -> str:
    if "," in ours:
        return f"these runs mix {ours.replace(',', ' and ')} starting weights, the paper's start from {theirs} ones"
    return f"these runs start from {ours} weights, the paper's from {theirs} ones"


def _precision_why(ours: str, theirs: str) -> str:
    if "," in ours:
        return f"these runs mix precisions {ours.replace(',', ', ')}, the paper ran {theirs}"
    return f"these runs ran {ours}, the paper {theirs}"


_CRITERIA = (
    _Criterion("recipe_preset", "published_recipe", "recipes", _recipe_why, unstated_hides=True),
    _Criterion("student_init", "published_init", "starting weights", _init_why, unstated_hides=False),
    _Criterion("precision", "published_precision", "precisions", _precision_why, unstated_hides=False),
)
#: What a reference row that leaves a criterion empty does not state (the note under the table).
_UNSTATED = {
    "published_init": ("the starting weights", "whether the paper's models started from pretrained or random weights"),
    "published_precision": ("the precision", "the precision the paper trained in"),
}


def published_policy(tidy: pd.DataFrame, mode: str) -> list[str]:
    """Hide published numbers beside runs of another setting (``match``); return the notes.

    The setting is the recipe preset, the starting weights (``pretrained`` / ``random``) and the precision. A cell
    whose runs differ from the paper's in any of them shows no published number under ``match``; one note per kind
    of difference names it, and ``always`` prints the same notes as caveats. A starting point or precision the
    reference leaves empty is not checked (a note says the reference does not state it); an empty recipe preset
    hides the number under ``match`` (the recipe is what a number most depends on).
    """
    has = tidy["published"].notna()
    if not has.any():
        return []
    if mode == "never":
        tidy.loc[has, ["published", "source"]] = [np.nan, ""]
        return ["Published numbers hidden (--published never)."]
    notes = []
    hidden = pd.Series(False, index=tidy.index)
    for c in _CRITERIA:
        ours, theirs = tidy[c.ours].astype(str), tidy[c.theirs].astype(str)
        stated = theirs != ""
        differs = has & ((stated & (ours != theirs)) | (~stated & c.unstated_hides))
        hidden |= differs
        for (o, t), grp in tidy[differs].groupby([c.ours, c.theirs], sort=True):
            why = c.why(str(o), str(t))
            if mode == "match":
                notes.append(f"Published numbers hidden ({len(grp)} cell(s)): {why} (--published always shows them).")
            else:
                notes.append(f"Published numbers shown although the {c.differ} differ ({len(grp)} cell(s)): {why}.")
    shown = has & ~hidden if mode == "match" else has
    for col, (what, unstated) in _UNSTATED.items():
        unchecked = shown & (tidy[col].astype(str) == "")
        if unchecked.any():
            notes.append(
                f"Published numbers shown without checking {what} ({int(unchecked.sum())} cell(s)): the reference "
                f"does not state {unstated}."
            )
    if mode == "match":
        tidy.loc[hidden, ["published", "source"]] = [np.nan, ""]
    return notes


def add_verdicts(tidy: pd.DataFrame) -> None:
    """``mean_ci_low/high`` (95 % t-interval of each cell's mean, n ≥ 2) and ``verdict`` (cells with a published
    number: ``reproduced``, ``below``, ``above`` or ``undecided (1 seed)``; see :func:`bench.report.stats.verdicts`)."""
    tidy["mean_ci_low"], tidy["mean_ci_high"] = mean_interval(tidy["mean"], tidy["std"], tidy["n"])
    tidy["verdict"] = verdicts(tidy["mean"], tidy["std"], tidy["n"], tidy["published"])
