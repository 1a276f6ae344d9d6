"""Dataset readers: list the images of a dataset and return a :class:`~tfembed.data.types.Domain`.

Readers never decode pixels for training (the tf.data pipeline does that); they read the official
annotation files of a dataset, apply the class-disjoint split used by the deep metric learning
literature and return absolute image paths with contiguous labels ``0..num_classes-1`` over the
whole domain, train classes first. Listing order is the order of the dataset's own list files.

On-disk layouts (``root`` may be the dataset directory itself or a directory that contains it):

* :func:`read_cub` -- ``CUB_200_2011/`` (classes 1-100 train, 101-200 test),
* :func:`read_cars196` -- Stanford Cars, devkit or ``cars_annos.mat`` layout (classes 1-98 train,
  99-196 test; the official train/test *image* split is ignored),
* :func:`read_sop` -- ``Stanford_Online_Products/`` (``Ebay_train.txt`` / ``Ebay_test.txt``),
* :func:`read_inshop` -- DeepFashion In-shop (``train`` / ``query`` / ``gallery``),
* :func:`read_vehicleid` -- PKU VehicleID,
* :func:`read_folder` -- a class-per-folder tree,
* :func:`read_imagenet` -- ILSVRC2012 (``train/<wnid>/`` and ``val/``); unlike the others its train
  and test splits share the same 1000 classes (paper 000 §5.3),

plus :func:`read_tfds` (a tensorflow-datasets directory that already holds the prepared data; the
encoded images are exported once to a file cache), :func:`read_demo` (the small in-memory demo
domains shipped with the package) and :func:`load_domain`, the name-based entry point.

Nothing here downloads anything: missing data raises :class:`DatasetNotFoundError`, whose message
lists every directory that was searched and says how to obtain the data.
"""

import concurrent.futures
import importlib.resources
import io
import json
import math
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from absl import logging
from PIL import Image

from tfembed.data.types import Domain, Split
from tfembed.io import atomic_write

PathLike = Union[str, os.PathLike]

__all__ = [
    "DatasetNotFoundError",
    "verify_images",
    "read_cub",
    "read_cars196",
    "read_sop",
    "read_inshop",
    "read_vehicleid",
    "read_folder",
    "read_imagenet",
    "read_tfds",
    "read_demo",
    "load_domain",
    "available_domains",
    "IMAGE_EXTENSIONS",
    "IMAGENET_EXTENSIONS",
    "DEMO_DOMAINS",
    "DEMO_HFLIP",
    "DATA_DIR_ENV",
]

#: File name extensions (lower case) that :func:`read_folder` treats as images.
# WebP is left out: tf.io.decode_image (the training pipeline and the serving graph) cannot
# decode it, so listing such files would only fail later, mid-training.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
#: Small in-memory domains shipped as ``tfembed/data/demo/<name>.npz``.
DEMO_DOMAINS = ("digits", "fashion", "glyphs")
#: Augmentation policy of the demo domains (``Domain.hflip``: a mirrored image keeps its class).
#: Text never flips: a mirrored glyph 'b' is a 'd', a mirrored two-digit "08" reads "80".
#: Fashion-MNIST garments and shoes mirrored are the same garment or shoe.
DEMO_HFLIP = {"digits": False, "fashion": True, "glyphs": False}
#: Environment variable giving :func:`load_domain` its default ``data_dir``.
DATA_DIR_ENV = "TFEMBED_DATA_DIR"

_ON_BAD_IMAGE = ("skip", "error")

# How to obtain each dataset; used in DatasetNotFoundError messages.
_HOW_TO_GET = {
    "cub": (
        "download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
        "(https://data.caltech.edu/records/65de6-vp158) and extract it, or prepare the tfds dataset "
        "`caltech_birds2011` (`tfds build caltech_birds2011 --data_dir=DIR`) and use 'tfds:caltech_birds2011'"
    ),
    "cars": (
        "get the Stanford Cars (CARS196) data from https://ai.stanford.edu/~jkrause/cars/car_dataset.html: "
        "either car_ims.tgz + cars_annos.mat, or cars_train.tgz + cars_test.tgz + car_devkit.tgz + "
        "cars_test_annos_withlabels.mat, extracted into one directory; or prepare the tfds dataset "
        "`cars196` (`tfds build cars196 --data_dir=DIR`) and use 'tfds:cars196'"
    ),
    "sop": (
        "download Stanford_Online_Products.zip from https://cvgl.stanford.edu/projects/lifted_struct/ "
        "and extract it, or prepare the tfds dataset `stanford_online_products` "
        "(`tfds build stanford_online_products --data_dir=DIR`) and use 'tfds:stanford_online_products'"
    ),
    "inshop": (
        "download the DeepFashion 'In-shop Clothes Retrieval Benchmark' from "
        "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html: extract Img/img.zip "
        "(giving img/) next to Eval/list_eval_partition.txt (or put list_eval_partition.txt beside img/)"
    ),
    "vehicleid": (
        "request PKU VehicleID (VehicleID_V1.0) from https://www.pkuml.org/resources/pku-vehicleid.html "
        "and extract it (it holds image/ and train_test_split/)"
    ),
    "imagenet": (
        "register at https://image-net.org/ and download ILSVRC2012 (the files are not public): "
        "ILSVRC2012_img_train.tar (1000 per-class tars inside: extract each nXXXXXXXX.tar into "
        "train/nXXXXXXXX/) and ILSVRC2012_img_val.tar (50,000 images, extract into val/), plus the "
        "validation labels: ILSVRC2012_devkit_t12.tar.gz (data/ILSVRC2012_validation_ground_truth.txt "
        "and data/meta.mat; extract it beside train/) or Kaggle's LOC_val_solution.csv, or sort val/ "
        "into val/<wnid>/ folders (e.g. with the common valprep.sh); the Kaggle "
        "'imagenet-object-localization-challenge' download (ILSVRC/Data/CLS-LOC/{train,val} with "
        "LOC_val_solution.csv) works as is; or prepare the tfds dataset `imagenet2012` (manual "
        "download into DIR/downloads/manual, then `tfds build imagenet2012 --data_dir=DIR`) and use "
        "'tfds:imagenet2012'"
    ),
}

# Known sub-directory names under which a dataset may sit inside the given root.
_SUBDIRS = {
    "cub": ("CUB_200_2011", "cub", "CUB_200_2011/CUB_200_2011", "cub/CUB_200_2011"),
    "cars": ("cars196", "cars", "stanford_cars", "CARS196", "cars196/stanford_cars"),
    "sop": ("Stanford_Online_Products", "sop", "sop/Stanford_Online_Products"),
    "inshop": (
        "In-shop Clothes Retrieval Benchmark",
        "inshop",
        "InShop",
        "deepfashion_inshop",
        "inshop/In-shop Clothes Retrieval Benchmark",
    ),
    "vehicleid": ("VehicleID_V1.0", "VehicleID", "vehicleid", "vehicleid/VehicleID_V1.0"),
    "imagenet": (
        "ILSVRC2012",
        "imagenet",
        "ImageNet",
        "imagenet2012",
        "ILSVRC/Data/CLS-LOC",
        "imagenet/ILSVRC2012",
        "imagenet/ILSVRC/Data/CLS-LOC",
        "imagenet-object-localization-challenge/ILSVRC/Data/CLS-LOC",
    ),
}

