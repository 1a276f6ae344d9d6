"""Tests of tfembed.data.sources on miniature copies of the official dataset layouts."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfembed.data import sources as S
from tfembed.data import testing as T
from tfembed.data.types import Domain


def _check_domain(domain: Domain, split_names=("train", "test")):
    assert set(domain.splits) == set(split_names)
    all_labels = np.concatenate([s.labels for s in domain.splits.values()])
    assert set(all_labels.tolist()) == set(range(domain.num_classes)), "labels must be contiguous"
    train = set(domain.train.labels.tolist())
    others = set(np.concatenate([domain.splits[s].labels for s in split_names if s != "train"]).tolist())
    assert not train & others, "train and test classes must be disjoint"
    assert max(train) < min(others), "train classes come first"
    for split in domain.splits.values():
        assert split.labels.dtype == np.int64
        for p in split.paths:
            assert os.path.isabs(p) and os.path.isfile(p), p


def _by_name(split):
    return {Path(p).name: int(l) for p, l in zip(split.paths, split.labels)}


# --------------------------------------------------------------------------------------------------
# CUB
# --------------------------------------------------------------------------------------------------


def test_cub_paper_split_labels_and_boxes(tmp_path):
    T.make_cub_layout(tmp_path / "CUB_200_2011", classes=(1, 2, 101, 102), per_class=3)
    for root in (tmp_path, tmp_path / "CUB_200_2011"):  # parent or the dataset dir itself
        d = S.read_cub(root)
        assert d.name == "cub" and d.num_classes == 4
        _check_domain(d)
        assert len(d.train) == 6 and len(d.splits["test"]) == 6
        assert _by_name(d.train)["Bird_2_0001.jpg"] == 1
        assert _by_name(d.splits["test"])["Bird_101_0000.jpg"] == 2
        assert _by_name(d.splits["test"])["Bird_102_0002.jpg"] == 3
        # boxes follow bounding_boxes.txt, by image id (ids 1.. in class order)
        box_file = tmp_path / "CUB_200_2011" / "bounding_boxes.txt"
        rows = [line.split() for line in box_file.read_text().splitlines()]
        expected = np.asarray([[float(v) for v in r[1:]] for r in rows], np.float32)
        np.testing.assert_allclose(d.train.boxes, expected[:6])
        np.testing.assert_allclose(d.splits["test"].boxes, expected[6:])
        assert d.train.skipped == []


def test_cub_without_boxes_and_listing_order(tmp_path):
    T.make_cub_layout(tmp_path, classes=(3, 100, 150), per_class=2, boxes=False)
    d = S.read_cub(tmp_path, verify=False)
    assert d.train.boxes is None
    assert [Path(p).name for p in d.train.paths] == [
        "Bird_3_0000.jpg", "Bird_3_0001.jpg", "Bird_100_0000.jpg", "Bird_100_0001.jpg"]
    assert d.train.labels.tolist() == [0, 0, 1, 1]
    assert d.splits["test"].labels.tolist() == [2, 2]


# --------------------------------------------------------------------------------------------------
# CARS196
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout,test_in_devkit", [("devkit", False), ("devkit", True), ("combined", False)])
def test_cars_merges_official_splits_and_splits_by_class(tmp_path, layout, test_in_devkit):
    T.make_cars_layout(tmp_path, classes=(1, 2, 99, 100), per_class=3, size=(40, 32), layout=layout,
                       test_annos_in_devkit=test_in_devkit)
    d = S.read_cars196(tmp_path)
    assert d.name == "cars" and d.num_classes == 4
    _check_domain(d)
    # all 12 images (both official image splits) are used; classes 1,2 -> train, 99,100 -> test
    assert len(d.train) == 6 and len(d.splits["test"]) == 6
    assert sorted(d.train.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert sorted(d.splits["test"].labels.tolist()) == [2, 2, 2, 3, 3, 3]
    if layout == "devkit":  # image k=1 of class 1 is the first official test image
        assert {Path(p).parent.name for p in d.train.paths} == {"cars_train", "cars_test"}
    # boxes: image k of a class has x1,y1,x2,y2 = 2+k%3, 1+k%2, w-1-k%3, h-1-k%2 with (h, w)=(40, 32)
    h, w = 40, 32
    for split in d.splits.values():
        for box in split.boxes:
            x, y, bw, bh = box
            k = int(x) - 2
            assert (y, bw, bh) == (1 + k % 2, (w - 1 - k % 3) - x, (h - 1 - k % 2) - y)


def test_cars_bad_test_annotations_without_labels(tmp_path):
    import scipy.io

    T.make_cars_layout(tmp_path, classes=(1, 99), per_class=2)
    (tmp_path / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(S.DatasetNotFoundError, match="cars_test_annos_withlabels.mat"):
        S.read_cars196(tmp_path)
    # the unlabelled official test annotations are refused with a clear message
    arr = np.zeros((1, 1), dtype=[("bbox_x1", "O"), ("fname", "O")])
    arr[0, 0] = (np.array([[1]]), np.array(["00001.jpg"]))
    scipy.io.savemat(str(tmp_path / "cars_test_annos_withlabels.mat"), {"annotations": arr})
    with pytest.raises(ValueError, match="class"):
        S.read_cars196(tmp_path)


# --------------------------------------------------------------------------------------------------
# SOP, In-shop, VehicleID
# --------------------------------------------------------------------------------------------------


def test_sop_remaps_class_ids_train_first(tmp_path):
    T.make_sop_layout(tmp_path / "Stanford_Online_Products", train_classes=(11, 2, 5),
                      test_classes=(30, 20), per_class=2)
    d = S.read_sop(tmp_path)
    assert d.name == "sop" and d.num_classes == 5
    _check_domain(d)
    assert len(d.train) == 6 and len(d.splits["test"]) == 4
    assert _by_name(d.train) == {"2_0.JPG": 0, "2_1.JPG": 0, "5_0.JPG": 1, "5_1.JPG": 1,
                                 "11_0.JPG": 2, "11_1.JPG": 2}
    assert _by_name(d.splits["test"]) == {"20_0.JPG": 3, "20_1.JPG": 3, "30_0.JPG": 4, "30_1.JPG": 4}
    # listing order is the file's order, not label order
    assert Path(d.train.paths[0]).name == "11_0.JPG"


@pytest.mark.parametrize("eval_subdir", [False, True])
def test_inshop_query_and_gallery_share_labels(tmp_path, eval_subdir):
    T.make_inshop_layout(tmp_path, train_items=3, test_items=2, per_item=4, eval_subdir=eval_subdir)
    d = S.read_inshop(tmp_path)
    assert d.name == "inshop" and d.has_query_gallery and d.num_classes == 5
    _check_domain(d, ("train", "query", "gallery"))
    assert len(d.train) == 12 and len(d.splits["query"]) == 4 and len(d.splits["gallery"]) == 4
    np.testing.assert_array_equal(d.splits["query"].classes, d.splits["gallery"].classes)
    np.testing.assert_array_equal(d.splits["query"].classes, [3, 4])
    lab = {Path(p).parent.name: int(l) for p, l in zip(d.splits["gallery"].paths, d.splits["gallery"].labels)}
    assert lab == {"id_00000004": 3, "id_00000005": 4}


def test_vehicleid_and_test_list_option(tmp_path):
    T.make_vehicleid_layout(tmp_path / "VehicleID_V1.0", train_ids=(7, 3), test_ids=(12, 9), per_id=2,
                            test_list="test_list_800.txt")
    with pytest.raises(S.DatasetNotFoundError, match="test_list_13164.txt"):
        S.read_vehicleid(tmp_path)
    d = S.read_vehicleid(tmp_path, test_list="test_list_800.txt")
    _check_domain(d)
    assert d.num_classes == 4 and len(d.train) == 4 and len(d.splits["test"]) == 4
    assert d.train.labels.tolist() == [1, 1, 0, 0]  # ids 7, 3 -> sorted 3:0, 7:1
    assert d.splits["test"].labels.tolist() == [3, 3, 2, 2]  # ids 12, 9 -> 9:2, 12:3


# --------------------------------------------------------------------------------------------------
# Class folders
# --------------------------------------------------------------------------------------------------


def test_folder_class_disjoint_fraction_and_extensions(tmp_path):
    T.make_folder_dataset(tmp_path / "toy", num_classes=5, per_class=2)
    extra = tmp_path / "toy" / "class_04"
    T.write_image(extra / "upper.JPG", T.class_image(4, 7))
    T.write_image(extra / "more.Jpeg", T.class_image(4, 8))
    (extra / "notes.txt").write_text("not an image")
    (tmp_path / "toy" / "empty_class").mkdir()
    (tmp_path / "toy" / ".hidden").mkdir()
    d = S.read_folder(tmp_path / "toy")
    assert d.name == "toy" and d.num_classes == 5
    _check_domain(d)
    # ceil(5 * 0.5) = 3 train classes
    assert d.train.classes.tolist() == [0, 1, 2] and d.splits["test"].classes.tolist() == [3, 4]
    assert len(d.splits["test"]) == 2 + 4
    assert _by_name(d.splits["test"])["upper.JPG"] == 4
    d = S.read_folder(tmp_path / "toy", test_fraction=0.2)
    assert d.train.classes.tolist() == [0, 1, 2, 3]  # ceil(5 * 0.8) = 4
    with pytest.raises(ValueError):
        S.read_folder(tmp_path / "toy", test_fraction=1.5)


def test_folder_train_test_subdirs(tmp_path):
    T.make_folder_dataset(tmp_path, num_classes=4, per_class=3, split_dirs=True, ext=".jpg")
    d = S.read_folder(tmp_path)
    _check_domain(d)
    assert d.num_classes == 4 and len(d.train) == 6 and len(d.splits["test"]) == 6
    assert {Path(p).parent.name for p in d.splits["test"].paths} == {"class_02", "class_03"}
    assert set(d.splits["test"].labels.tolist()) == {2, 3}


# --------------------------------------------------------------------------------------------------
# Missing data
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader,expected", [
    (S.read_cub, "images.txt"),
    (S.read_cars196, "cars_annos.mat"),
    (S.read_sop, "Ebay_train.txt"),
    (S.read_inshop, "list_eval_partition.txt"),
    (S.read_vehicleid, "train_list.txt"),
    (S.read_folder, "class"),
])
def test_missing_dataset_error_names_paths(tmp_path, reader, expected):
    where = tmp_path / "nothing_here"
    with pytest.raises(S.DatasetNotFoundError) as info:
        reader(where)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(where.absolute()) in msg and expected in msg
    assert "To get it" in msg
    assert info.value.looked_in[0] == str(where.absolute())


def test_missing_images_dir_is_dataset_not_found(tmp_path):
    T.make_cub_layout(tmp_path, classes=(1, 101), per_class=1)
    for p in sorted((tmp_path / "images").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (tmp_path / "images").rmdir()
    with pytest.raises(S.DatasetNotFoundError, match="images"):
        S.read_cub(tmp_path)


# --------------------------------------------------------------------------------------------------
# Bad images
# --------------------------------------------------------------------------------------------------


def _jpeg_bytes(size=(64, 64)):
    arr = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_verify_images_flags_corrupt_truncated_and_missing(tmp_path, caplog):
    good_jpg = tmp_path / "good.jpg"
    good_jpg.write_bytes(_jpeg_bytes())
    padded = tmp_path / "padded.jpg"  # complete JPEG followed by junk bytes: still fine
    padded.write_bytes(_jpeg_bytes() + b"trailing junk")
    grey = T.write_image(tmp_path / "grey.png", T.class_image(1, 0, channels=1))
    rgba = T.write_image(tmp_path / "rgba.png", T.class_image(2, 0, channels=4))
    gif = tmp_path / "pal.gif"
    Image.fromarray(T.class_image(3, 0)).convert("P").save(gif)
    corrupt = T.write_corrupt(tmp_path / "corrupt.jpg")
    truncated = tmp_path / "truncated.jpg"
    data = _jpeg_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    png_data = (tmp_path / "grey.png").read_bytes()
    trunc_png = tmp_path / "truncated.png"
    trunc_png.write_bytes(png_data[:-12])  # IEND chunk cut off
    missing = tmp_path / "missing.png"
    paths = [good_jpg, padded, grey, rgba, gif, corrupt, truncated, trunc_png, missing]
    good, skipped = S.verify_images(paths, num_workers=4)
    assert good.tolist() == [True] * 5 + [False] * 4
    reasons = dict(skipped)
    assert set(reasons) == {str(corrupt), str(truncated), str(trunc_png), str(missing)}
    assert "missing" in reasons[str(missing)]
    assert "truncated" in reasons[str(trunc_png)] and "truncated" in reasons[str(truncated)]
    with pytest.raises(ValueError, match="corrupt.jpg"):
        S.verify_images(paths, on_bad_image="error")
    with pytest.raises(ValueError, match="on_bad_image"):
        S.verify_images(paths, on_bad_image="ignore")


def test_readers_skip_bad_images_or_raise(tmp_path):
    T.make_folder_dataset(tmp_path, num_classes=2, per_class=3, ext=".jpg", corrupt=1)
    data = (tmp_path / "class_01" / "img_00.jpg").read_bytes()
    (tmp_path / "class_01" / "img_99.jpg").write_bytes(data[: len(data) // 2])
    d = S.read_folder(tmp_path, test_fraction=0.5)
    assert len(d.train) == 3 and len(d.splits["test"]) == 3
    assert [Path(p).name for p, _ in d.train.skipped] == ["zz_corrupt_00.jpg"]
    assert [Path(p).name for p, _ in d.splits["test"].skipped] == ["img_99.jpg"]
    with pytest.raises(ValueError, match="zz_corrupt_00.jpg"):
        S.read_folder(tmp_path, on_bad_image="error")
    d = S.read_folder(tmp_path, verify=False)
    assert len(d.train) == 4 and d.train.skipped == []


def test_listed_dataset_skips_bad_and_keeps_boxes_aligned(tmp_path):
    T.make_cub_layout(tmp_path, classes=(1, 101), per_class=2, corrupt=2)
    d = S.read_cub(tmp_path)
    assert len(d.train) == 2 and len(d.splits["test"]) == 2
    assert len(d.train.skipped) == 1 and len(d.splits["test"].skipped) == 1
    assert d.train.boxes.shape == (2, 4) and d.splits["test"].boxes.shape == (2, 4)
    rows = [l.split() for l in (tmp_path / "bounding_boxes.txt").read_text().splitlines()]
    np.testing.assert_allclose(d.splits["test"].boxes[0], [float(v) for v in rows[2][1:]])


# --------------------------------------------------------------------------------------------------
# Demo domains and the registry
# --------------------------------------------------------------------------------------------------


def _write_demo(path, rng):
    labels = np.repeat(np.arange(5), 3).astype(np.int64)
    np.savez(path, images=rng.integers(0, 256, (15, 8, 8), dtype=np.uint8), labels=labels,
             train_classes=np.array([4, 0, 2]), test_classes=np.array([3, 1]),
             class_names=np.array(["a", "b", "c", "d", "e"]), source=np.array("test"),
             license=np.array("CC0"))
    return labels


def test_read_demo_from_path(tmp_path, rng):
    path = tmp_path / "tiny.npz"
    labels = _write_demo(path, rng)
    d = S.load_domain("digits", path=path)
    assert d.name == "digits" and d.num_classes == 5
    assert d.train.images.shape == (9, 8, 8, 1) and d.train.images.dtype == np.uint8
    assert d.train.paths is None
    # original 0, 2, 4 -> 0, 1, 2; 1, 3 -> 3, 4
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert d.splits["test"].labels.tolist() == [3, 3, 3, 4, 4, 4]
    with np.load(path) as z:
        expected = np.concatenate([z["images"][labels == 1], z["images"][labels == 3]])
    np.testing.assert_array_equal(d.splits["test"].images[..., 0], expected)
    with pytest.raises(S.DatasetNotFoundError, match="nope.npz"):
        S.read_demo("digits", path=tmp_path / "nope.npz")


def test_read_demo_package_data_missing_is_clear():
    with pytest.raises(S.DatasetNotFoundError, match="no_such_demo.npz"):
        S.read_demo("no_such_demo")


def test_load_domain_registry(tmp_path, monkeypatch):
    T.make_sop_layout(tmp_path / "Stanford_Online_Products", per_class=2)
    T.make_folder_dataset(tmp_path / "flowers", num_classes=2, per_class=2)
    d = S.load_domain("sop", data_dir=tmp_path)
    assert d.name == "sop" and d.num_classes == 5
    d = S.load_domain("folder:flowers", data_dir=tmp_path, test_fraction=0.5)
    assert d.name == "flowers" and d.num_classes == 2
    d = S.load_domain(f"folder:{tmp_path / 'flowers'}")
    assert d.num_classes == 2
    monkeypatch.setenv(S.DATA_DIR_ENV, str(tmp_path))
    assert S.load_domain("sop", verify=False).num_classes == 5
    with pytest.raises(ValueError, match="unknown domain"):
        S.load_domain("no_such_domain")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    with pytest.raises(S.DatasetNotFoundError) as info:
        S.load_domain("cub", data_dir=tmp_path)
    assert str(tmp_path / "CUB_200_2011") in str(info.value)
    assert "caltech_birds2011" in str(info.value)


# --------------------------------------------------------------------------------------------------
# tensorflow-datasets (a fake builder: no tfds data is needed, nothing downloads)
# --------------------------------------------------------------------------------------------------


class _FakeBuilder:
    """Stands in for a prepared tfds builder of a CUB-like dataset."""

    def __init__(self, examples, prepared=True, version="1.0.0", data_dir="/nonexistent/tfds"):
        self.examples = examples
        self.prepared = prepared
        self.version = version
        self.data_dir = data_dir
        self.calls = 0
        self.info = type("Info", (), {"features": {"image": None, "label": None, "bbox": None}})()

    def is_prepared(self):
        return self.prepared

    def as_dataset(self, split, decoders=None, shuffle_files=False):
        import tensorflow as tf

        self.calls += 1
        ex = [e for e in self.examples if e["split"] == split]
        return tf.data.Dataset.from_tensor_slices({
            "image": [e["image"] for e in ex],
            "label": np.asarray([e["label"] for e in ex], np.int64),
            "bbox": np.asarray([e["bbox"] for e in ex], np.float32).reshape(-1, 4),
        })


def _fake_cub_examples():
    out = []
    for i, (label, split) in enumerate([(0, "train"), (99, "test"), (100, "train"), (199, "test"),
                                        (0, "test"), (150, "train")]):
        buf = io.BytesIO()
        Image.fromarray(T.class_image(label, i, size=(20, 40))).save(buf, "PNG" if i % 2 else "JPEG")
        out.append({"image": buf.getvalue(), "label": label, "split": split,
                    "bbox": [0.1, 0.25, 0.6, 0.75]})  # ymin, xmin, ymax, xmax
    return out


def test_tfds_missing_data_raises_and_never_prepares(tmp_path, monkeypatch):
    builder = _FakeBuilder(_fake_cub_examples(), prepared=False, data_dir=str(tmp_path / "tfds" / "x"))
    monkeypatch.setattr(S, "_tfds_builder", lambda name, data_dir: builder)
    with pytest.raises(S.DatasetNotFoundError) as info:
        S.read_tfds("caltech_birds2011", data_dir=tmp_path / "tfds", cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "tfds build caltech_birds2011" in msg and str(tmp_path / "tfds" / "x") in msg
    assert builder.calls == 0
    with pytest.raises(ValueError, match="supports"):
        S.read_tfds("mnist")


def test_tfds_export_cache_reuse_and_redo(tmp_path, monkeypatch):
    builder = _FakeBuilder(_fake_cub_examples())
    monkeypatch.setattr(S, "_tfds_builder", lambda name, data_dir: builder)
    cache = tmp_path / "cache"
    d = S.read_tfds("caltech_birds2011", data_dir=tmp_path, cache_dir=cache)
    assert builder.calls == 2 and (cache / "_COMPLETE").is_file()
    assert d.name == "cub" and d.num_classes == 5  # labels 0, 99 | 100, 150, 199
    _check_domain(d)
    # both tfds splits merged (tfds train first), label < 100 -> train
    assert d.train.labels.tolist() == [0, 1, 0]  # tfds train: 0; tfds test: 99, 0
    assert d.splits["test"].labels.tolist() == [2, 3, 4]  # tfds train: 100, 150; test: 199
    assert {Path(p).suffix for p in d.train.paths} == {".jpg", ".png"}
    # normalised (ymin, xmin, ymax, xmax) -> pixel (x, y, w, h) on 40x20 (w x h) images
    np.testing.assert_allclose(d.train.boxes[0], [10.0, 2.0, 20.0, 10.0], atol=0.01)
    # second call: served from the cache, tfds not read again, even if tfds data is gone
    builder.prepared = False
    d2 = S.read_tfds("caltech_birds2011", data_dir=tmp_path, cache_dir=cache)
    assert builder.calls == 2
    np.testing.assert_array_equal(d2.train.paths, d.train.paths)
    # an interrupted export (no _COMPLETE) is redone
    builder.prepared = True
    (cache / "_COMPLETE").unlink()
    S.read_tfds("caltech_birds2011", data_dir=tmp_path, cache_dir=cache)
    assert builder.calls == 4
    # a new tfds version is re-exported
    builder.version = "2.0.0"
    S.read_tfds("caltech_birds2011", data_dir=tmp_path, cache_dir=cache)
    assert builder.calls == 6
    assert json.loads((cache / "_COMPLETE").read_text())["version"] == "2.0.0"
    assert not list(cache.rglob("*.tmp"))
    # load_domain falls back to the tfds copy when the on-disk layout is absent
    (tmp_path / "caltech_birds2011").mkdir()
    d3 = S.load_domain("cub", data_dir=tmp_path, cache_dir=cache)
    assert d3.num_classes == 5 and len(d3.train) == 3
