"""Training augmentation (issue 15): the per-domain flip policy (no mirrored text) and the crop
modes of view diversity (torchvision's RandomResizedCrop, HORDE's multi-resolution crop),
eagerly and inside tf.data."""

import dataclasses
import math

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import SMALL_CNN
from tfembed import recipes
from tfembed.cohort import runner as cohort_lib
from tfembed.data import pipeline as P
from tfembed.data import testing
from tfembed.data import transforms as A
from tfembed.data.samplers import Pairs
from tfembed.data.sources import DEMO_HFLIP, load_domain, read_cub
from tfembed.data.transforms import Augment
from tfembed.data.types import Domain, ImageSpec, Split
from tfembed.data.views import CohortViews, TeacherCacheViews
from tfembed.distill import TeacherCache
from tfembed.distill import runner as distill_lib
from tfembed.training.builders import train_transform

SIZE = 28   # the demo images' size: with image_size == resize_size the resize is the identity


@pytest.fixture(scope="module")
def demo():
    return {name: load_domain(name) for name in ("digits", "glyphs", "fashion")}


def _rgb(image):
    image = np.asarray(image, np.float32)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _one_image_per_class(split, classes=6, copies=2):
    """``copies`` identical rows of the first image of ``classes`` classes: a batch's label
    tells which source image each row shows. The subset keeps the split's ``hflip``."""
    rows = [int(np.flatnonzero(split.labels == c)[0]) for c in split.classes[:classes]]
    return split.subset(np.repeat(rows, copies))


def _flip_states(images, labels, split):
    """Per row: "same" (the source image), "mirrored" or "other" (neither)."""
    sources = {int(l): _rgb(split.images[np.flatnonzero(split.labels == l)[0]])
               for l in np.unique(split.labels)}
    states = []
    for image, label in zip(np.asarray(images), np.asarray(labels)):
        source = sources[int(label)]
        if np.array_equal(image, source):
            states.append("same")
        elif np.array_equal(image, source[:, ::-1]):
            states.append("mirrored")
        else:
            states.append("other")
    return states


# ----------------------------------------------------------------------- A: the flip policy

def test_demo_readers_declare_the_flip_policy(demo):
    assert DEMO_HFLIP == {"digits": False, "fashion": True, "glyphs": False}
    for name, domain in demo.items():
        assert domain.hflip is DEMO_HFLIP[name]
        # Every split carries it, and subsets keep it.
        assert all(s.hflip is DEMO_HFLIP[name] for s in domain.splits.values())
        assert domain.train.subset([0, 1]).hflip is DEMO_HFLIP[name]


def test_photo_domains_keep_flips_and_domain_copies_its_policy(tmp_path):
    testing.make_cub_layout(tmp_path / "CUB_200_2011", per_class=2)
    cub = read_cub(tmp_path, verify=False)
    assert cub.hflip and all(s.hflip for s in cub.splits.values())
    split = Split(labels=[0, 1], images=np.zeros((2, 4, 4, 1), np.uint8))
    assert Domain("photos", {"train": split}, 2).hflip       # the default: mirrors keep class
    text = Domain("text", {"train": split}, 2, hflip=False)
    assert text.train.hflip is False
    # A copy: the split another domain holds keeps that domain's policy.
    assert split.hflip is True and text.train is not split
    again = dataclasses.replace(text, name="text2")
    assert again.hflip is False and again.train.hflip is False
    # The distill pipeline's labelled part of a domain keeps the policy.
    assert distill_lib._with_train(text, split).train.hflip is False


@pytest.mark.parametrize("name", ["digits", "glyphs"])
def test_text_transform_never_flips_eagerly(demo, name):
    split = demo[name].train
    flip = A.split_flips([split], True)[0]
    assert flip is False
    for i in range(100):
        image = _rgb(split.images[i])
        out = A.train_transform(image, tf.constant([i, 7], tf.int64), SIZE, SIZE, flip)
        np.testing.assert_array_equal(out.numpy(), image)


def test_fashion_still_flips_eagerly(demo):
    split = demo["fashion"].train
    flip = A.split_flips([split], True)[0]
    assert flip is True
    mirrored = 0
    for i in range(100):
        image = _rgb(split.images[i])
        out = A.train_transform(image, tf.constant([i, 7], tf.int64), SIZE, SIZE,
                                flip).numpy()
        if not np.array_equal(out, image):
            np.testing.assert_array_equal(out, image[:, ::-1])
            mirrored += 1
    assert 25 < mirrored < 75