# tfds datasets read_tfds understands: short domain name and the paper's class split.
_TFDS = {
    "caltech_birds2011": {"domain": "cub", "label": "label", "num_train_classes": 100},
    "cars196": {"domain": "cars", "label": "label", "num_train_classes": 98},
    "stanford_online_products": {"domain": "sop", "label": "class_id", "num_train_classes": None},
    # Not class-disjoint: tfds train -> train, validation -> test (the unlabelled tfds test split is
    # not exported); labels kept as they are (tfds orders the 1000 wnids lexicographically, the
    # same order as read_imagenet).
    "imagenet2012": {"domain": "imagenet", "label": "label", "num_train_classes": None,
                     "splits": ("train", "validation"), "keep_labels": True},
}
_TFDS_FOR_DOMAIN = {v["domain"]: k for k, v in _TFDS.items()}


# --------------------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------------------


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for. Nothing is ever downloaded.

    Attributes:
      dataset: the dataset name.
      looked_in: absolute paths that were searched.
      expected: what was expected in them.
      how_to_get: how to obtain the data.
    """

    def __init__(self, dataset: str, looked_in: Iterable[PathLike], expected: str, how_to_get: str):
        self.dataset = dataset
        self.looked_in = [os.path.abspath(os.path.expanduser(str(p))) for p in looked_in]
        self.expected = expected
        self.how_to_get = how_to_get
        lines = [f"dataset {dataset!r} not found.", f"Expected: {expected}", "Looked in:"]
        lines += [f"  {p}" for p in self.looked_in] or ["  (nowhere)"]
        lines.append(f"To get it: {how_to_get}")
        lines.append("(tfembed never downloads data itself.)")
        super().__init__("\n".join(lines))

    def __str__(self):
        return self.args[0]

    def __reduce__(self):  # picklable across processes despite the custom signature
        return (type(self), (self.dataset, self.looked_in, self.expected, self.how_to_get))


def _abs(p: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p))))


def _find_root(dataset: str, root: PathLike, markers: Sequence[str], expected: str) -> Path:
    """The first of ``root``, ``root/<known subdir>`` that holds one of ``markers``."""
    if root is None:
        raise DatasetNotFoundError(dataset, [], expected + " (no root directory was given)",
                                   _HOW_TO_GET[dataset])
    base = _abs(root)
    candidates = [base] + [base / s for s in _SUBDIRS.get(dataset, ())]
    for cand in candidates:
        if any((cand / m).is_file() for m in markers):
            return cand
    raise DatasetNotFoundError(dataset, candidates, expected, _HOW_TO_GET[dataset])


def _require(dataset: str, directory: Path, relpaths: Sequence[str], is_dir: bool = False) -> Path:
    """The first existing ``directory/relpath``; else DatasetNotFoundError naming all of them."""
    for rel in relpaths:
        p = directory / rel
        if (p.is_dir() if is_dir else p.is_file()):
            return p
    what = " or ".join(relpaths) + (" (a directory)" if is_dir else "")
    raise DatasetNotFoundError(dataset, [directory], what, _HOW_TO_GET.get(dataset, ""))


def _read_rows(path: Path, skip: int = 0) -> List[List[str]]:
    """Whitespace-separated rows of a text file, blank lines dropped, the first ``skip`` lines skipped."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return [line.split() for line in lines[skip:] if line.strip()]


def _id_sort_key(x):
    """Sort numeric ids numerically (``'10'`` after ``'9'``), everything else as strings."""
    s = str(x)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _contiguous(*groups: Iterable) -> Dict[object, int]:
    """Map class ids to ``0..n-1``: the ids of the first group (sorted) first, then the next group's
    ids not seen yet, and so on."""
    mapping: Dict[object, int] = {}
    for group in groups:
        for c in sorted(set(group), key=_id_sort_key):
            if c not in mapping:
                mapping[c] = len(mapping)
    return mapping


def _check_on_bad_image(on_bad_image: str):
    if on_bad_image not in _ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {_ON_BAD_IMAGE}, got {on_bad_image!r}")


# --------------------------------------------------------------------------------------------------
# Image verification
# --------------------------------------------------------------------------------------------------

_JPEG_PADDING = b"\x00\r\n\t "


def _image_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a usable image, or None when it is. Cheap: no full decode unless a JPEG
    does not end with its end-of-image marker (then a full decode tells truncation from trailing
    bytes after a complete image)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing file"
    if size == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
        msg = str(e).replace(repr(path), "").replace(path, "").strip(" :'\"")
        return f"unreadable image ({type(e).__name__}: {msg})"
    try:
        if fmt == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(0, size - 256))
                tail = f.read().rstrip(_JPEG_PADDING)
            if not tail.endswith(b"\xff\xd9"):
                try:
                    with Image.open(path) as im:
                        im.load()
                except Exception as e:  # noqa: BLE001
                    return f"truncated JPEG (no end-of-image marker FF D9; {type(e).__name__}: {e})"
        elif fmt == "PNG":
            with open(path, "rb") as f:
                f.seek(max(0, size - 1024))
                tail = f.read()
            if b"IEND" not in tail:
                return "truncated PNG (no IEND chunk)"
    except OSError as e:
        return f"unreadable file ({type(e).__name__}: {e})"
    return None


def verify_images(
    paths: Sequence[PathLike],
    on_bad_image: str = "skip",
    num_workers: Optional[int] = None,
    name: Optional[str] = None,
) -> Tuple[np.ndarray, List[Tuple[str, str]]]:
    """Cheaply check that every file is a readable, complete image.

    Per file: it exists and is not empty; PIL opens it and ``verify()`` passes (header, PNG CRCs);
    a JPEG ends with the end-of-image marker ``FF D9`` (else it is fully decoded to tell truncation
    from harmless trailing bytes); a PNG holds its ``IEND`` chunk. Runs in a thread pool (I/O bound).

    Args:
      paths: image file paths.
      on_bad_image: ``"skip"`` -- report bad files (logged with ``absl.logging.warning``);
        ``"error"`` -- raise ``ValueError`` naming the first bad file (in ``paths`` order) and why.
      num_workers: threads; default ``min(32, 4 * cpu_count)``.
      name: what the paths are (e.g. ``"cub/train"``), for messages.

    Returns:
      ``(good_mask, skipped)``: a bool ``[N]`` array, True for usable images, and ``(path, reason)``
      for each bad one, in ``paths`` order.
    """
    _check_on_bad_image(on_bad_image)
    paths = [str(p) for p in paths]
    n = len(paths)
    good = np.ones(n, dtype=bool)
    if n == 0:
        return good, []
    workers = num_workers or min(32, 4 * (os.cpu_count() or 1))
    chunk = max(1, min(256, math.ceil(n / workers)))

    def check_chunk(start):
        return [_image_problem(p) for p in paths[start:start + chunk]]

    problems: List[Optional[str]] = []
    if workers == 1 or n <= chunk:
        problems = [_image_problem(p) for p in paths]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(check_chunk, range(0, n, chunk)):
                problems.extend(part)
    skipped = [(p, why) for p, why in zip(paths, problems) if why is not None]
    for i, why in enumerate(problems):
        if why is not None:
            good[i] = False
    if skipped:
        what = f" of {name}" if name else ""
        if on_bad_image == "error":
            more = f" ({len(skipped) - 1} more bad image(s))" if len(skipped) > 1 else ""
            raise ValueError(f"bad image{what}: {skipped[0][0]}: {skipped[0][1]}{more}")
        first = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        logging.warning("skipping %d of %d images%s that are unreadable: %s%s", len(skipped), n,
                        what, first, " ..." if len(skipped) > 5 else "")
    return good, skipped


