"""Published numbers beside ours, only where the recipes match.

A paper's number belongs beside our runs only when they were trained with the paper's recipe: a
2-epoch smoke run next to a 240-epoch published figure invites exactly the wrong conclusion. The
reference file names each number's recipe preset (``recipe_preset``); job runs carry the preset their
recipe equals (tag ``recipe_preset``). ``match`` (the default) hides the others with a note saying why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import provenance
from bench.report.load import REFERENCE_RECIPE
from bench.report.schema import PAIR_KEYS, PRIMARY_METRIC, VANILLA


def _reference_lookup(reference: pd.DataFrame | None) -> pd.DataFrame:
    """Reference rows that can match a pair: named teacher and student, the task's primary metric.

    Names are compared case-insensitively because the model zoos spell them differently
    (``ResNet50`` in RepDistiller, ``resnet50`` in torchvision).
    """
    cols = [*PAIR_KEYS, "method", "published", "source", "published_recipe"]
    if reference is None or reference.empty:
        return pd.DataFrame(columns=[*cols, "metric"])
    ref = reference.copy()
    if REFERENCE_RECIPE not in ref:
        ref[REFERENCE_RECIPE] = ""
    for c in (*PAIR_KEYS, "method", "metric", REFERENCE_RECIPE):
        ref[c] = ref[c].fillna("").astype(str).str.strip()
    ref = ref[(ref["teacher"] != "?") & (ref["student"] != "?")]
    ref = ref[ref["metric"] == ref["task"].map(PRIMARY_METRIC)]
    for c in (*PAIR_KEYS, "method"):
        ref[c] = ref[c].str.lower()
    ref = ref.rename(columns={"value": "published", REFERENCE_RECIPE: "published_recipe"})
    ref["published"] = pd.to_numeric(ref["published"], errors="coerce")
    ref["source"] = ref["source"].fillna("") if "source" in ref else ""
    return ref.drop_duplicates([*PAIR_KEYS, "method"], keep="first")[cols]


def attach_published(tidy: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    ref = _reference_lookup(reference)
    keys = [*PAIR_KEYS, "base_method"]
    low = tidy[keys].apply(lambda s: s.str.lower())
    exact = low.merge(
        ref.rename(columns={"method": "base_method"}), on=keys, how="left", validate="many_to_one"
    ).set_index(tidy.index)
    tidy["published"] = exact["published"]
    tidy["source"] = exact["source"].fillna("")
    tidy["published_recipe"] = exact["published_recipe"].fillna("")
    # A student trained only without a teacher: the paper's vanilla number, when all its pairs agree.
    van = ref[ref["method"] == VANILLA].groupby(["task", "dataset", "student"])
    agree = van.agg(
        published_any=("published", lambda v: v.iloc[0] if v.nunique() == 1 else np.nan),
        recipe_any=("published_recipe", lambda v: v.iloc[0] if v.nunique() == 1 else ""),
        source_any=("source", "first"),
    )
    mask = (tidy["teacher"] == "") & (tidy["base_method"] == VANILLA)
    if mask.any() and len(agree):
        j = low[mask].merge(agree.reset_index(), on=["task", "dataset", "student"], how="left")
        tidy.loc[mask, "published"] = j["published_any"].to_numpy()
        tidy.loc[mask, "published_recipe"] = j["recipe_any"].fillna("").to_numpy()
        tidy.loc[mask, "source"] = j["source_any"].where(j["published_any"].notna(), "").fillna("").to_numpy()
    return tidy


def published_policy(tidy: pd.DataFrame, mode: str) -> list[str]:
    """Hide published numbers beside runs of another recipe preset (``match``); return the notes."""
    has = tidy["published"].notna()
    if not has.any():
        return []
    if mode == "never":
        tidy.loc[has, ["published", "source"]] = [np.nan, ""]
        return ["Published numbers hidden (--published never)."]
    differs = has & ((tidy["recipe_preset"] != tidy["published_recipe"]) | (tidy["published_recipe"] == ""))
    if not differs.any():
        return []
    notes = []
    for (ours, theirs), grp in tidy[differs].groupby(["recipe_preset", "published_recipe"], sort=True):
        if theirs == "":
            why = "the reference file does not name the recipe preset of these published numbers"
        elif ours == provenance.UNKNOWN:
            why = f"these runs do not record their recipe preset (older diffbench); the papers used {theirs!r}"
        elif "," in ours:
            why = f"these runs mix recipes {ours.replace(',', ', ')}; the papers used {theirs!r}"
        else:
            why = f"these runs use recipe {ours!r}, the papers used {theirs!r}"
        n = len(grp)
        if mode == "match":
            notes.append(f"Published numbers hidden ({n} cell(s)): {why} (--published always shows them).")
        else:
            notes.append(f"Published numbers shown although the recipes differ ({n} cell(s)): {why}.")
    if mode == "match":
        tidy.loc[differs, ["published", "source"]] = [np.nan, ""]
    return notes
