"""The cohort family's method entries (003): structured fields and names."""

import pytest

from tfembed.cohort.config import CohortMethod, cohort, defaults


@pytest.mark.parametrize("name, diversities, rkd", [
    ("independent", (), False), ("md", ("md",), False), ("md+td", ("md", "td"), False),
    ("md+vd", ("md", "vd"), False), ("md+td+vd", ("md", "td", "vd"), False),
    ("md+td+vd->rkd", ("md", "td", "vd"), True), ("independent->rkd", (), True),
])
def test_names_fields_and_round_trip(name, diversities, rkd):
    entry = CohortMethod.of(name)
    assert (entry.diversities, entry.distill_rkd) == (diversities, rkd) and entry.name == name
    assert CohortMethod.of(entry.to_config()) == entry
    assert entry.row_prefix == name.replace("->", "_to_")


def test_structured_entries_are_ordered_and_checked():
    assert CohortMethod(("vd", "md")).name == "md+vd"   # fields, not a string: any order
    assert cohort("md", "td", distill_rkd=True) == {"diversities": ["md", "td"],
                                                    "distill_rkd": True}
    assert [CohortMethod.of(m).name for m in defaults().methods] == ["md+td+vd"]
    with pytest.raises(ValueError, match="includes 'md'"):
        CohortMethod(("td",))
    with pytest.raises(ValueError, match="subset"):
        CohortMethod(("md", "xd"))


@pytest.mark.parametrize("bad", ["td", "md+vd+td", "dm2", "md->rdk", "md+md", ""])
def test_bad_names_fail(bad):
    with pytest.raises(ValueError, match="unknown cohort method"):
        CohortMethod.of(bad)