def _make_split(
    paths: Sequence[PathLike],
    labels: Sequence[int],
    boxes: Optional[np.ndarray],
    verify: bool,
    on_bad_image: str,
    name: str,
) -> Split:
    paths = np.asarray([str(p) for p in paths], dtype=object)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    skipped: List[Tuple[str, str]] = []
    if verify:
        good, skipped = verify_images(paths, on_bad_image=on_bad_image, name=name)
        if not good.all():
            paths, labels = paths[good], labels[good]
            if boxes is not None:
                boxes = boxes[good]
    return Split(labels=labels, paths=paths, boxes=boxes, skipped=skipped)


def _domain_from_lists(
    name: str,
    splits: Dict[str, Tuple[Sequence[PathLike], Sequence[int], Optional[np.ndarray]]],
    num_classes: int,
    verify: bool,
    on_bad_image: str,
) -> Domain:
    _check_on_bad_image(on_bad_image)
    built = {
        s: _make_split(p, l, b, verify, on_bad_image, f"{name}/{s}") for s, (p, l, b) in splits.items()
    }
    return Domain(name=name, splits=built, num_classes=num_classes)


def _split_by_class(paths, classes, boxes, is_train: Callable[[object], bool], mapping):
    """Partition parallel lists into train/test tuples by class, keeping the listing order."""
    out = {"train": ([], [], []), "test": ([], [], [])}
    for i, (p, c) in enumerate(zip(paths, classes)):
        s = out["train" if is_train(c) else "test"]
        s[0].append(p)
        s[1].append(mapping[c])
        s[2].append(i)
    result = {}
    for s, (ps, ls, idx) in out.items():
        b = None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)[idx].reshape(-1, 4)
        result[s] = (ps, ls, b)
    return result


# --------------------------------------------------------------------------------------------------
# On-disk readers
# --------------------------------------------------------------------------------------------------


def read_cub(root: PathLike, verify: bool = True, on_bad_image: str = "skip") -> Domain:
    """CUB-200-2011 in its official layout; classes 1-100 train, 101-200 test.

    ``root`` is the ``CUB_200_2011`` directory or its parent. Uses ``images.txt`` (``id relpath``),
    ``image_class_labels.txt`` (``id class``), optional ``bounding_boxes.txt`` (``id x y w h``,
    giving :attr:`Split.boxes`) and the images under ``images/``.
    """
    _check_on_bad_image(on_bad_image)
    d = _find_root("cub", root, ["images.txt"],
                   "CUB_200_2011/images.txt, image_class_labels.txt and images/ (official layout)")
    labels_file = _require("cub", d, ["image_class_labels.txt"])
    image_dir = _require("cub", d, ["images"], is_dir=True)
    rel = {r[0]: r[1] for r in _read_rows(d / "images.txt")}
    cls = {r[0]: int(r[1]) for r in _read_rows(labels_file)}
    ids = [i for i in rel]  # file order
    missing = [i for i in ids if i not in cls]
    if missing:
        raise ValueError(f"{labels_file}: no class for image id(s) {missing[:5]}")
    box_map = None
    if (d / "bounding_boxes.txt").is_file():
        box_map = {r[0]: [float(v) for v in r[1:5]] for r in _read_rows(d / "bounding_boxes.txt")}
    paths = [str(image_dir / rel[i]) for i in ids]
    classes = [cls[i] for i in ids]
    boxes = None
    if box_map is not None:
        nan = [math.nan] * 4
        boxes = np.asarray([box_map.get(i, nan) for i in ids], np.float32).reshape(-1, 4)
    is_train = lambda c: c <= 100  # noqa: E731
    mapping = _contiguous([c for c in classes if is_train(c)], [c for c in classes if not is_train(c)])
    splits = _split_by_class(paths, classes, boxes, is_train, mapping)
    return _domain_from_lists("cub", splits, len(mapping), verify, on_bad_image)


def read_cars196(root: PathLike, verify: bool = True, on_bad_image: str = "skip") -> Domain:
    """Stanford Cars (CARS196); classes 1-98 train, 99-196 test, all images of both official splits.

    Layouts: ``cars_annos.mat`` (fields ``relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2,
    class, test``) with ``car_ims/``; or the devkit: ``devkit/cars_train_annos.mat`` and
    ``cars_test_annos_withlabels.mat`` (in ``devkit/`` or the root), images in ``cars_train/`` and
    ``cars_test/``. Boxes ``(x1, y1, x2, y2)`` become ``(x, y, w, h)``.
    """
    _check_on_bad_image(on_bad_image)
    d = _find_root("cars", root, ["cars_annos.mat", "devkit/cars_train_annos.mat"],
                   "cars_annos.mat with car_ims/, or devkit/cars_train_annos.mat + "
                   "cars_test_annos_withlabels.mat with cars_train/ and cars_test/")
    rows: List[Tuple[str, int, List[float]]] = []
    if (d / "cars_annos.mat").is_file():
        _require("cars", d, ["car_ims"], is_dir=True)
        for a in _mat_struct_rows(d / "cars_annos.mat", "annotations"):
            rows.append((str(d / str(a["relative_im_path"])), int(a["class"]),
                         [a.get("bbox_x1"), a.get("bbox_y1"), a.get("bbox_x2"), a.get("bbox_y2")]))
    else:
        test_annos = _require("cars", d, ["devkit/cars_test_annos_withlabels.mat",
                                          "cars_test_annos_withlabels.mat"])
        for annos, folder in ((d / "devkit" / "cars_train_annos.mat", "cars_train"),
                              (test_annos, "cars_test")):
            img_dir = _require("cars", d, [f"{folder}/{folder}", folder], is_dir=True)
            for a in _mat_struct_rows(annos, "annotations"):
                if a.get("class") is None:
                    raise ValueError(f"{annos}: annotations without 'class' (the test annotations "
                                     "must be cars_test_annos_withlabels.mat)")
                rows.append((str(img_dir / str(a["fname"])), int(a["class"]),
                             [a.get("bbox_x1"), a.get("bbox_y1"), a.get("bbox_x2"), a.get("bbox_y2")]))
    paths = [r[0] for r in rows]
    classes = [r[1] for r in rows]
    xyxy = np.asarray([[math.nan if v is None else float(v) for v in r[2]] for r in rows],
                      np.float32).reshape(-1, 4)
    boxes = np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1)
    is_train = lambda c: c <= 98  # noqa: E731
    mapping = _contiguous([c for c in classes if is_train(c)], [c for c in classes if not is_train(c)])
    splits = _split_by_class(paths, classes, boxes, is_train, mapping)
    return _domain_from_lists("cars", splits, len(mapping), verify, on_bad_image)


