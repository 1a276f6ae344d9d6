"""The universal family's method entries: structured fields, documented names, clear errors."""

import pytest

from tfembed.universal.config import (
    UniversalMethod,
    concat_pca,
    defaults,
    distilled,
    fused,
)

NAMES = ["concat_pca", "snd", "rkd", "triplet_naive", "triplet_ds", "triplet_bal",
         "ms_weighted", "triplet_semihard_ds", "snd_dynamic", "rkd_bal"]


@pytest.mark.parametrize("name", NAMES)
def test_names_round_trip_through_structured_entries(name):
    entry = UniversalMethod.of(name)
    assert entry.name == name and str(entry) == name
    stored = entry.to_config()
    assert UniversalMethod.of(stored) == entry and UniversalMethod.of(entry) is entry


def test_fields_rows_and_recipe_helpers():
    assert UniversalMethod.of("triplet_ds") == UniversalMethod("fused", "triplet", "ds")
    assert UniversalMethod.of("snd").row == "universal/snd"
    assert UniversalMethod.of("triplet_ds").row == "baseline/triplet_ds"
    assert UniversalMethod.of("concat_pca").row == "baseline/concat_pca"
    assert distilled("snd") == {"kind": "distill", "loss": "snd"}
    # A student's own sampling policy (UDON's dynamic next to the recipe's DS in one run).
    assert UniversalMethod.of("snd_dynamic") == UniversalMethod("distill", "snd", "dynamic")
    assert UniversalMethod.of("snd_dynamic").row == "universal/snd_dynamic"
    assert distilled("snd", "dynamic") == {"kind": "distill", "loss": "snd", "policy": "dynamic"}
    assert fused("ms", "bal") == {"kind": "fused", "loss": "ms", "policy": "bal"}
    assert concat_pca() == {"kind": "concat_pca"}
    assert [UniversalMethod.of(m).name for m in defaults().methods] == [
        "concat_pca", "triplet_naive", "triplet_ds", "triplet_bal", "rkd", "snd"]


@pytest.mark.parametrize("bad, match", [
    ("snd_naive", "policy in"),        # a student's batches hold one domain (its teacher's)
    ("triplet_mixed", "unknown universal method"),
    ("pca", "unknown universal method"),
    ({"kind": "fused", "loss": "triplet"}, "policy in"),
    ({"kind": "distill", "loss": "kl"}, "loss in"),
    ({"kind": "concat_pca", "loss": "snd"}, "takes no loss"),
    ({"kind": "fused", "los": "triplet", "policy": "ds"}, "unknown field"),
    (3, "expected a dict"),
])
def test_bad_entries_say_what_is_wrong(bad, match):
    if bad == "snd_naive":
        with pytest.raises(ValueError, match=match):
            UniversalMethod("distill", "snd", "naive")
        return
    with pytest.raises(ValueError, match=match):
        UniversalMethod.of(bad)
