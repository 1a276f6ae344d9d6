"""Miniature copies of the official dataset layouts, for tests and smoke runs (no download).

Every ``make_*`` function writes real, decodable images whose colour and stripe pattern depend on
the class (so a model could in principle separate the classes), plus the dataset's own annotation
files in their official format, into ``root``, and returns ``Path(root)``: the directory to pass to
the matching reader in :mod:`tfembed.data.sources`. ``corrupt=k`` adds ``k`` extra *listed* images
made of random bytes, so the counts of good images stay ``classes x per_class``.

Sizes are ``(height, width)``.
"""

import colorsys
import math
import os
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

PathLike = Union[str, os.PathLike]

__all__ = [
    "class_image",
    "write_image",
    "write_corrupt",
    "make_folder_dataset",
    "make_cub_layout",
    "make_cars_layout",
    "make_sop_layout",
    "make_inshop_layout",
    "make_vehicleid_layout",
    "make_imagenet_layout",
    "make_uned_layout",
]


def class_image(class_index: int, image_index: int = 0, size: Tuple[int, int] = (40, 32),
                channels: int = 3) -> np.ndarray:
    """A ``uint8 [H, W, channels]`` image: a class-specific hue and stripe orientation/frequency,
    with an image-specific phase and a little noise."""
    h, w = size
    rng = np.random.default_rng(1000 * int(class_index) + int(image_index))
    hue = (class_index * 0.6180339887) % 1.0
    colour = np.asarray(colorsys.hsv_to_rgb(hue, 0.85, 1.0), np.float32)
    angle = (class_index * 37.0) % 180.0 * math.pi / 180.0
    freq = 1.5 + (class_index % 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = image_index * 0.9
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(h, w)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * t + phase)
    img = colour[None, None, :] * (0.3 + 0.7 * stripes[..., None]) * 255.0
    img = img + rng.normal(0.0, 6.0, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 1:
        return img.mean(axis=-1, keepdims=True).astype(np.uint8)
    if channels == 4:
        alpha = np.full((h, w, 1), 255, np.uint8)
        return np.concatenate([img, alpha], axis=-1)
    return img


def write_image(path: PathLike, array: np.ndarray) -> Path:
    """Write ``array`` (``[H, W]`` or ``[H, W, 1|3|4]`` uint8) as the format of the file extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array, np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr)
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(path, "JPEG", quality=90)
    else:
        im.save(path)
    return path


def write_corrupt(path: PathLike, num_bytes: int = 300, seed: int = 0) -> Path:
    """Write random bytes (not an image) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, num_bytes, dtype=np.uint8).tobytes())
    return path


def make_folder_dataset(
    root: PathLike,
    num_classes: int = 4,
    per_class: int = 3,
    size: Tuple[int, int] = (40, 32),
    corrupt: int = 0,
    ext: str = ".png",
    split_dirs: bool = False,
) -> Path:
    """``root/class_XX/img_YY<ext>``; with ``split_dirs`` the first ``ceil(num_classes/2)`` classes go
    under ``root/train/`` and the rest under ``root/test/``. ``corrupt`` extra random-byte ``.jpg``
    files are spread over the classes."""
    root = Path(root)
    n_train = int(math.ceil(num_classes / 2))
    dirs = []
    for c in range(num_classes):
        base = root / ("train" if c < n_train else "test") if split_dirs else root
        d = base / f"class_{c:02d}"
        dirs.append(d)
        for k in range(per_class):
            write_image(d / f"img_{k:02d}{ext}", class_image(c, k, size))
    for k in range(corrupt):
        write_corrupt(dirs[k % num_classes] / f"zz_corrupt_{k:02d}.jpg", seed=k)
    return root


def _box(size, k):
    h, w = size
    x, y = 2 + k % 3, 1 + k % 2
    return [float(x), float(y), float(w - x - 3), float(h - y - 2)]