def read_sop(root: PathLike, verify: bool = True, on_bad_image: str = "skip") -> Domain:
    """Stanford Online Products: ``Ebay_train.txt`` classes train, ``Ebay_test.txt`` classes test.

    ``root`` is ``Stanford_Online_Products/`` or its parent; the list files have the header
    ``image_id class_id super_class_id path`` with paths relative to that directory.
    """
    _check_on_bad_image(on_bad_image)
    d = _find_root("sop", root, ["Ebay_train.txt"],
                   "Stanford_Online_Products/Ebay_train.txt and Ebay_test.txt")
    _require("sop", d, ["Ebay_test.txt"])
    lists = {}
    for split, fname in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        rows = _read_rows(d / fname)
        if rows and not rows[0][0].isdigit():  # header
            rows = rows[1:]
        lists[split] = [(str(d / r[3]), int(r[1])) for r in rows]
    mapping = _contiguous([c for _, c in lists["train"]], [c for _, c in lists["test"]])
    overlap = {c for _, c in lists["train"]} & {c for _, c in lists["test"]}
    if overlap:
        logging.warning("sop: %d class ids occur in both Ebay_train.txt and Ebay_test.txt", len(overlap))
    splits = {s: ([p for p, _ in v], [mapping[c] for _, c in v], None) for s, v in lists.items()}
    return _domain_from_lists("sop", splits, len(mapping), verify, on_bad_image)


def read_inshop(root: PathLike, verify: bool = True, on_bad_image: str = "skip") -> Domain:
    """DeepFashion In-shop Clothes Retrieval: splits ``train``, ``query`` and ``gallery``.

    Reads ``list_eval_partition.txt`` (in ``root`` or ``root/Eval``; first line the count, second
    the header ``image_name item_id evaluation_status``). Image paths in it start with ``img/`` and
    are resolved against the directory holding ``img/`` (``root`` or ``root/Img``). Item ids become
    contiguous labels, train items first; query and gallery share the test labels.
    """
    _check_on_bad_image(on_bad_image)
    d = _find_root("inshop", root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"],
                   "list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/")
    part = _require("inshop", d, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"])
    img_base = _require("inshop", d, ["img", "Img/img"], is_dir=True).parent
    rows = _read_rows(part)
    # First line: number of images; second: the header. Be lenient about either being absent.
    while rows and (len(rows[0]) < 3 or rows[0][2] == "evaluation_status"):
        rows = rows[1:]
    by_split: Dict[str, List[Tuple[str, str]]] = {"train": [], "query": [], "gallery": []}
    for r in rows:
        status = r[2]
        if status not in by_split:
            raise ValueError(f"{part}: unknown evaluation_status {status!r} in row {' '.join(r)}")
        by_split[status].append((str(img_base / r[0]), r[1]))
    mapping = _contiguous([i for _, i in by_split["train"]],
                          [i for _, i in by_split["query"] + by_split["gallery"]])
    splits = {s: ([p for p, _ in v], [mapping[i] for _, i in v], None) for s, v in by_split.items()}
    return _domain_from_lists("inshop", splits, len(mapping), verify, on_bad_image)


def read_vehicleid(
    root: PathLike,
    test_list: str = "test_list_13164.txt",
    verify: bool = True,
    on_bad_image: str = "skip",
) -> Domain:
    """PKU VehicleID: ``train_test_split/train_list.txt`` and ``train_test_split/<test_list>``
    (``imgname vehicle_id`` per line; images ``image/<imgname>.jpg``). Splits ``train``/``test``;
    vehicle ids become contiguous labels, train ids first. ``test_list`` picks the test size
    (``test_list_800.txt``, ``test_list_1600.txt``, ``test_list_2400.txt``, ``test_list_3200.txt``,
    ``test_list_6000.txt``, ``test_list_13164.txt``)."""
    _check_on_bad_image(on_bad_image)
    d = _find_root("vehicleid", root, ["train_test_split/train_list.txt"],
                   f"train_test_split/train_list.txt, train_test_split/{test_list} and image/")
    test_file = _require("vehicleid", d, [f"train_test_split/{test_list}"])
    img_dir = _require("vehicleid", d, ["image"], is_dir=True)
    lists = {}
    for split, f in (("train", d / "train_test_split" / "train_list.txt"), ("test", test_file)):
        lists[split] = [(str(img_dir / f"{r[0]}.jpg"), r[1]) for r in _read_rows(f)]
    mapping = _contiguous([v for _, v in lists["train"]], [v for _, v in lists["test"]])
    splits = {s: ([p for p, _ in v], [mapping[i] for _, i in v], None) for s, v in lists.items()}
    return _domain_from_lists("vehicleid", splits, len(mapping), verify, on_bad_image)


def _list_class_dirs(base: Path) -> Dict[str, List[str]]:
    """``{class_name: sorted image paths}`` for the non-hidden sub-directories of ``base`` that hold
    images (searched recursively inside each class directory)."""
    out = {}
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in IMAGE_EXTENSIONS:
                    files.append(os.path.join(dirpath, fn))
        if files:
            out[entry.name] = files
        else:
            logging.info("read_folder: %s holds no images, not a class", entry.path)
    return out


def read_folder(
    root: PathLike,
    test_fraction: float = 0.5,
    verify: bool = True,
    on_bad_image: str = "skip",
    name: Optional[str] = None,
) -> Domain:
    """A class-per-folder tree ``root/<class_name>/<images>`` split by class.

    Classes (sub-directories holding images, sorted by name) are split class-disjointly: the first
    ``ceil(n * (1 - test_fraction))`` train, the rest test. If ``root/train`` and ``root/test`` both
    exist they are the splits instead (train classes get the first labels; a class name present in
    both keeps one label, with a warning that the split is then not class-disjoint). Image files:
    jpg, jpeg, png, bmp, gif in any letter case (not WebP, which TensorFlow cannot decode). ``name`` defaults to the folder's name.
    """
    _check_on_bad_image(on_bad_image)
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    how = "put the images in ROOT/<class_name>/ (one sub-directory per class)"
    if root is None:
        raise DatasetNotFoundError("folder", [], "a class-per-folder directory", how)
    d = _abs(root)
    if not d.is_dir():
        raise DatasetNotFoundError("folder", [d], "a directory with one sub-directory per class", how)
    name = name or d.name
    if (d / "train").is_dir() and (d / "test").is_dir():
        per_split = {s: _list_class_dirs(d / s) for s in ("train", "test")}
        both = sorted(set(per_split["train"]) & set(per_split["test"]))
        if both:
            logging.warning("read_folder(%s): %d class(es) in both train/ and test/ (e.g. %s); they "
                            "share a label, the split is not class-disjoint", d, len(both), both[:3])
        mapping = _contiguous(per_split["train"], per_split["test"])
        if not mapping:
            raise DatasetNotFoundError("folder", [d / "train", d / "test"],
                                       "class sub-directories holding images", how)
        splits = {}
        for s, classes in per_split.items():
            paths = [p for c in classes for p in classes[c]]
            labels = [mapping[c] for c in classes for _ in classes[c]]
            splits[s] = (paths, labels, None)
        return _domain_from_lists(name, splits, len(mapping), verify, on_bad_image)

    classes = _list_class_dirs(d)
    if not classes:
        raise DatasetNotFoundError("folder", [d], "class sub-directories holding image files "
                                   f"({', '.join(IMAGE_EXTENSIONS)})", how)
    names = sorted(classes)
    index = {c: i for i, c in enumerate(names)}
    n_train = int(math.ceil(len(names) * (1.0 - test_fraction) - 1e-9))
    splits = {}
    for s, subset in (("train", names[:n_train]), ("test", names[n_train:])):
        paths = [p for c in subset for p in classes[c]]
        labels = [index[c] for c in subset for _ in classes[c]]
        splits[s] = (paths, labels, None)
    return _domain_from_lists(name, splits, len(names), verify, on_bad_image)


# --------------------------------------------------------------------------------------------------
# ImageNet (ILSVRC2012)
# --------------------------------------------------------------------------------------------------

#: File name extensions (lower case) :func:`read_imagenet` lists (ILSVRC2012 uses ``.JPEG``).
IMAGENET_EXTENSIONS = (".jpeg", ".jpg", ".png")
_IMAGENET_VAL_DIRS = ("val", "validation")
_LOC_CSV = "LOC_val_solution.csv"
_DEVKIT_GT = "ILSVRC2012_validation_ground_truth.txt"
_DEVKIT_META = "meta.mat"
# Where the devkit's data/ files may sit, relative to a directory searched for label files.
_DEVKIT_SUBDIRS = ("", "ILSVRC2012_devkit_t12/data", "devkit/data", "ILSVRC2012_devkit_t12",
                   "devkit")


def _scan_image_names(directory: str) -> List[str]:
    """Sorted names of the image files directly in ``directory``: one ``os.scandir``, no per-file
    ``stat`` for regular files (the directory entry type is enough). Hidden files (``.*``, e.g.
    macOS ``._*`` companions) are left out."""
    names = []
    with os.scandir(directory) as it:
        for e in it:
            n = e.name
            if (n[:1] != "." and os.path.splitext(n)[1].lower() in IMAGENET_EXTENSIONS
                    and e.is_file()):
                names.append(n)
    names.sort()
    return names


def _scan_imagenet_dir(base: Path) -> Tuple[Dict[str, List[str]], List[str], int]:
    """``({class folder: sorted image paths}, sorted flat image names, number of .tar files)`` for
    one directory of the layout. Class folders are listed in parallel threads (I/O bound)."""
    dirs, flat, tars = [], [], 0
    with os.scandir(base) as it:
        for e in it:
            n = e.name
            if n[:1] == ".":
                continue
            ext = os.path.splitext(n)[1].lower()
            if ext in IMAGENET_EXTENSIONS and e.is_file():
                flat.append(n)
            elif e.is_dir():
                dirs.append(n)
            elif ext == ".tar":
                tars += 1
    dirs.sort()
    flat.sort()
    prefix = str(base) + os.sep

    def listing(d):
        return [prefix + d + os.sep + n for n in _scan_image_names(prefix + d)]

    workers = max(1, min(32, 4 * (os.cpu_count() or 1), len(dirs)))
    if workers == 1:
        lists = [listing(d) for d in dirs]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            lists = list(pool.map(listing, dirs))
    classes = {}
    for d, files in zip(dirs, lists):
        if files:
            classes[d] = files
        else:
            logging.info("read_imagenet: %s holds no images, not a class", base / d)
    return classes, flat, tars


def _mat_struct_rows(path: Path, key: str) -> List[Dict[str, object]]:
    """The records of the struct array ``key`` of a MATLAB file, fields as Python scalars/str."""
    import scipy.io  # deferred: only CARS196 and the ImageNet devkit layout need scipy

    mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=True)
    if key not in mat:
        raise ValueError(f"{path}: no {key!r} struct")
    arr = np.atleast_1d(mat[key]).ravel()
    names = arr.dtype.names or ()

    def scalar(v):
        v = np.asarray(v)
        if v.size == 0:
            return None
        v = v.ravel()[0]
        return v.item() if hasattr(v, "item") else v

    return [{k: scalar(r[k]) for k in names} for r in arr]


