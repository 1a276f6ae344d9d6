"""UnED, the Universal Embedding Dataset (Ypsilantis et al., ICCV 2023), in its distributed layout.

UnED is eight existing datasets with new splits: cars, sop, inshop, inat, met, gldv2, food2k,
rp2k (domain ids 0–7 in that order). Its authors distribute the splits as JSON "info files" and
point to each dataset's own source for the images:

    <root>/info_files/<domain>/<split>.json     [{"path": "<relative>", "class_id": 3}, ...]
    <root>/data/images/<path>                   (or <root>/images/<path>)

``class_id`` is an int, or a list of ints for an image of several classes (evaluation splits);
``Split.labels`` holds the first and ``Split.label_sets`` all of them. Splits: train, val, test,
plus index (inshop, met, gldv2), small_index and small_train (met). Which split is queried against
which is ``UNED_EVAL_PAIRS`` (``tfembed.evaluation.uned`` evaluates them).

``read_uned_domain(root, "cars")`` returns one :class:`Domain`; ``load_domain("uned:cars")`` is
the same through the name-based entry point. Missing or unreadable images are skipped and
counted (``Split.skipped``) like every reader's; RP2K's file names with Chinese characters are
looked up under the escaped names the UnED authors' conversion script falls back to.
"""

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from tfembed.data.sources import DatasetNotFoundError, _abs, _check_on_bad_image, verify_images
from tfembed.data.types import Domain, Split

PathLike = Union[str, os.PathLike]

UNED_DOMAINS = ("cars", "sop", "inshop", "inat", "met", "gldv2", "food2k", "rp2k")

# {domain: {evaluation: (query split, index split)}} of the authors' dataset_infos.py.
UNED_EVAL_PAIRS = {
    d: {"test": ("test", "test"), "val": ("val", "val")}
    for d in ("cars", "sop", "inat", "food2k", "rp2k")
}
UNED_EVAL_PAIRS.update({
    "inshop": {"test": ("test", "index"), "val": ("val", "val")},
    "gldv2": {"test": ("test", "index"), "val": ("val", "val")},
    "met": {"test": ("test", "index"), "val": ("val", "small_index")},
})
UNED_EVAL_PAIRS = {d: UNED_EVAL_PAIRS[d] for d in UNED_DOMAINS}

UNED_SPLITS = {d: ("train", "val", "test") for d in UNED_DOMAINS}
UNED_SPLITS.update({"inshop": ("train", "val", "test", "index"),
                    "gldv2": ("train", "val", "test", "index"),
                    "met": ("train", "small_train", "val", "small_index", "test", "index")})

# Where each domain's images come from (the directory the info files' paths start with).
_IMAGE_SOURCES = {
    "cars": "cars/car_ims (Stanford Cars, car_ims.tgz)",
    "sop": "sop/<category>_final (Stanford Online Products)",
    "inshop": "deepfashion/inshop/img (DeepFashion In-shop, img.zip)",
    "inat": "inat/iNaturalist/train_val2018 (iNaturalist 2018)",
    "met": "met/{MET,test_met,test_noart,test_other} (The MET dataset)",
    "gldv2": "gldv2/images/{train,index,test} (Google Landmarks v2)",
    "food2k": "food2k/Food2k_complete (Food2K)",
    "rp2k": "rp2k/all/{train,test} (RP2K)",
}
HOW_TO_GET_UNED = (
    "download UnED's splits, https://cmp.felk.cvut.cz/univ_emb/info_files.zip, and extract it "
    "into ROOT (giving ROOT/info_files/<domain>/<split>.json); get each domain's images from the "
    "source linked on https://cmp.felk.cvut.cz/univ_emb/#dataset and extract them into "
    "ROOT/data/images/ as " + "; ".join(f"{d}: {s}" for d, s in _IMAGE_SOURCES.items()))

_INFO_DIRS = ("info_files", "data/info_files", "uned/info_files", "uned/data/info_files")
_IMAGE_DIRS = ("data/images", "images")


def _check_domain(domain: str):
    if domain not in UNED_DOMAINS:
        raise ValueError(f"unknown UnED domain {domain!r}; UnED's domains are "
                         f"{', '.join(UNED_DOMAINS)}")


def find_uned_root(root: Optional[PathLike], domain: str) -> Path:
    """The directory holding ``info_files/<domain>/`` (``root`` or a known place under it)."""
    expected = f"info_files/{domain}/<split>.json (UnED's splits) and data/images/"
    if root is None:
        raise DatasetNotFoundError("uned", [], expected + " (no root directory was given)",
                                   HOW_TO_GET_UNED)
    base = _abs(root)
    looked = []
    for rel in _INFO_DIRS:
        info = base / rel
        looked.append(info / domain)
        if (info / domain).is_dir():
            return info.parent
    raise DatasetNotFoundError(f"uned:{domain}", looked, expected, HOW_TO_GET_UNED)