def make_cub_layout(
    root: PathLike,
    classes: Sequence[int] = (1, 2, 101, 102),
    per_class: int = 3,
    size: Tuple[int, int] = (40, 32),
    boxes: bool = True,
    corrupt: int = 0,
) -> Path:
    """A ``CUB_200_2011`` directory: ``images.txt``, ``image_class_labels.txt``, ``classes.txt``,
    ``train_test_split.txt``, ``bounding_boxes.txt`` (if ``boxes``) and ``images/NNN.Name/*.jpg``.
    Image ids follow the class order; box of image id ``i``: ``_box(size, i)``."""
    root = Path(root)
    entries = []  # (relpath, class)
    for ci, c in enumerate(classes):
        folder = f"{c:03d}.Bird_{c}"
        for k in range(per_class):
            rel = f"{folder}/Bird_{c}_{k:04d}.jpg"
            write_image(root / "images" / rel, class_image(ci, k, size))
            entries.append((rel, c))
    for k in range(corrupt):
        c = classes[k % len(classes)]
        rel = f"{c:03d}.Bird_{c}/Bird_{c}_corrupt_{k}.jpg"
        write_corrupt(root / "images" / rel, seed=k)
        entries.append((rel, c))
    lines = {"images.txt": [], "image_class_labels.txt": [], "bounding_boxes.txt": [],
             "train_test_split.txt": []}
    for i, (rel, c) in enumerate(entries, start=1):
        lines["images.txt"].append(f"{i} {rel}")
        lines["image_class_labels.txt"].append(f"{i} {c}")
        lines["bounding_boxes.txt"].append(f"{i} " + " ".join(f"{v:.1f}" for v in _box(size, i)))
        lines["train_test_split.txt"].append(f"{i} {i % 2}")
    if not boxes:
        del lines["bounding_boxes.txt"]
    lines["classes.txt"] = [f"{c} {c:03d}.Bird_{c}" for c in classes]
    for fname, content in lines.items():
        (root / fname).write_text("\n".join(content) + "\n")
    return root


def _cars_struct(rows, fields):
    dtype = [(f, "O") for f in fields]
    arr = np.zeros((1, len(rows)), dtype=dtype)
    for i, r in enumerate(rows):
        arr[0, i] = tuple(np.array([[v]], dtype=np.uint16) if isinstance(v, int) else np.array([v])
                          for v in r)
    return arr


def make_cars_layout(
    root: PathLike,
    classes: Sequence[int] = (1, 2, 99, 100),
    per_class: int = 3,
    size: Tuple[int, int] = (40, 32),
    layout: str = "devkit",
    corrupt: int = 0,
    test_annos_in_devkit: bool = False,
) -> Path:
    """Stanford Cars. ``layout="devkit"``: ``devkit/cars_train_annos.mat``,
    ``cars_test_annos_withlabels.mat`` (in the root, or in ``devkit/`` with
    ``test_annos_in_devkit``), ``cars_train/`` and ``cars_test/``; even-numbered images of a class
    go to the official train split, odd ones to test. ``layout="combined"``: ``cars_annos.mat`` and
    ``car_ims/``. Boxes ``(x1, y1, x2, y2)`` are ``(2+k%3, 1+k%2, w-1-k%3, h-1-k%2)`` for image k of
    a class (``k`` counted within the class)."""
    import scipy.io

    if layout not in ("devkit", "combined"):
        raise ValueError(f"layout must be 'devkit' or 'combined', got {layout!r}")
    root = Path(root)
    h, w = size
    items = []  # (class, k, is_test, is_corrupt)
    for ci, c in enumerate(classes):
        for k in range(per_class):
            items.append((ci, c, k, k % 2 == 1, False))
    for k in range(corrupt):
        ci = k % len(classes)
        items.append((ci, classes[ci], per_class + k, False, True))
    train_rows, test_rows, combined_rows = [], [], []
    n_train = n_test = 0
    for idx, (ci, c, k, is_test, bad) in enumerate(items, start=1):
        x1, y1, x2, y2 = 2 + k % 3, 1 + k % 2, w - 1 - k % 3, h - 1 - k % 2
        if layout == "combined":
            rel = f"car_ims/{idx:06d}.jpg"
            path = root / rel
            combined_rows.append((rel, x1, y1, x2, y2, int(c), int(is_test)))
        elif is_test:
            n_test += 1
            fname = f"{n_test:05d}.jpg"
            path = root / "cars_test" / fname
            test_rows.append((x1, y1, x2, y2, int(c), fname))
        else:
            n_train += 1
            fname = f"{n_train:05d}.jpg"
            path = root / "cars_train" / fname
            train_rows.append((x1, y1, x2, y2, int(c), fname))
        if bad:
            write_corrupt(path, seed=idx)
        else:
            write_image(path, class_image(ci, k, size))
    if layout == "combined":
        fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
        scipy.io.savemat(str(root / "cars_annos.mat"),
                         {"annotations": _cars_struct(combined_rows, fields),
                          "class_names": np.array([f"Car {c}" for c in classes], dtype=object)})
    else:
        fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
        (root / "devkit").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(root / "devkit" / "cars_train_annos.mat"),
                         {"annotations": _cars_struct(train_rows, fields)})
        test_path = (root / "devkit" if test_annos_in_devkit else root) / "cars_test_annos_withlabels.mat"
        scipy.io.savemat(str(test_path), {"annotations": _cars_struct(test_rows, fields)})
    return root