def _imagenet_val_number(name: str) -> Optional[int]:
    """``ILSVRC2012_val_00000042.JPEG`` -> 42 (None for other names)."""
    tail = os.path.splitext(name)[0].rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _read_loc_csv(path: Path) -> Dict[str, str]:
    """Kaggle ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the prediction string starts
    with the wnid of the image's class): ``{image id (file stem): wnid}``."""
    import csv

    out = {}
    with open(path, "r", encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0] == "ImageId" or not row[1].split():
                continue
            out[row[0].strip()] = row[1].split()[0]
    if not out:
        raise ValueError(f"{path}: no 'ImageId,PredictionString' rows")
    return out


def _read_devkit_labels(gt: Path, meta: Path) -> Dict[int, str]:
    """ILSVRC2012 devkit: ``{validation image number (1-based): wnid}`` from the ground-truth file
    (one ``ILSVRC2012_ID`` per line, line i for ``ILSVRC2012_val_<i>``) and ``meta.mat``
    (``synsets`` with ``ILSVRC2012_ID`` and ``WNID``; ids 1..1000 are the leaf classes)."""
    id_to_wnid = {}
    for r in _mat_struct_rows(meta, "synsets"):
        if r.get("ILSVRC2012_ID") is None or r.get("WNID") is None:
            raise ValueError(f"{meta}: synsets without ILSVRC2012_ID / WNID fields")
        id_to_wnid[int(r["ILSVRC2012_ID"])] = str(r["WNID"])
    out = {}
    for i, row in enumerate(_read_rows(gt), start=1):
        cid = int(row[0])
        if cid not in id_to_wnid:
            raise ValueError(f"{gt}: line {i}: ILSVRC2012_ID {cid} is not in {meta}")
        out[i] = id_to_wnid[cid]
    return out


def _imagenet_flat_val_labels(label_dirs: Sequence[Path], val_dir: Path,
                              names: Sequence[str]) -> Tuple[List[str], Path]:
    """The wnid of each flat validation image ``names`` (files in ``val_dir``) and the label file
    used: ``LOC_val_solution.csv`` first, else the devkit files, searched in ``label_dirs``."""
    for d in label_dirs:
        csv_path = d / _LOC_CSV
        if csv_path.is_file():
            table = _read_loc_csv(csv_path)
            wnids = [table.get(os.path.splitext(n)[0]) for n in names]
            source = csv_path
            break
        found = None
        for sub in _DEVKIT_SUBDIRS:
            gt, meta = d / sub / _DEVKIT_GT, d / sub / _DEVKIT_META
            if gt.is_file() and meta.is_file():
                found = (gt, meta)
                break
        if found:
            table = _read_devkit_labels(*found)
            wnids = [table.get(_imagenet_val_number(n)) for n in names]
            source = found[0]
            break
    else:
        devkit = ", ".join(f"{sub + '/' if sub else ''}{_DEVKIT_GT} + meta.mat"
                           for sub in _DEVKIT_SUBDIRS)
        raise DatasetNotFoundError(
            "imagenet", label_dirs,
            f"labels for the {len(names)} validation images directly in {val_dir}: {_LOC_CSV} "
            f"(Kaggle) or the ILSVRC2012 devkit's {_DEVKIT_GT} with {_DEVKIT_META} in the same "
            f"directory (looked for {devkit}); or val/ sorted into val/<wnid>/ folders",
            _HOW_TO_GET["imagenet"])
    missing = [n for n, w in zip(names, wnids) if w is None]
    if missing:
        raise ValueError(f"{source}: no label for {len(missing)} of the {len(names)} images in "
                         f"{val_dir} (e.g. {missing[:3]})")
    return wnids, source


