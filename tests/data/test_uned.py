"""The UnED reader on a miniature copy of the distributed layout (all eight domains)."""

import json

import numpy as np
import pytest

from tfembed.data import DatasetNotFoundError, load_domain
from tfembed.data.testing import make_uned_layout
from tfembed.data.uned import UNED_DOMAINS, UNED_SPLITS, read_uned, read_uned_domain


@pytest.fixture(scope="module")
def uned_root(tmp_path_factory):
    return make_uned_layout(tmp_path_factory.mktemp("uned"), corrupt=1, missing=1)


def test_reads_every_domain_and_split(uned_root):
    domains = read_uned(uned_root)
    assert list(domains) == list(UNED_DOMAINS)
    for name, domain in domains.items():
        assert set(domain.splits) == set(UNED_SPLITS[name])
        train = domain.splits["train"]
        assert len(train) == 9 and len(train.skipped) == 2   # one corrupt, one missing file
        reasons = " ".join(why for _, why in train.skipped)
        assert "missing" in reasons or "exist" in reasons or "No such" in reasons
        for split in domain.splits.values():
            assert all(p.endswith(".jpg") for p in split.paths)
    # Index splits hold the second half of each test class, queries the first.
    inshop = domains["inshop"]
    assert len(inshop.splits["test"]) == 3 and len(inshop.splits["index"]) == 6
    assert set(inshop.splits["test"].labels) == set(inshop.splits["index"].labels)


def test_multi_label_entries_keep_every_class(uned_root):
    gldv2 = read_uned_domain(uned_root, "gldv2", splits=["test", "index"])
    test = gldv2.splits["test"]
    assert test.label_sets is not None and test.label_sets.shape == (3, 2)
    assert test.label_sets[0].tolist() == [test.labels[0], test.labels[0] + 1]
    assert (test.label_sets[1:, 1] == -1).all()
    assert gldv2.splits["index"].label_sets is None
    sub = test.subset([0])
    assert sub.label_sets.tolist() == [test.label_sets[0].tolist()]


def test_rp2k_escaped_file_names_are_found(uned_root):
    rp2k = read_uned_domain(uned_root, "rp2k", splits=["test"])
    paths = rp2k.splits["test"].paths
    assert len(paths) == 9 and all("#U4e2d" in p for p in paths)


def test_load_domain_by_name(uned_root):
    cars = load_domain("uned:cars", data_dir=uned_root, verify=False)
    assert cars.name == "cars" and len(cars.splits["train"]) == 11   # unverified: 9 + corrupt + missing
    with pytest.raises(ValueError, match="unknown UnED domain 'birds'"):
        load_domain("uned:birds", data_dir=uned_root)


def test_bad_images_raise_on_request(uned_root):
    with pytest.raises(ValueError, match="bad image of uned:sop/train"):
        read_uned_domain(uned_root, "sop", splits=["train"], on_bad_image="error")


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        read_uned_domain(tmp_path, "met")
    text = str(err.value)
    assert str(tmp_path / "info_files" / "met") in text
    assert "info_files.zip" in text and "met/{MET,test_met,test_noart,test_other}" in text


def test_missing_split_and_unknown_split_are_named(uned_root, tmp_path):
    with pytest.raises(ValueError, match="no split"):
        read_uned_domain(uned_root, "cars", splits=["index"])
    root = make_uned_layout(tmp_path / "u", domains=["food2k"])
    (root / "info_files" / "food2k" / "val.json").unlink()
    with pytest.raises(DatasetNotFoundError, match="val.json"):
        read_uned_domain(root, "food2k", splits=["train", "val"])
    assert set(read_uned_domain(root, "food2k").splits) == {"train", "test"}


@pytest.mark.parametrize("content, match", [
    ("{not json", "invalid JSON"),
    (json.dumps({"path": "a.jpg"}), "JSON list"),
    (json.dumps([{"path": "a.jpg"}]), "entry 0"),
    (json.dumps([{"path": "a.jpg", "class_id": "7"}]), "class_id '7'"),
    (json.dumps([{"path": "a.jpg", "class_id": []}]), "class_id \\[\\]"),
])
def test_malformed_info_files_name_the_file_and_entry(tmp_path, content, match):
    root = make_uned_layout(tmp_path / "u", domains=["cars"])
    (root / "info_files" / "cars" / "val.json").write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        read_uned_domain(root, "cars", splits=["val"], verify=False)
    assert "val.json" in str(err.value)


def test_labels_are_the_info_files_class_ids(uned_root):
    cars = read_uned_domain(uned_root, "cars", verify=False)
    listed = json.loads((uned_root / "info_files" / "cars" / "val.json").read_text())
    np.testing.assert_array_equal(cars.splits["val"].labels, [e["class_id"] for e in listed])
    assert cars.num_classes == 9