def _image_dir(root: Path) -> Path:
    for rel in _IMAGE_DIRS:
        if (root / rel).is_dir():
            return root / rel
    raise DatasetNotFoundError("uned", [root / rel for rel in _IMAGE_DIRS],
                               "the UnED images directory (data/images/<domain dirs>)",
                               HOW_TO_GET_UNED)


def _rp2k_escaped(path: str) -> str:
    """The name the UnED conversion script tries for an RP2K file whose path does not exist: each
    non-ASCII character written as ``#U`` + its hex code (``\\u4e2d`` → ``#U4e2d``)."""
    escaped = path.encode("unicode-escape").decode("ascii")
    return escaped.replace("\\u", "#U").replace("\\x", "#U00")


def _read_info(path: Path) -> List[dict]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a UnED info file (invalid JSON: {e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: a UnED info file is a JSON list of "
                         "{\"path\", \"class_id\"} entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry or "class_id" not in entry:
            raise ValueError(f"{path}: entry {i} ({str(entry)[:80]}) lacks \"path\" or "
                             "\"class_id\"")
    return entries


def _as_labels(value, path: Path, i: int) -> List[int]:
    labels = value if isinstance(value, list) else [value]
    if not labels or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                             for x in labels):
        raise ValueError(f"{path}: entry {i} has class_id {value!r}; expected a non-negative int "
                         "or a non-empty list of them")
    return labels


def _read_split(root: Path, images: Path, domain: str, split: str, verify: bool,
                on_bad_image: str) -> Split:
    info = root / "info_files" / domain / f"{split}.json"
    entries = _read_info(info)
    paths, label_lists = [], []
    for i, entry in enumerate(entries):
        p = str(images / entry["path"])
        if domain == "rp2k" and not os.path.exists(p):
            alt = _rp2k_escaped(p)
            p = alt if os.path.exists(alt) else p
        paths.append(p)
        label_lists.append(_as_labels(entry["class_id"], info, i))
    width = max((len(x) for x in label_lists), default=1)
    sets = np.full((len(label_lists), width), -1, np.int64)
    for i, x in enumerate(label_lists):
        sets[i, :len(x)] = x
    paths = np.asarray(paths, dtype=object)
    skipped = []
    if verify and len(paths):
        good, skipped = verify_images(paths, on_bad_image=on_bad_image, name=f"uned:{domain}/{split}")
        paths, sets = paths[good], sets[good]
    return Split(labels=sets[:, 0].copy(), paths=paths, skipped=skipped,
                 label_sets=sets if width > 1 else None)


def read_uned_domain(root: PathLike, domain: str, splits: Optional[Sequence[str]] = None,
                     verify: bool = True, on_bad_image: str = "skip") -> Domain:
    """One UnED domain as a :class:`Domain`.

    Args:
      root: the directory holding ``info_files/`` (or a directory above it, see ``_INFO_DIRS``).
      domain: one of ``UNED_DOMAINS``.
      splits: the splits to read; default every split whose info file exists.
      verify: check every image (missing, empty, truncated files are skipped and counted in
        ``Split.skipped``, or raise with ``on_bad_image="error"``).

    Labels are UnED's class ids as they are (``num_classes`` = the largest + 1); UnED's splits are
    class-disjoint between train and val/test, and index splits share their query split's classes.
    """
    _check_domain(domain)
    _check_on_bad_image(on_bad_image)
    base = find_uned_root(root, domain)
    available = [s for s in UNED_SPLITS[domain]
                 if (base / "info_files" / domain / f"{s}.json").is_file()]
    wanted = list(splits) if splits is not None else available
    unknown = [s for s in wanted if s not in UNED_SPLITS[domain]]
    if unknown:
        raise ValueError(f"UnED {domain} has no split(s) {unknown}; its splits are "
                         f"{list(UNED_SPLITS[domain])}")
    missing = [s for s in wanted if s not in available]
    if missing or not wanted:
        raise DatasetNotFoundError(
            f"uned:{domain}", [base / "info_files" / domain],
            ", ".join(f"{s}.json" for s in (missing or UNED_SPLITS[domain])), HOW_TO_GET_UNED)
    images = _image_dir(base)
    built = {s: _read_split(base, images, domain, s, verify, on_bad_image) for s in wanted}
    num_classes = 1 + max(int(max(sp.labels.max(initial=-1),
                                  -1 if sp.label_sets is None else sp.label_sets.max()))
                          for sp in built.values())
    return Domain(name=domain, splits=built, num_classes=max(num_classes, 1), protocol="uned")


def read_uned(root: PathLike, domains: Optional[Sequence[str]] = None,
              **kwargs) -> Dict[str, Domain]:
    """Several UnED domains (default all eight), ``{name: Domain}`` in UnED's order."""
    names = list(domains) if domains is not None else list(UNED_DOMAINS)
    for d in names:
        _check_domain(d)
    return {d: read_uned_domain(root, d, **kwargs) for d in UNED_DOMAINS if d in names}