@pytest.mark.parametrize("name,expect_mirrors", [("digits", False), ("glyphs", False),
                                                 ("fashion", True)])
def test_stream_flips_only_where_the_domain_allows(demo, name, expect_mirrors):
    split = _one_image_per_class(demo[name].train, classes=5 if name == "fashion" else 6)
    ds = P.training_batches([split], 3, 2, spec=ImageSpec(SIZE, SIZE), augment=Augment(flip=True),
                            seed=1)
    states = []
    for images, labels in ds.take(20):
        states += _flip_states(images, labels, split)
    assert "other" not in states
    assert ("mirrored" in states) == expect_mirrors
    if expect_mirrors:
        assert "same" in states


def test_multi_domain_stream_flips_per_domain(demo):
    text = _one_image_per_class(demo["digits"].train)
    photos = _one_image_per_class(demo["fashion"].train, classes=5)
    ds = P.training_batches([text, photos], 3, 2, spec=ImageSpec(SIZE, SIZE),
                            augment=Augment(flip=True), seed=2, policy="domain_balanced")
    seen = {0: set(), 1: set()}
    for x, y in ds.take(30):
        domain = int(x["domain"][0])
        offset = 0 if domain == 0 else int(np.max(text.labels)) + 1
        seen[domain] |= set(_flip_states(x["images"], y - offset, [text, photos][domain]))
    assert seen[0] == {"same"}                  # digits: never mirrored
    assert seen[1] == {"same", "mirrored"}      # fashion: sometimes


def test_flip_given_per_split(demo):
    a = _one_image_per_class(demo["fashion"].train, classes=5)
    b = dataclasses.replace(a)
    kw = dict(spec=ImageSpec(SIZE, SIZE), seed=3, policy="domain_balanced")
    seen = {0: set(), 1: set()}
    for x, y in P.training_batches([a, b], 3, 2, augment=Augment(flip=[True, False]),
                                   **kw).take(30):
        domain = int(x["domain"][0])
        offset = 0 if domain == 0 else int(np.max(a.labels)) + 1
        seen[domain] |= set(_flip_states(x["images"], y - offset, a))
    assert seen == {0: {"same", "mirrored"}, 1: {"same"}}
    # flip=False wins over a domain that allows flips; one bool per split or a clear error.
    assert A.split_flips([a, b], False) == [False, False]
    with pytest.raises(ValueError, match="one bool per split"):
        P.training_batches([a, b], 3, 2, augment=Augment(flip=[True]), **kw)


def test_views_pairs_unlabelled_and_teacher_streams_never_flip_text(demo):
    split = _one_image_per_class(demo["glyphs"].train, classes=6, copies=4)
    kw = dict(spec=ImageSpec(SIZE, SIZE), augment=Augment(flip=True), seed=4)
    for x, y in P.training_batches([split], 3, 2, view=CohortViews(3), **kw).take(5):
        for v in range(3):
            assert set(_flip_states(x["views"][:, v], y, split)) == {"same"}
    for x, y in P.batches([split], Pairs(3, 2), **kw).take(5):
        assert set(_flip_states(x, y, split)) == {"same"}
    for x, _ in P.training_batches([split], 3, 2, view=TeacherCacheViews(2), **kw).take(5):
        for i, example in enumerate(x["example"].numpy()):
            np.testing.assert_array_equal(x["images"][i], _rgb(split.images[example]))
    sources = {_rgb(s).tobytes() for s in split.images}
    for x, _ in P.unlabelled_batches(split, 6, **kw).take(5):
        assert all(image.tobytes() in sources for image in x.numpy())
    # The teacher cache's images: the same unflipped pixels.
    rows = np.concatenate(list(P.teacher_view_dataset(split, 2, 8, **kw)))
    np.testing.assert_array_equal(rows, np.repeat(np.stack([_rgb(s) for s in split.images]),
                                                  2, axis=0))


