"""The distill family's method entries (001/004 students): structured fields and names."""

import pytest

from tfembed.distill.config import DistillMethod, defaults, student

NAMES = ["ml", "ml+rel", "ml+abs+at", "ml+rel+hint", "ml+kd+darkrank_hard", "ml@labelled",
         "ml+rel@semi", "rel@unlabelled"]


@pytest.mark.parametrize("name", NAMES)
def test_names_round_trip_through_structured_entries(name):
    entry = DistillMethod.of(name)
    assert entry.name == name
    assert DistillMethod.of(entry.to_config()) == entry


def test_fields_and_recipe_helper():
    entry = DistillMethod.of("ml+rel+at@semi")
    assert entry.terms == ("ml", "rel", "at") and entry.data == "semi"
    assert entry.embedding_term == "rel" and DistillMethod.of("ml+at").embedding_term is None
    assert student("ml", "rel", data="semi") == {"terms": ["ml", "rel"], "data": "semi"}
    assert student("ml") == {"terms": ["ml"]}
    assert DistillMethod.of({"terms": "ml"}).terms == ("ml",)
    assert [DistillMethod.of(m).name for m in defaults().methods] == ["ml", "ml+abs", "ml+rel"]


@pytest.mark.parametrize("bad, match", [
    ("ml+rell", "terms come from"),
    ("ml+abs+rel", "more than one"),
    ("ml@unlabelled", "no labels"),
    ("ml@some", "data from"),
    ("", "cannot parse"),
    ({"terms": ["ml"], "dataset": "semi"}, "unknown field"),
])
def test_bad_entries_say_what_is_wrong(bad, match):
    with pytest.raises(ValueError, match=match):
        DistillMethod.of(bad)