def make_sop_layout(
    root: PathLike,
    train_classes: Sequence[int] = (1, 2, 3),
    test_classes: Sequence[int] = (4, 5),
    per_class: int = 3,
    size: Tuple[int, int] = (40, 32),
    corrupt: int = 0,
) -> Path:
    """A ``Stanford_Online_Products`` directory: ``Ebay_train.txt``, ``Ebay_test.txt`` (header
    ``image_id class_id super_class_id path``) and ``<super>_final/<class>_<k>.JPG`` images."""
    root = Path(root)
    supers = ["bicycle", "chair", "lamp"]
    all_classes = list(train_classes) + list(test_classes)
    image_id = 0
    for split, cls in (("train", train_classes), ("test", test_classes)):
        rows = ["image_id class_id super_class_id path"]
        entries = []
        for c in cls:
            ci = all_classes.index(c)
            s = ci % len(supers)
            for k in range(per_class):
                entries.append((c, s, f"{supers[s]}_final/{c}_{k}.JPG", ci, k, False))
        if split == "train":
            for k in range(corrupt):
                c = cls[k % len(cls)]
                s = all_classes.index(c) % len(supers)
                entries.append((c, s, f"{supers[s]}_final/{c}_corrupt_{k}.JPG", 0, k, True))
        for c, s, rel, ci, k, bad in entries:
            image_id += 1
            rows.append(f"{image_id} {c} {s + 1} {rel}")
            if bad:
                write_corrupt(root / rel, seed=image_id)
            else:
                write_image(root / rel, class_image(ci, k, size))
        (root / f"Ebay_{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def make_inshop_layout(
    root: PathLike,
    train_items: int = 3,
    test_items: int = 2,
    per_item: int = 4,
    size: Tuple[int, int] = (40, 32),
    corrupt: int = 0,
    eval_subdir: bool = False,
) -> Path:
    """DeepFashion In-shop: ``list_eval_partition.txt`` (in ``Eval/`` with ``eval_subdir``) and
    ``img/<GENDER>/<Category>/id_XXXXXXXX/NN_k_front.jpg``. Items ``id_00000001..`` are train items
    first; for a test item the first half of its images are ``query``, the rest ``gallery``."""
    root = Path(root)
    rows = []
    cats = [("WOMEN", "Dresses"), ("MEN", "Shirts_Polos"), ("WOMEN", "Blouses_Shirts")]
    for it in range(train_items + test_items):
        item = f"id_{it + 1:08d}"
        gender, cat = cats[it % len(cats)]
        for k in range(per_item):
            rel = f"img/{gender}/{cat}/{item}/{k + 1:02d}_{k % 4 + 1}_front.jpg"
            write_image(root / rel, class_image(it, k, size))
            if it < train_items:
                status = "train"
            else:
                status = "query" if k < max(1, per_item // 2) else "gallery"
            rows.append((rel, item, status))
    for k in range(corrupt):
        item = f"id_{k % max(1, train_items) + 1:08d}"
        gender, cat = cats[(k % max(1, train_items)) % len(cats)]
        rel = f"img/{gender}/{cat}/{item}/99_{k}_corrupt.jpg"
        write_corrupt(root / rel, seed=k)
        rows.append((rel, item, "train"))
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [f"{rel:<70s}{item:<20s}{status}" for rel, item, status in rows]
    target = root / "Eval" if eval_subdir else root
    target.mkdir(parents=True, exist_ok=True)
    (target / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def make_vehicleid_layout(
    root: PathLike,
    train_ids: Sequence[int] = (1, 2, 3),
    test_ids: Sequence[int] = (4, 5),
    per_id: int = 3,
    size: Tuple[int, int] = (40, 32),
    test_list: str = "test_list_13164.txt",
    corrupt: int = 0,
) -> Path:
    """PKU VehicleID: ``train_test_split/train_list.txt``, ``train_test_split/<test_list>``
    (``imgname vehicle_id``) and ``image/<imgname>.jpg``."""
    root = Path(root)
    all_ids = list(train_ids) + list(test_ids)
    n = 0
    for fname, ids in (("train_list.txt", train_ids), (test_list, test_ids)):
        rows = []
        for v in ids:
            for k in range(per_id):
                n += 1
                name = f"{n:07d}"
                write_image(root / "image" / f"{name}.jpg", class_image(all_ids.index(v), k, size))
                rows.append(f"{name} {v}")
        if fname == "train_list.txt":
            for k in range(corrupt):
                n += 1
                name = f"{n:07d}"
                write_corrupt(root / "image" / f"{name}.jpg", seed=n)
                rows.append(f"{name} {ids[k % len(ids)]}")
        (root / "train_test_split").mkdir(parents=True, exist_ok=True)
        (root / "train_test_split" / fname).write_text("\n".join(rows) + "\n")
    return root


def _imagenet_meta_struct(rows):
    """``synsets`` as a MATLAB struct array ``(N, 1)`` like the devkit's ``meta.mat``: rows of
    ``(ILSVRC2012_ID, WNID, words, num_children)``."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "num_children"]
    arr = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, (cid, wnid, words, children) in enumerate(rows):
        arr[i, 0] = (np.array([[float(cid)]]), np.array([wnid]), np.array([words]),
                     np.array([[float(children)]]))
    return arr


def make_imagenet_layout(
    root: PathLike,
    num_classes: int = 3,
    train_per_class: int = 3,
    val_per_class: int = 2,
    val_layout: str = "folders",
    rng=None,
    size: Tuple[int, int] = (40, 32),
    corrupt: int = 0,
    quirks: bool = False,
    label_dir: PathLike = None,
) -> Path:
    """ILSVRC2012 in miniature: ``train/<wnid>/<wnid>_<k>.JPEG`` and the validation images
    ``ILSVRC2012_val_<NNNNNNNN>.JPEG``, numbered ``1..num_classes*val_per_class`` in a random
    class order (the same numbers for every ``val_layout`` given the same ``rng`` seed).

    The wnids (``n`` + 8 random digits, from ``rng``, default ``np.random.default_rng(0)``) are
    created in an order that is generally not the sorted one; class ``i`` in creation order gets
    ``class_image(i, ...)`` pixels. ``val_layout``:

    * ``"folders"``: ``val/<wnid>/ILSVRC2012_val_*.JPEG`` (valprep);
    * ``"loc_csv"``: flat ``val/`` plus Kaggle's ``LOC_val_solution.csv`` (``ImageId,
      PredictionString``) in ``label_dir`` (default ``root``);
    * ``"devkit"``: flat ``val/`` plus ``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``
      in ``label_dir`` (default ``root/ILSVRC2012_devkit_t12/data``). As in the real devkit the
      leaf ``ILSVRC2012_ID`` s ``1..num_classes`` are in a random (not wnid) order, and two non-leaf
      synsets follow.

    ``corrupt`` adds random-byte ``.JPEG`` files to the first class's training folder. ``quirks``
    turns the first two training images of that class into the ILSVRC2012 oddities: a CMYK JPEG
    and a PNG named ``.JPEG`` (both decodable; the counts do not change).
    """
    if val_layout not in ("folders", "loc_csv", "devkit"):
        raise ValueError(f"val_layout must be 'folders', 'loc_csv' or 'devkit', got {val_layout!r}")
    root = Path(root)
    rng = np.random.default_rng(0) if rng is None else rng
    numbers = rng.choice(10 ** 8, size=num_classes + 2, replace=False)
    wnids = [f"n{int(v):08d}" for v in numbers[:num_classes]]
    inner = [f"n{int(v):08d}" for v in numbers[num_classes:]]  # non-leaf synsets (devkit)
    for ci, w in enumerate(wnids):
        for k in range(train_per_class):
            path = root / "train" / w / f"{w}_{k + 1}.JPEG"
            pixels = class_image(ci, k, size)
            if quirks and ci == 0 and k == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).convert("CMYK").save(path, "JPEG", quality=90)
            elif quirks and ci == 0 and k == 1:
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path, "PNG")
            else:
                write_image(path, pixels)
    for k in range(corrupt):
        write_corrupt(root / "train" / wnids[0] / f"{wnids[0]}_corrupt_{k}.JPEG", seed=k)
    # validation image number -> (class index, image index within the class)
    order = rng.permutation(num_classes * val_per_class)
    val = {}
    for n, j in enumerate(order, start=1):
        val[n] = (int(j) // val_per_class, int(j) % val_per_class)
    for n, (ci, k) in val.items():
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        sub = wnids[ci] if val_layout == "folders" else ""
        write_image(root / "val" / sub / name, class_image(ci, train_per_class + k, size))
    if val_layout == "loc_csv":
        target = Path(label_dir) if label_dir is not None else root
        target.mkdir(parents=True, exist_ok=True)
        h, w = size
        lines = ["ImageId,PredictionString"]
        for n, (ci, _) in sorted(val.items(), key=lambda kv: -kv[0]):  # any order works
            box = f"{2} {1} {w - 3} {h - 2}"
            lines.append(f"ILSVRC2012_val_{n:08d},{wnids[ci]} {box} {wnids[ci]} {box} ")
        (target / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    elif val_layout == "devkit":
        import scipy.io

        target = (Path(label_dir) if label_dir is not None
                  else root / "ILSVRC2012_devkit_t12" / "data")
        target.mkdir(parents=True, exist_ok=True)
        ids = rng.permutation(num_classes) + 1  # ILSVRC2012_ID of class ci: ids[ci]
        rows = [(int(ids[ci]), w, f"synset {w}", 0) for ci, w in enumerate(wnids)]
        rows.sort(key=lambda r: r[0])
        rows += [(num_classes + 1 + i, w, f"inner {w}", 2) for i, w in enumerate(inner)]
        scipy.io.savemat(str(target / "meta.mat"), {"synsets": _imagenet_meta_struct(rows)})
        gt = [str(int(ids[val[n][0]])) for n in sorted(val)]
        (target / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(gt) + "\n")
    return root


# Image directories of the UnED domains (the first component of their info files' paths).
_UNED_IMAGE_DIRS = {"cars": "cars/car_ims", "sop": "sop/bicycle_final",
                    "inshop": "deepfashion/inshop/img/WOMEN/Dresses", "inat": "inat/iNaturalist/train_val2018/Aves",
                    "met": "met/MET", "gldv2": "gldv2/images", "food2k": "food2k/Food2k_complete",
                    "rp2k": "rp2k/all"}


def make_uned_layout(
    root: PathLike,
    domains: Sequence[str] = ("cars", "sop", "inshop", "inat", "met", "gldv2", "food2k", "rp2k"),
    train_classes: int = 3,
    test_classes: int = 3,
    per_class: int = 3,
    size: Tuple[int, int] = (40, 32),
    multi_label: bool = True,
    corrupt: int = 0,
    missing: int = 0,
) -> Path:
    """UnED in miniature: ``info_files/<domain>/<split>.json`` and ``data/images/<domain dir>/...``.

    Every domain uses class ids from 0 (so domains share label ids, as UnED's do): train classes
    ``0..train_classes-1`` in ``train`` (and met's ``small_train``), val and test classes after
    them. Per domain, the splits of ``tfembed.data.uned.UNED_SPLITS``; an index split holds the
    second half of each test (or val) class's images and its query split the first half. With
    ``multi_label`` the first test query of gldv2 and met lists two class ids. ``corrupt`` /
    ``missing``: that many extra listed train images per domain made of random bytes / absent.
    RP2K file names carry a Chinese character, written under the escaped name the UnED authors'
    conversion falls back to (``#U4e2d``).
    """
    import json  # noqa: PLC0415

    from tfembed.data.uned import UNED_SPLITS  # noqa: PLC0415

    root = Path(root)
    images = root / "data" / "images"
    for d in domains:
        base = _UNED_IMAGE_DIRS[d]
        splits = UNED_SPLITS[d]
        val0, test0 = train_classes, train_classes + test_classes
        classes = {"train": range(train_classes), "small_train": range(train_classes),
                   "val": range(val0, test0), "test": range(test0, test0 + test_classes)}
        entries = {s: [] for s in splits}

        def add(split, c, k, tag):
            name = f"{tag}_{c:03d}_{k}.jpg"
            if d == "rp2k":
                stored = f"{base}/{tag}/\u4e2d{c:03d}_{k}.jpg"   # listed with the character
                disk = f"{base}/{tag}/#U4e2d{c:03d}_{k}.jpg"     # written escaped
            else:
                stored = disk = f"{base}/{tag}/{name}"
            write_image(images / disk, class_image(100 * (d in ("sop", "met")) + c, k, size))
            entries[split].append({"path": stored, "class_id": int(c)})

        for s in ("train", "small_train"):
            if s in splits:
                for c in classes["train"]:
                    for k in range(per_class):
                        add(s, c, k, s)
        for s in ("val", "test"):
            query, index = {"test": ("test", "index" if "index" in splits else "test"),
                            "val": ("val", "small_index" if "small_index" in splits else "val")}[s]
            for c in classes[s]:
                for k in range(per_class):
                    if query == index or k < max(1, per_class // 2):
                        add(query, c, k, query)
                    else:
                        add(index, c, k, index)
        if multi_label and d in ("gldv2", "met") and entries["test"]:
            first = entries["test"][0]
            first["class_id"] = [first["class_id"], first["class_id"] + 1]
        for k in range(corrupt):
            rel = f"{base}/train/corrupt_{k}.jpg"
            write_corrupt(images / rel, seed=k)
            entries["train"].append({"path": rel, "class_id": 0})
        for k in range(missing):
            entries["train"].append({"path": f"{base}/train/missing_{k}.jpg", "class_id": 0})
        info = root / "info_files" / d
        info.mkdir(parents=True, exist_ok=True)
        for s, rows in entries.items():
            (info / f"{s}.json").write_text(json.dumps(rows, ensure_ascii=False))
    return root