def read_imagenet(root: PathLike, verify: bool = False, on_bad_image: str = "skip") -> Domain:
    """ImageNet (ILSVRC2012): ``train`` = the training images, ``test`` = the validation images
    (paper 000 §5.3: 1,281,167 and 50,000). Unlike the other domains train and test share the
    same classes.

    ``root`` is the directory holding ``train/`` or one containing it under a known name
    (``ILSVRC2012``, ``imagenet``, ``ILSVRC/Data/CLS-LOC`` -- the Kaggle download --, ...).
    Layouts:

    * ``train/<wnid>/*.JPEG`` (one folder per synset, the per-class tars extracted);
    * ``val/<wnid>/*.JPEG`` (the common "valprep" layout), or flat ``val/ILSVRC2012_val_*.JPEG``
      labelled by Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the string
      starting with the wnid) or by the devkit's ``ILSVRC2012_validation_ground_truth.txt``
      (1-based ``ILSVRC2012_ID`` per line) with ``meta.mat`` (``synsets``: ``ILSVRC2012_ID`` ->
      ``WNID``). Label files are looked for beside ``train/``, in its parent, in ``root`` and,
      for ``ILSVRC/Data/CLS-LOC``, in the Kaggle root; the devkit files also in
      ``ILSVRC2012_devkit_t12/data/`` and ``devkit/data/``. ``validation/`` works as ``val/``.

    Labels: the wnids sorted lexicographically -> ``0..num_classes-1`` (the standard
    Keras / tfds ``imagenet2012`` index order), the same mapping for train and test. Files
    ``.JPEG``/``.jpeg``/``.jpg``/``.png`` in any letter case, listed with ``os.scandir`` (no glob,
    no per-file stat), sorted by name within a class; flat validation images by name.

    ``verify`` defaults to False because checking all 1.33M files takes a long time. Unverified,
    an unreadable file is only met when the training pipeline decodes it
    (``pipeline.make_loader`` -> ``transforms.decode_image`` -> ``tf.io.decode_image``):
    that raises ``tf.errors.InvalidArgumentError``, which ends the ``tf.data`` iteration and so
    stops training -- nothing skips it. The official archives hold no unreadable file; their
    oddities decode fine, because ``tf.io.decode_image`` sniffs the content rather than trusting
    the extension: the CMYK JPEGs (22 training images and one validation image) and the PNG saved
    as ``n02105855_2933.JPEG``; :func:`verify_images` accepts them too. ``verify=True`` checks every
    file with :func:`verify_images` and skips (``on_bad_image="skip"``, counted in
    :attr:`Split.skipped`) or raises (``"error"``) on bad ones.

    Missing data, or flat validation images without a label file, raise
    :class:`DatasetNotFoundError` naming every path and file looked for.
    """
    _check_on_bad_image(on_bad_image)
    expected = ("train/<wnid>/*.JPEG (one folder per class) and val/ (val/<wnid>/*.JPEG, or flat "
                f"val/ILSVRC2012_val_*.JPEG with {_LOC_CSV} or the devkit's {_DEVKIT_GT} + "
                f"{_DEVKIT_META})")
    if root is None:
        raise DatasetNotFoundError("imagenet", [], expected + " (no root directory was given)",
                                   _HOW_TO_GET["imagenet"])
    base = _abs(root)
    candidates = [base] + [base / s for s in _SUBDIRS["imagenet"]]
    d = next((c for c in candidates if (c / "train").is_dir()), None)
    if d is None:
        raise DatasetNotFoundError("imagenet", candidates, expected, _HOW_TO_GET["imagenet"])
    val_dir = _require("imagenet", d, _IMAGENET_VAL_DIRS, is_dir=True)

    train, train_flat, tars = _scan_imagenet_dir(d / "train")
    if not train:
        hint = (f" ({tars} .tar files found: extract each per-class nXXXXXXXX.tar into "
                "train/nXXXXXXXX/)" if tars else "")
        raise DatasetNotFoundError("imagenet", [d / "train"],
                                   "class folders train/<wnid>/ holding images" + hint,
                                   _HOW_TO_GET["imagenet"])
    if train_flat:
        logging.warning("read_imagenet: %d images directly in %s are not in a class folder; "
                        "ignored", len(train_flat), d / "train")

    val, val_flat, _ = _scan_imagenet_dir(val_dir)
    if val:
        if val_flat:
            logging.warning("read_imagenet: %s has class folders and %d images outside them; the "
                            "loose images are ignored", val_dir, len(val_flat))
        val_paths = [p for w in val for p in val[w]]
        val_wnids = [w for w in val for _ in val[w]]
    elif val_flat:
        label_dirs = [d, d.parent, base]
        if d.parts[-3:] == ("ILSVRC", "Data", "CLS-LOC"):
            label_dirs.append(d.parents[2])  # Kaggle: LOC_val_solution.csv beside ILSVRC/
        label_dirs = list(dict.fromkeys(label_dirs))
        val_wnids, source = _imagenet_flat_val_labels(label_dirs, val_dir, val_flat)
        logging.info("read_imagenet: validation labels from %s", source)
        prefix = str(val_dir) + os.sep
        val_paths = [prefix + n for n in val_flat]
    else:
        raise DatasetNotFoundError("imagenet", [val_dir], "validation images in val/ (flat or in "
                                   "val/<wnid>/ folders)", _HOW_TO_GET["imagenet"])

    train_set, val_set = set(train), set(val_wnids)
    if train_set != val_set:
        logging.warning("read_imagenet: %d classes only in train, %d only in val (e.g. %s); labels "
                        "cover the union", len(train_set - val_set), len(val_set - train_set),
                        sorted(train_set ^ val_set)[:3])
    index = {w: i for i, w in enumerate(sorted(train_set | val_set))}
    train_labels = np.concatenate([np.full(len(train[w]), index[w], np.int64) for w in train])
    train_paths = [p for w in train for p in train[w]]
    val_labels = np.fromiter((index[w] for w in val_wnids), np.int64, len(val_wnids))
    splits = {"train": (train_paths, train_labels, None), "test": (val_paths, val_labels, None)}
    return _domain_from_lists("imagenet", splits, len(index), verify, on_bad_image)


# --------------------------------------------------------------------------------------------------
# tensorflow-datasets
# --------------------------------------------------------------------------------------------------

_COMPLETE = "_COMPLETE"
_INDEX = "index.tsv"


