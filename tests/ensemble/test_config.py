"""The ensemble family's method entries (002): structured fields and names."""

import pytest

from tfembed.ensemble.config import EnsembleMethod, defaults, ensemble


@pytest.mark.parametrize("name, fields, uses_divergence", [
    ("abe8", ("abe", 8, True), True),
    ("abe8_nodiv", ("abe", 8, False), False),
    ("abe1", ("abe", 1, True), False),          # one learner: nothing to diverge from
    ("mheads4", ("mheads", 4, False), False),
    ("mheads4_div", ("mheads", 4, True), True),
])
def test_names_fields_and_round_trip(name, fields, uses_divergence):
    entry = EnsembleMethod.of(name)
    assert (entry.kind, entry.learners, entry.divergence) == fields
    assert entry.uses_divergence == uses_divergence and entry.name == name
    assert EnsembleMethod.of(entry.to_config()) == entry


def test_divergence_defaults_to_the_kinds():
    assert EnsembleMethod("abe", 4).divergence is True
    assert EnsembleMethod("mheads", 4).divergence is False
    assert ensemble("abe", 4, divergence=False) == {"kind": "abe", "learners": 4,
                                                    "divergence": False}
    assert [EnsembleMethod.of(m).name for m in defaults().methods] == ["abe8"]


@pytest.mark.parametrize("bad", ["abe", "abe0", "abe8_div", "mheads8_nodiv", "abe-8", "resnet",
                                 {"kind": "abe", "learners": 0}, {"kind": "heads", "learners": 2}])
def test_bad_entries_fail(bad):
    with pytest.raises(ValueError):
        EnsembleMethod.of(bad)