def test_teacher_cache_meta_holds_the_per_domain_flips(demo):
    splits = [demo["digits"].train, demo["fashion"].train]
    kw = dict(spec=ImageSpec(SIZE, SIZE), seed=0)
    meta = TeacherCache.describe([None, None], splits, 2, augment=Augment(flip=True), **kw)
    assert meta["flip"] == [False, True] and meta["crop"] == {"mode": "resize_crop"}
    assert TeacherCache.describe([None, None], splits, 2, augment=Augment(flip=[True, False]),
                                 **kw)["flip"] == [False, False]
    assert TeacherCache.describe([None, None], splits, 0, augment=Augment(flip=True),
                                 **kw)["flip"] is None
    rr = TeacherCache.describe([None, None], splits, 2, augment=Augment(crop="random_resized"),
                               **kw)["crop"]
    assert rr == {"mode": "random_resized", "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}
    mr = TeacherCache.describe([None, None], splits, 2,
                               augment=Augment(crop="multi_resolution",
                                               crop_resize_range=(0.5, 1.5)), **kw)["crop"]
    assert mr == {"mode": "multi_resolution", "resize_range": [0.5, 1.5]}


def _config(**train):
    c = ml_collections.ConfigDict()
    c.model = dict(image_size=24, resize_size=28)
    c.train = dict(dict(flip=True), **train)
    return c


def test_pipelines_helper_gives_the_per_domain_flip_and_the_crop(demo):
    domains = [demo["digits"], demo["fashion"], demo["glyphs"]]
    kw = train_transform(_config(), domains)
    assert kw == dict(spec=ImageSpec(24, 28),
                      augment=Augment(flip=[False, True, False], crop="resize_crop",
                                      crop_scale=None, crop_ratio=None, crop_resize_range=None))
    assert list(train_transform(_config(flip=False), domains)["augment"].flip) == [False] * 3
    aug = train_transform(_config(crop="random_resized", crop_scale=[0.2, 1],
                                  crop_ratio=[0.5, 2]), [demo["fashion"]])["augment"]
    assert (aug.crop, aug.crop_scale, aug.crop_ratio) == ("random_resized", (0.2, 1.0),
                                                          (0.5, 2.0))


# ------------------------------------------------------------------------ B: the crop modes

def _reference_resize_crop(image, seed, image_size, resize_size, flip):
    """train_transform before the crop modes existed (a copy of the old implementation)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.resize(tf.cast(image, tf.float32), resize_size, antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    image = tf.image.stateless_random_crop(image, [*image_size, 3], seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return image


def test_resize_crop_default_is_unchanged(rng):
    image = tf.constant(rng.integers(0, 255, (37, 45, 3)), tf.uint8)
    for i in range(20):
        seed = tf.constant([i, 3 * i + 1], tf.int64)
        for flip in (True, False):
            expected = _reference_resize_crop(image, seed, (24, 24), (30, 30), flip).numpy()
            np.testing.assert_array_equal(
                A.train_transform(image, seed, 24, 30, flip).numpy(), expected)
            np.testing.assert_array_equal(
                A.train_transform(image, seed, 24, 30, flip, crop="resize_crop").numpy(),
                expected)
    # The stream's default (single domain, flip) is the reference transform too.
    split = Split(labels=np.repeat(np.arange(3), 2),
                  images=rng.integers(0, 255, (6, 20, 20, 3)).astype(np.uint8))
    x, y = next(iter(P.training_batches([split], 3, 2, spec=ImageSpec(16, 18), seed=5)))
    for image in x.numpy():
        assert any(np.allclose(image, _reference_resize_crop(
            split.images[r], tf.constant([5, 0xA06], tf.int64) + [0, n], (16, 16), (18, 18),
            True).numpy()) for n in range(6) for r in range(6))


def _numpy_random_resized(rng, height, width, scale, ratio, n, attempts=10):
    """torchvision RandomResizedCrop.get_params, in numpy: ``[n, 4]`` (top, left, h, w)."""
    out = []
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(n):
        for _ in range(attempts):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                out.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
            out.append(((height - h) // 2, (width - w) // 2, h, w))
    return np.array(out, np.float64)


def _tf_boxes(height, width, n, **kw):
    """``n`` boxes of random_resized_box drawn inside tf.data (seeds (11, i))."""
    ds = tf.data.Dataset.range(n).map(lambda i: tf.stack(A.random_resized_box(
        height, width, tf.stack([tf.constant(11, tf.int64), i]), **kw)))
    return np.stack(list(ds.batch(n).as_numpy_iterator())[0]).astype(np.float64)


@pytest.mark.parametrize("height,width", [(500, 500), (300, 600)])
def test_random_resized_box_statistics_match_torchvision(height, width):
    n = 2000
    boxes = _tf_boxes(height, width, n)
    top, left, h, w = boxes.T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= height) and np.all(left + w <= width)
    area = h * w / (height * width)
    log_ratio = np.log(w / h)
    slack = 0.01    # the sides are rounded to pixels
    assert area.min() >= 0.08 - slack and area.max() <= 1.0
    fallback = (top == (height - h) // 2) & (left == (width - w) // 2) & (
        np.isclose(h, height) | np.isclose(w, width))
    inside = ~fallback
    assert np.all(log_ratio[inside] >= np.log(3 / 4) - slack)
    assert np.all(log_ratio[inside] <= np.log(4 / 3) + slack)
    # The distributions (rejection of boxes that do not fit and the fallback included) are
    # torchvision's: compare with its algorithm in numpy (many draws) within ~4 standard errors.
    ref = _numpy_random_resized(np.random.default_rng(0), height, width, (0.08, 1.0),
                                (3 / 4, 4 / 3), 40000)
    ref_area = ref[:, 2] * ref[:, 3] / (height * width)
    ref_log = np.log(ref[:, 3] / ref[:, 2])
    assert abs(area.mean() - ref_area.mean()) < 4 * ref_area.std() / math.sqrt(n)
    assert abs(log_ratio.mean() - ref_log.mean()) < 4 * ref_log.std() / math.sqrt(n) + 1e-3
    edges = np.quantile(ref_area, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(np.histogram(area, [-1, *edges, 2])[0] / n, 0.25, atol=0.04)
    if height == width:
        # Square image: mean log aspect ratio at the centre of the range (0) by symmetry.
        assert abs(log_ratio.mean()) < 4 * log_ratio.std() / math.sqrt(n)


def test_random_resized_box_is_uniform_when_every_box_fits():
    # Area ≤ 0.5 and ratio in [3/4, 4/3]: every first candidate fits, so the area fraction and
    # the log aspect ratio are uniform over their ranges (up to the pixel rounding).
    n = 2000
    top, left, h, w = _tf_boxes(1000, 1000, n, scale=(0.1, 0.5)).T
    area, log_ratio = h * w / 1e6, np.log(w / h)
    assert area.min() > 0.1 - 0.003 and area.max() < 0.5 + 0.003
    assert abs(area.mean() - 0.3) < 4 * (0.4 / math.sqrt(12)) / math.sqrt(n)
    np.testing.assert_allclose(np.histogram(area, np.linspace(0.1, 0.5, 5) + [-1, 0, 0, 0, 1])[0]
                               / n, 0.25, atol=0.04)
    lo, hi = np.log(3 / 4), np.log(4 / 3)
    assert log_ratio.min() > lo - 0.005 and log_ratio.max() < hi + 0.005
    assert abs(log_ratio.mean()) < 4 * ((hi - lo) / math.sqrt(12)) / math.sqrt(n)
    np.testing.assert_allclose(np.histogram(log_ratio, np.linspace(lo, hi, 5) + [-1, 0, 0, 0, 1])[0]
                               / n, 0.25, atol=0.04)


def test_random_resized_box_fallback():
    seed = tf.constant([1, 2], tf.int64)
    # No candidate fits (every box wider than the image): the central box at the closest ratio.
    box = A.random_resized_box(10, 10, seed, scale=(0.9, 1.0), ratio=(3.0, 4.0))
    assert [int(v) for v in box] == [3, 0, 3, 10]          # w = 10, h = round(10 / 3)
    box = A.random_resized_box(10, 40, seed, scale=(0.95, 1.0), ratio=(0.5, 1.0))
    assert [int(v) for v in box] == [0, 15, 10, 10]        # h = 10, w = round(10 · 1)
    box = A.random_resized_box(20, 20, seed, scale=(1.0, 1.0), ratio=(2.0, 2.0))
    assert [int(v) for v in box] == [5, 0, 10, 20]
    box = A.random_resized_box(12, 14, seed, scale=(1.0, 1.0), ratio=(0.1, 0.2))
    assert [int(v) for v in box] == [0, 6, 12, 2]          # h = 12, w = round(12 · 0.2)


def test_random_resized_transform_eager_graph_and_tf_data(rng):
    image = tf.constant(rng.integers(0, 255, (48, 64, 3)), tf.uint8)
    seed = tf.constant([4, 9], tf.int64)
    kw = dict(crop="random_resized", crop_scale=(0.2, 0.6))
    eager = A.train_transform(image, seed, 20, 99, False, **kw)
    graph = tf.function(lambda i, s: A.train_transform(i, s, 20, 99, False, **kw))(image, seed)
    ds = tf.data.Dataset.from_tensors((image, seed)).map(
        lambda i, s: A.train_transform(i, s, 20, 99, False, **kw))
    assert eager.shape == (20, 20, 3)
    np.testing.assert_allclose(graph, eager, atol=1e-3)
    np.testing.assert_allclose(next(iter(ds)), eager, atol=1e-3)
    # It is the box of seed row 0, resized (resize_size is not used).
    top, left, h, w = (int(v) for v in A.random_resized_box(
        48, 64, tf.random.experimental.stateless_split(seed, 2)[0], (0.2, 0.6)))
    expected = tf.image.resize(tf.cast(image[top:top + h, left:left + w], tf.float32), (20, 20),
                               antialias=True)
    np.testing.assert_allclose(eager, expected, atol=1e-3)
    # Determinism: the same seed gives the same crop, other seeds other crops.
    np.testing.assert_array_equal(A.train_transform(image, seed, 20, 99, False, **kw), eager)
    others = [A.train_transform(image, tf.constant([4, 10 + i], tf.int64), 20, 99, False, **kw)
              for i in range(5)]
    assert all(not np.allclose(o, eager) for o in others)


def test_random_resized_views_differ_and_the_stream_resumes(rng):
    split = Split(labels=np.repeat(np.arange(4), 3),
                  images=rng.integers(0, 255, (12, 40, 30, 3)).astype(np.uint8))
    kw = dict(spec=ImageSpec(16, 16), augment=Augment(flip=False, crop="random_resized"), seed=6)
    x, _ = next(iter(P.training_batches([split], 2, 3, view=CohortViews(3), **kw)))
    assert x["views"].shape == (6, 3, 16, 16, 3)
    for i in range(6):
        views = x["views"][i].numpy()
        assert not np.allclose(views[0], views[1]) and not np.allclose(views[1], views[2])
    full = [b for b, _ in P.training_batches([split], 2, 3, **kw).take(4)]
    again = [b for b, _ in P.training_batches([split], 2, 3, **kw).take(4)]
    tail = [b for b, _ in P.training_batches([split], 2, 3, start_step=2, **kw).take(2)]
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(full[2:], tail):
        np.testing.assert_array_equal(a, b)


def test_multi_resolution_size_follows_horde(rng):
    n = 2000
    for height, width in ((100, 50), (30, 90)):
        ds = tf.data.Dataset.range(n).map(lambda i: tf.stack(A.multi_resolution_size(
            height, width, tf.stack([tf.constant(3, tf.int64), i]), 256, (0.8, 1.8))))
        sizes = np.stack(list(ds.batch(n).as_numpy_iterator())[0]).astype(np.float64)
        longer = sizes.max(axis=1)
        # int(256 · 0.8) = 204 .. int(256 · 1.8) = 460, rounded up; aspect ratio kept.
        assert longer.min() >= 204 and longer.max() <= 461
        assert abs(longer.mean() - (204 + 460) / 2) < 4 * (256 / math.sqrt(12)) / math.sqrt(n)
        np.testing.assert_allclose(sizes[:, 0] / sizes[:, 1], height / width, rtol=0.05)
        assert (sizes[:, 0] > sizes[:, 1]).all() == (height > width)


def test_multi_resolution_crop_pads_and_is_deterministic(rng):
    # A wide strip: the resized image is lower than the crop, so it is centred on black rows.
    image = tf.constant(rng.integers(50, 255, (10, 100, 3)), tf.uint8)
    seed = tf.constant([2, 5], tf.int64)
    kw = dict(crop="multi_resolution", crop_resize_range=(0.8, 1.8))
    out = A.train_transform(image, seed, 32, 32, True, **kw).numpy()
    assert out.shape == (32, 32, 3)
    rows = out.reshape(32, -1).max(axis=1)
    black = rows == 0
    assert black[0] and black[-1] and not black[16]
    # The band of image rows is centred: as many black rows above as below (±1).
    assert abs(int(np.argmax(~black)) - int(np.argmax(~black[::-1]))) <= 1
    np.testing.assert_array_equal(A.train_transform(image, seed, 32, 32, True, **kw), out)
    ds = tf.data.Dataset.from_tensors(image).map(
        lambda i: A.train_transform(i, seed, 32, 32, True, **kw))
    np.testing.assert_allclose(next(iter(ds)), out, atol=1e-3)
    # Resized above the crop size: no padding; different seeds, different crops.
    big = tf.constant(rng.integers(50, 255, (60, 60, 3)), tf.uint8)
    crops = [A.train_transform(big, tf.constant([i, 1], tf.int64), 32, 32, False,
                               crop="multi_resolution", crop_resize_range=(1.2, 2.0)).numpy()
             for i in range(4)]
    assert all(c.min() > 0 for c in crops)
    assert all(not np.allclose(crops[0], c) for c in crops[1:])


def test_crop_arguments_are_checked():
    with pytest.raises(ValueError, match="crop must be one of"):
        A.check_crop("center")
    with pytest.raises(ValueError, match="crop_scale"):
        A.check_crop("random_resized", crop_scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="crop_ratio"):
        A.check_crop("random_resized", crop_ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="crop_resize_range"):
        A.check_crop("multi_resolution", crop_resize_range=(0.0, 1.0))
    assert A.check_crop() == ("resize_crop", (0.08, 1.0), (0.75, 4 / 3), (0.8, 1.8))


# ----------------------------------------------------------------------------- the recipes

def test_recipe_defaults_and_the_003_recipes():
    base = recipes.resolve("specialist_cub", [])
    assert base.train.crop == "resize_crop" and base.train.flip
    assert A.check_crop(base.train.crop, base.train.crop_scale, base.train.crop_ratio,
                        base.train.crop_resize_range) == A.check_crop()
    paper = [n for n in recipes.list_recipes() if n.startswith("dm2_") and n != "dm2_demo"]
    assert len(paper) == 9
    for name in paper:
        c = recipes.resolve(name, [])
        # 003 §4.2 / HORDE: 256 inputs, multi-resolution crops; test view 293 → 256 centre.
        assert c.train.crop == "multi_resolution" and list(c.train.crop_resize_range) == [0.8,
                                                                                         1.8]
        assert (c.model.image_size, c.model.resize_size) == (256, 293) and c.train.flip
    demo_cfg = recipes.resolve("dm2_demo", [])
    assert demo_cfg.train.crop == "resize_crop"
    c = recipes.resolve("dm2_cub", ["train.crop=random_resized", "train.crop_scale=0.2,1.0"])
    assert c.train.crop == "random_resized" and list(c.train.crop_scale) == [0.2, 1.0]


def test_cohort_views_use_the_recipe_crop_and_never_flip_digits(demo):
    # The demo on the small CNN's 28-px crops (the recipe's own 64-px network is not the point).
    config = recipes.resolve("dm2_demo", ["train.crop=random_resized", *SMALL_CNN,
                                          "train.crop_scale=0.5,1.0", "cohort.size=3"])
    x, y = next(iter(cohort_lib.training_data(demo["digits"], config, "md+vd")))
    assert x["views"].shape[1:] == (3, 28, 28, 3)
    views = x["views"].numpy()
    assert not np.allclose(views[:, 0], views[:, 1])
    # Without the crop (28 → 28, resize_crop) the views are the source: never mirrored.
    config = recipes.resolve("dm2_demo", [*SMALL_CNN, "model.resize_size=28", "cohort.size=3"])
    x, y = next(iter(cohort_lib.training_data(demo["digits"], config, "md+vd")))
    sources = {_rgb(s).tobytes() for s in demo["digits"].train.images}
    assert all(image.tobytes() in sources for image in x["views"].numpy().reshape(-1, 28, 28, 3))