def _tfds_builder(name: str, data_dir: Optional[PathLike]):
    """``tfds.builder(name, data_dir=...)`` (a separate function so tests can replace it)."""
    import tensorflow_datasets as tfds  # deferred: importing tfds is slow

    return tfds.builder(name, data_dir=None if data_dir is None else str(_abs(data_dir)))


def _default_tfds_data_dir() -> Path:
    return _abs(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def _default_cache_dir(name: str) -> Path:
    return _abs(Path("~/.cache/tfembed/tfds") / name)


def _image_ext(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def _atomic_write(path: Path, data: Union[bytes, str]):
    atomic_write(path, lambda f: f.write(data), "wb" if isinstance(data, bytes) else "w",
                 fsync=False)


def _read_cache(cache_dir: Path) -> Optional[dict]:
    """The ``_COMPLETE`` record of a finished export, or None."""
    try:
        with open(cache_dir / _COMPLETE, "r", encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not (cache_dir / _INDEX).is_file():
        return None
    return info


def _export_tfds(builder, name: str, label_key: str, cache_dir: Path,
                 splits: Sequence[str] = ("train", "test")) -> dict:
    """Write every example of the tfds ``splits`` as its encoded image to ``cache_dir`` (each file
    via a temporary name and a rename; files already written by an interrupted export are kept),
    then the index, then ``_COMPLETE``."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    decoders = {k: tfds.decode.SkipDecoding() for k in ("image", "segmentation_mask") if k in features}
    cache_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in splits:
        ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
        for i, ex in enumerate(ds.as_numpy_iterator()):
            data = bytes(ex["image"])
            rel = Path("images") / split / f"{i // 1000:04d}" / f"{i:07d}{_image_ext(data)}"
            target = cache_dir / rel
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(target, data)
            box = "-"
            if "bbox" in ex:
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        w, h = im.size
                    ymin, xmin, ymax, xmax = [float(v) for v in np.asarray(ex["bbox"]).ravel()[:4]]
                    box = " ".join(f"{v:.2f}" for v in
                                   (xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h))
                except Exception:  # noqa: BLE001 - an unreadable image gets no box; verify skips it
                    box = "-"
            rows.append(f"{rel.as_posix()}\t{split}\t{int(ex[label_key])}\t{box}")
            if (len(rows) % 10000) == 0:
                logging.info("tfds %s: exported %d images to %s", name, len(rows), cache_dir)
    _atomic_write(cache_dir / _INDEX, "\n".join(rows) + "\n")
    info = {"name": name, "version": str(getattr(builder, "version", "")), "num_examples": len(rows)}
    _atomic_write(cache_dir / _COMPLETE, json.dumps(info))
    logging.info("tfds %s: exported %d images to %s", name, len(rows), cache_dir)
    return info


def read_tfds(
    name: str,
    data_dir: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    verify: bool = True,
    on_bad_image: str = "skip",
) -> Domain:
    """A dataset already prepared by tensorflow-datasets, as a path-based Domain.

    Supported: ``caltech_birds2011`` (labels < 100 train), ``cars196`` (labels < 98 train; both
    tfds splits merged), ``stanford_online_products`` (tfds train/test, labels from
    ``class_id``) and ``imagenet2012`` (tfds train -> train, validation -> test, the same 1000
    classes in both, tfds labels kept: lexicographic wnid order as in :func:`read_imagenet`; the
    export copies all ~1.33M JPEGs, about as much disk as the tfds data). The encoded images are
    written once to ``cache_dir`` (default ``~/.cache/tfembed/tfds/<name>``) and re-used on later
    calls; an interrupted export has no ``_COMPLETE`` marker and is redone. Never downloads: when tfds does not have the data in
    ``data_dir`` (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) it raises
    :class:`DatasetNotFoundError`.
    """
    _check_on_bad_image(on_bad_image)
    if name not in _TFDS:
        raise ValueError(f"read_tfds supports {sorted(_TFDS)}, not {name!r} (the class split of "
                         "other datasets is not defined here; export it as class folders and use "
                         "read_folder)")
    spec = _TFDS[name]
    cache = _abs(cache_dir) if cache_dir is not None else _default_cache_dir(name)
    done = _read_cache(cache)
    tfds_dir = _abs(data_dir) if data_dir is not None else _default_tfds_data_dir()
    builder = _tfds_builder(name, data_dir)
    prepared = bool(builder.is_prepared())
    version = str(getattr(builder, "version", ""))
    if done is None or (prepared and done.get("version") != version):
        if not prepared:
            looked = [getattr(builder, "data_dir", None) or tfds_dir / name, cache / _COMPLETE]
            raise DatasetNotFoundError(
                f"tfds:{name}", looked,
                f"the tfds dataset {name!r} prepared (dataset_info.json and TFRecord files) in the "
                "tfds data dir, or a finished export of it in the cache directory",
                f"prepare it once with network access: `tfds build {name} --data_dir={tfds_dir}` "
                "(some datasets need a manual download first, see the tfds catalog page "
                f"https://www.tensorflow.org/datasets/catalog/{name})",
            )
        logging.info("tfds %s: exporting the encoded images to %s (once)", name, cache)
        _export_tfds(builder, name, spec["label"], cache, spec.get("splits", ("train", "test")))
    rows = [line.split("\t") for line in
            (cache / _INDEX).read_text(encoding="utf-8").splitlines() if line]
    paths = [str(cache / r[0]) for r in rows]
    tfds_split = [r[1] for r in rows]
    raw = [int(r[2]) for r in rows]
    has_box = any(r[3] != "-" for r in rows)
    boxes = None
    if has_box:
        boxes = np.asarray([[float(v) for v in r[3].split()] if r[3] != "-" else [math.nan] * 4
                            for r in rows], np.float32).reshape(-1, 4)
    if spec["num_train_classes"] is None:  # the tfds split decides (SOP)
        in_train = [s == "train" for s in tfds_split]
    else:  # the paper's class split over both tfds splits
        in_train = [c < spec["num_train_classes"] for c in raw]
    train_ids = [c for c, t in zip(raw, in_train) if t]
    test_ids = [c for c, t in zip(raw, in_train) if not t]
    overlap = set(train_ids) & set(test_ids)
    if spec.get("keep_labels"):  # train and test share classes by design (imagenet2012)
        mapping = {c: c for c in sorted(set(raw))}
        num_classes = max(raw) + 1 if raw else 0
    else:
        if overlap:
            logging.warning("tfds %s: %d class ids occur in both train and test; they share a "
                            "label", name, len(overlap))
        mapping = _contiguous(train_ids, test_ids)
        num_classes = len(mapping)
    out = {"train": ([], [], []), "test": ([], [], [])}
    for i, (p, c, t) in enumerate(zip(paths, raw, in_train)):
        s = out["train" if t else "test"]
        s[0].append(p)
        s[1].append(mapping[c])
        s[2].append(i)
    splits = {s: (ps, ls, None if boxes is None else boxes[idx].reshape(-1, 4))
              for s, (ps, ls, idx) in out.items()}
    return _domain_from_lists(spec["domain"], splits, num_classes, verify, on_bad_image)


# --------------------------------------------------------------------------------------------------
# Demo domains
# --------------------------------------------------------------------------------------------------


_DEMO_KEYS = ("images", "labels", "train_classes", "test_classes")


def _npz_arrays(f) -> Dict[str, np.ndarray]:
    # Only the numeric arrays: the string metadata (class_names, source, license) is not needed
    # and may be stored as object arrays, which would need allow_pickle.
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in _DEMO_KEYS if k in z.files}


def read_demo(name: str, path: Optional[PathLike] = None) -> Domain:
    """A demo domain (``digits``, ``fashion``, ``glyphs``) held in memory.

    Loads ``tfembed/data/demo/<name>.npz`` (package data; or ``path``) with ``images`` uint8
    ``[N, H, W]`` (grey) or ``[N, H, W, C]``, ``labels``, ``train_classes`` and ``test_classes``.
    Returns splits ``train``/``test`` with images ``[N, H, W, C]`` and labels remapped so that the
    train classes are ``0..n_train-1`` (sorted by original id) and the test classes follow.
    ``Domain.hflip`` is ``DEMO_HFLIP[name]``: False for the text domains ``digits`` and
    ``glyphs`` (a mirror image is another class), True otherwise.
    """
    if path is not None:
        p = _abs(path)
        if not p.is_file():
            raise DatasetNotFoundError(name, [p], f"a demo .npz file ({name}.npz)",
                                       "pass the path of an existing .npz demo file")
        arrays = _npz_arrays(str(p))
        where = str(p)
    else:
        ref = importlib.resources.files("tfembed.data") / "demo" / f"{name}.npz"
        if not ref.is_file():
            raise DatasetNotFoundError(
                name, [str(ref)], f"{name}.npz (package data tfembed/data/demo/{name}.npz)",
                "it ships with tfembed: reinstall the package (pip install --force-reinstall tfembed) "
                "or restore tfembed/data/demo/ from the source tree",
            )
        with ref.open("rb") as f:
            arrays = _npz_arrays(io.BytesIO(f.read()))
        where = str(ref)
    for key in _DEMO_KEYS:
        if key not in arrays:
            raise ValueError(f"{where}: missing array {key!r}")
    images = np.asarray(arrays["images"])
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C], got {images.shape}")
    labels = np.asarray(arrays["labels"]).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels")
    train_c = [int(c) for c in np.asarray(arrays["train_classes"]).ravel()]
    test_c = [int(c) for c in np.asarray(arrays["test_classes"]).ravel()]
    both = set(train_c) & set(test_c)
    if both:
        raise ValueError(f"{where}: classes {sorted(both)[:5]} are in both train_classes and "
                         "test_classes")
    mapping = _contiguous(train_c, test_c)
    splits = {}
    for s, cls in (("train", train_c), ("test", test_c)):
        mask = np.isin(labels, np.asarray(cls, dtype=np.int64))
        new = np.asarray([mapping[int(c)] for c in labels[mask]], dtype=np.int64)
        splits[s] = Split(labels=new, images=images[mask])
    dropped = len(labels) - sum(len(s) for s in splits.values())
    if dropped:
        logging.warning("demo %s: %d images belong to neither train_classes nor test_classes", name,
                        dropped)
    return Domain(name=name, splits=splits, num_classes=len(mapping),
                  hflip=DEMO_HFLIP.get(name, True))


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

_DISK_READERS: Dict[str, Callable[..., Domain]] = {
    "cub": read_cub,
    "cars": read_cars196,
    "sop": read_sop,
    "inshop": read_inshop,
    "vehicleid": read_vehicleid,
    "imagenet": read_imagenet,
}


def available_domains() -> List[str]:
    """Names :func:`load_domain` accepts (plus ``folder:<path>`` and ``tfds:<tfds_name>``)."""
    return sorted(_DISK_READERS) + list(DEMO_DOMAINS) + ["folder:<path>", "tfds:<tfds_name>",
                                                         "uned:<domain>"]


def _tfds_fallback(name: str, data_dir: Optional[PathLike], kwargs: dict):
    """For cub/cars/sop/imagenet without an on-disk copy: a prepared tfds dataset (or its finished
    export). Returns None when there is none (checked on disk first, without importing tfds)."""
    tfds_name = _TFDS_FOR_DOMAIN.get(name)
    if tfds_name is None:
        return None
    options = {k: v for k, v in kwargs.items() if k in ("verify", "on_bad_image", "cache_dir")}
    if name == "imagenet":  # same default as read_imagenet: verifying 1.33M files takes long
        options.setdefault("verify", False)
    cache = _abs(options["cache_dir"]) if options.get("cache_dir") else _default_cache_dir(tfds_name)
    dirs = ([_abs(data_dir)] if data_dir is not None else []) + [_default_tfds_data_dir()]
    for d in dirs:
        if (d / tfds_name).is_dir() or _read_cache(cache) is not None:
            try:
                return read_tfds(tfds_name, data_dir=d, **options)
            except DatasetNotFoundError:
                continue
    return None


def load_domain(name: str, data_dir: Optional[PathLike] = None, **kwargs) -> Domain:
    """A domain by name.

    Names: ``cub``, ``cars``, ``sop``, ``inshop``, ``vehicleid``, ``imagenet`` (on-disk layouts
    found in or under ``data_dir``; for cub/cars/sop/imagenet a tfds-prepared copy in ``data_dir``
    or the default tfds data dir is the fallback), ``folder:<path>`` (``<path>`` relative to
    ``data_dir`` unless absolute), ``tfds:<tfds_name>``, and the demo domains ``digits``,
    ``fashion``, ``glyphs``, and ``uned:<domain>`` (a UnED domain, ``tfembed.data.uned``).
    ``data_dir`` defaults to ``$TFEMBED_DATA_DIR``, else ``./data``. ``kwargs`` go to the reader (``verify``,
    ``on_bad_image``, ...).
    """
    if name in DEMO_DOMAINS:
        return read_demo(name, **kwargs)
    if name.startswith("tfds:"):
        return read_tfds(name[len("tfds:"):], data_dir=data_dir, **kwargs)
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or "data"
    if name.startswith("uned:"):
        from tfembed.data.uned import read_uned_domain  # noqa: PLC0415

        return read_uned_domain(data_dir, name[len("uned:"):], **kwargs)
    if name.startswith("folder:"):
        path = Path(os.path.expanduser(name[len("folder:"):]))
        if not path.is_absolute():
            path = Path(data_dir) / path
        return read_folder(path, **kwargs)
    reader = _DISK_READERS.get(name)
    if reader is None:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(available_domains())}")
    reader_kwargs = {k: v for k, v in kwargs.items() if k != "cache_dir"}
    try:
        return reader(data_dir, **reader_kwargs)
    except DatasetNotFoundError as err:
        domain = _tfds_fallback(name, data_dir, kwargs)
        if domain is not None:
            return domain
        tfds_name = _TFDS_FOR_DOMAIN.get(name)
        if tfds_name is None:
            raise
        looked = err.looked_in + [d / tfds_name for d in
                                  ([_abs(data_dir)] + [_default_tfds_data_dir()])]
        raise DatasetNotFoundError(
            name, looked, err.expected + f"; or the tfds dataset {tfds_name!r} prepared",
            err.how_to_get) from None
