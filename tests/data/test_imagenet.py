"""Tests of the ImageNet (ILSVRC2012) reader on miniature copies of its layouts."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfembed.data import sources as S
from tfembed.data import testing as T


def _wnid_of_train(path):
    return Path(path).parent.name


def _val_truth(tmp_path, seed, **kwargs):
    """``{val file name: wnid}`` from the folders layout made with the same seed."""
    ref = T.make_imagenet_layout(tmp_path / f"ref_{seed}", val_layout="folders",
                                 rng=np.random.default_rng(seed), **kwargs)
    return {p.name: p.parent.name for p in (ref / "val").glob("*/*.JPEG")}


def _check_imagenet(d, truth, num_classes, train_per_class, val_per_class):
    assert d.name == "imagenet" and d.num_classes == num_classes
    assert set(d.splits) == {"train", "test"}
    train, test = d.splits["train"], d.splits["test"]
    assert len(train) == num_classes * train_per_class and len(test) == num_classes * val_per_class
    wnids = sorted({_wnid_of_train(p) for p in train.paths})
    assert len(wnids) == num_classes
    index = {w: i for i, w in enumerate(wnids)}  # lexicographic wnid order
    for split in (train, test):
        assert split.labels.dtype == np.int64 and split.skipped == []
        for p in split.paths:
            assert os.path.isabs(p) and os.path.isfile(p), p
    assert [index[_wnid_of_train(p)] for p in train.paths] == train.labels.tolist()
    assert [index[truth[Path(p).name]] for p in test.paths] == test.labels.tolist()
    # same classes in train and test (not class-disjoint), every label used
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(num_classes))


@pytest.mark.parametrize("val_layout", ["folders", "loc_csv", "devkit"])
def test_val_layouts_share_sorted_wnid_labels(tmp_path, val_layout):
    truth = _val_truth(tmp_path, 3, num_classes=4)
    root = T.make_imagenet_layout(tmp_path / "ILSVRC2012", num_classes=4, train_per_class=3,
                                  val_per_class=2, val_layout=val_layout,
                                  rng=np.random.default_rng(3))
    created = [p.name for p in (root / "train").iterdir()]
    for where in (root, tmp_path):  # the dataset directory or its parent (known sub-dir name)
        d = S.read_imagenet(where)
        _check_imagenet(d, truth, 4, 3, 2)
    # listing order: sorted wnids, then file names; flat val by file name
    assert [Path(p).name for p in d.train.paths][:3] == [f"{min(created)}_{k}.JPEG" for k in (1, 2, 3)]
    if val_layout != "folders":
        names = [Path(p).name for p in d.splits["test"].paths]
        assert names == sorted(names)


def test_devkit_ids_are_not_the_label_order(tmp_path):
    """The devkit's ILSVRC2012_IDs are in their own order; labels must follow the wnids."""
    root = T.make_imagenet_layout(tmp_path, num_classes=5, val_layout="devkit",
                                  rng=np.random.default_rng(1))
    data = root / "ILSVRC2012_devkit_t12" / "data"
    rows = S._mat_struct_rows(data / "meta.mat", "synsets")
    leaf = {int(r["ILSVRC2012_ID"]): r["WNID"] for r in rows if int(r["ILSVRC2012_ID"]) <= 5}
    assert [leaf[i] for i in sorted(leaf)] != sorted(leaf.values())  # the test is meaningful
    d = S.read_imagenet(root)
    gt = [int(v) for v in (data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()]
    index = {w: i for i, w in enumerate(sorted(leaf.values()))}
    assert d.splits["test"].labels.tolist() == [index[leaf[g]] for g in gt]


def test_kaggle_layout_and_label_files_in_parent(tmp_path):
    truth = _val_truth(tmp_path, 0)
    kaggle = tmp_path / "kaggle"
    T.make_imagenet_layout(kaggle / "ILSVRC" / "Data" / "CLS-LOC", val_layout="loc_csv",
                           rng=np.random.default_rng(0), label_dir=kaggle)
    assert not (kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "LOC_val_solution.csv").exists()
    for where in (kaggle, kaggle / "ILSVRC" / "Data" / "CLS-LOC"):
        _check_imagenet(S.read_imagenet(where), truth, 3, 3, 2)
    # devkit extracted next to the dataset directory (in train/'s grandparent)
    other = tmp_path / "other"
    T.make_imagenet_layout(other / "imagenet", val_layout="devkit", rng=np.random.default_rng(0),
                           label_dir=other / "ILSVRC2012_devkit_t12" / "data")
    _check_imagenet(S.read_imagenet(other), truth, 3, 3, 2)
    # validation/ works as val/
    (other / "imagenet" / "val").rename(other / "imagenet" / "validation")
    _check_imagenet(S.read_imagenet(other / "imagenet"), truth, 3, 3, 2)


def test_image_extensions_and_hidden_files(tmp_path):
    root = T.make_imagenet_layout(tmp_path, num_classes=2, train_per_class=1, val_per_class=1)
    cls = sorted((root / "train").iterdir())[0]
    pixels = T.class_image(0, 9)
    T.write_image(cls / "a.jpg", pixels)
    T.write_image(cls / "b.JPG", pixels)
    T.write_image(cls / "c.jpeg", pixels)
    T.write_image(cls / "d.PNG", pixels)
    T.write_image(cls / "._e.JPEG", pixels)  # macOS companion file
    (cls / "notes.txt").write_text("not an image")
    (root / "train" / "empty_dir").mkdir()
    d = S.read_imagenet(root)
    names = [Path(p).name for p in d.train.paths if Path(p).parent == cls]
    assert names == sorted([f"{cls.name}_1.JPEG", "a.jpg", "b.JPG", "c.jpeg", "d.PNG"])
    assert d.num_classes == 2


def test_missing_val_labels_names_the_files(tmp_path):
    root = T.make_imagenet_layout(tmp_path / "imagenet", val_layout="loc_csv")
    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(S.DatasetNotFoundError) as info:
        S.read_imagenet(tmp_path)
    msg = str(info.value)
    for name in ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt", "meta.mat",
                 "ILSVRC2012_devkit_t12/data"):
        assert name in msg, name
    assert str(root) in info.value.looked_in and str(tmp_path) in info.value.looked_in
    assert "image-net.org" in msg and "To get it" in msg
    # the devkit ground truth without meta.mat is not enough either
    root = T.make_imagenet_layout(tmp_path / "dk", val_layout="devkit")
    (root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(S.DatasetNotFoundError, match="meta.mat"):
        S.read_imagenet(root)


def test_flat_val_image_without_label_is_an_error(tmp_path):
    root = T.make_imagenet_layout(tmp_path, val_layout="loc_csv")
    T.write_image(root / "val" / "ILSVRC2012_val_00000099.JPEG", T.class_image(0, 0))
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000099"):
        S.read_imagenet(root)


def test_missing_dataset_lists_paths(tmp_path):
    where = tmp_path / "nothing_here"
    with pytest.raises(S.DatasetNotFoundError) as info:
        S.read_imagenet(where)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.looked_in[0] == str(where)
    for sub in ("ILSVRC2012", "imagenet", "ILSVRC/Data/CLS-LOC"):
        assert str(where / sub) in info.value.looked_in
    assert "train/<wnid>" in msg and "ILSVRC2012_img_train.tar" in msg and "never downloads" in msg
    with pytest.raises(S.DatasetNotFoundError, match="no root"):
        S.read_imagenet(None)
    # the per-class tars not extracted: say so
    (where / "train").mkdir(parents=True)
    (where / "val").mkdir()
    (where / "train" / "n01440764.tar").write_bytes(b"")
    with pytest.raises(S.DatasetNotFoundError, match="extract each per-class"):
        S.read_imagenet(where)
    # train/ but no val/
    (where / "val").rmdir()
    with pytest.raises(S.DatasetNotFoundError, match="val or validation"):
        S.read_imagenet(where)


def test_load_domain_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    monkeypatch.setattr(S, "_default_cache_dir", lambda name: tmp_path / "no_cache" / name)
    T.make_imagenet_layout(tmp_path / "imagenet", val_layout="devkit")
    d = S.load_domain("imagenet", data_dir=tmp_path)
    assert d.name == "imagenet" and d.num_classes == 3 and len(d.splits["test"]) == 6
    assert "imagenet" in S.available_domains()
    monkeypatch.setenv(S.DATA_DIR_ENV, str(tmp_path))
    assert S.load_domain("imagenet", verify=True).num_classes == 3
    with pytest.raises(S.DatasetNotFoundError) as info:
        S.load_domain("imagenet", data_dir=tmp_path / "empty")
    msg = str(info.value)
    assert str(tmp_path / "empty" / "ILSVRC2012") in msg and "imagenet2012" in msg


def test_verify_skips_and_counts_corrupt_images(tmp_path):
    root = T.make_imagenet_layout(tmp_path, num_classes=2, train_per_class=3, val_per_class=1,
                                  corrupt=1, quirks=True)
    cls = sorted((root / "train").iterdir(), key=lambda p: p.name)
    first = [p for p in cls if (p / f"{p.name}_corrupt_0.JPEG").exists()][0]
    with Image.open(first / f"{first.name}_1.JPEG") as im:  # the ILSVRC2012 oddities
        assert (im.format, im.mode) == ("JPEG", "CMYK")
    with Image.open(first / f"{first.name}_2.JPEG") as im:
        assert im.format == "PNG"
    d = S.read_imagenet(root)  # verify=False: listed as is
    assert len(d.train) == 7 and d.train.skipped == []
    d = S.read_imagenet(root, verify=True)
    assert len(d.train) == 6 and len(d.splits["test"]) == 2
    assert [Path(p).name for p, _ in d.train.skipped] == [f"{first.name}_corrupt_0.JPEG"]
    assert d.splits["test"].skipped == []
    assert not any("corrupt" in p for p in d.train.paths)
    with pytest.raises(ValueError, match="corrupt_0"):
        S.read_imagenet(root, verify=True, on_bad_image="error")
    with pytest.raises(ValueError, match="on_bad_image"):
        S.read_imagenet(root, on_bad_image="ignore")


def test_training_batches_weighted_with_a_second_domain(tmp_path):
    from tfembed.data.pipeline import training_batches
    from tfembed.data.types import ImageSpec

    imagenet = S.read_imagenet(T.make_imagenet_layout(tmp_path / "imagenet", num_classes=3,
                                                      train_per_class=3, quirks=True))
    cub = S.read_cub(T.make_cub_layout(tmp_path / "cub", classes=(1, 2, 101), per_class=2))
    ds = training_batches([imagenet.train, cub.train], classes_per_batch=2, images_per_class=2,
                          policy="weighted", weights=[1, 10], spec=ImageSpec((16, 16), (20, 20)),
                          seed=0)
    seen = set()
    for inputs, labels in ds.take(12).as_numpy_iterator():
        domain = inputs["domain"]
        assert inputs["images"].shape == (4, 16, 16, 3) and domain.shape == (4,)
        assert len(set(domain.tolist())) == 1, domain  # one domain per batch
        d = int(domain[0])
        seen.add(d)
        # labels offset per domain: imagenet 0..2, cub 3..4
        lo, hi = (0, 3) if d == 0 else (3, 5)
        assert all(lo <= int(y) < hi for y in labels), (d, labels)
    assert seen == {0, 1}


class _FakeImagenetBuilder:
    """Stands in for a prepared tfds ``imagenet2012`` builder (train/validation/unlabelled test)."""

    def __init__(self):
        self.version = "5.1.0"
        self.data_dir = "/nonexistent/tfds/imagenet2012/5.1.0"
        self.splits_read = []
        self.info = type("Info", (), {"features": {"image": None, "label": None,
                                                   "file_name": None}})()
        self.examples = []
        for i, (label, split) in enumerate([(0, "train"), (2, "train"), (1, "train"),
                                            (2, "validation"), (0, "validation"), (-1, "test")]):
            buf = io.BytesIO()
            Image.fromarray(T.class_image(max(label, 0), i, size=(16, 20))).save(buf, "JPEG")
            self.examples.append({"image": buf.getvalue(), "label": label, "split": split})

    def is_prepared(self):
        return True

    def as_dataset(self, split, decoders=None, shuffle_files=False):
        import tensorflow as tf

        self.splits_read.append(split)
        ex = [e for e in self.examples if e["split"] == split]
        return tf.data.Dataset.from_tensor_slices({
            "image": [e["image"] for e in ex],
            "label": np.asarray([e["label"] for e in ex], np.int64),
        })


def test_tfds_imagenet2012_train_and_validation(tmp_path, monkeypatch):
    builder = _FakeImagenetBuilder()
    monkeypatch.setattr(S, "_tfds_builder", lambda name, data_dir: builder)
    d = S.read_tfds("imagenet2012", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert builder.splits_read == ["train", "validation"]  # the unlabelled test split is not read
    assert d.name == "imagenet" and d.num_classes == 3
    assert d.train.labels.tolist() == [0, 2, 1]  # tfds labels kept (sorted-wnid order)
    assert d.splits["test"].labels.tolist() == [2, 0]
    assert d.train.boxes is None and all(os.path.isfile(p) for p in d.splits["test"].paths)
