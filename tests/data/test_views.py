"""Views for distillation (001 §5.2, §5.4): box crops, low resolution, paired teacher/student
views, labelled/unlabelled splits — eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from tfembed.data import pipeline
from tfembed.data.transforms import Augment, crop_to_box, eval_transform, low_resolution
from tfembed.data.types import ImageSpec, Split
from tfembed.data.views import StudentView

SIZE = 16


def _split(rng, classes=4, per_class=6, boxes=True):
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 255, (len(labels), 24, 20, 3)).astype(np.uint8)
    # A bright object in each box: the crop is visibly different from the whole image.
    box = np.array([4.0, 6.0, 10.0, 12.0], np.float32)
    images[:, 6:18, 4:14] = 255
    return Split(labels=labels, images=images,
                 boxes=np.tile(box, (len(labels), 1)) if boxes else None)


def test_crop_to_box_eager_graph_and_nan(rng):
    image = tf.constant(rng.integers(0, 255, (10, 12, 3)), tf.uint8)
    box = tf.constant([2.5, 1.0, 4.0, 5.5])  # x, y, w, h → columns 2..6, rows 1..6
    np.testing.assert_array_equal(crop_to_box(image, box), image[1:7, 2:7])
    graph = tf.function(crop_to_box)
    np.testing.assert_array_equal(graph(image, box), image[1:7, 2:7])
    np.testing.assert_array_equal(crop_to_box(image, [np.nan] * 4), image)
    # Boxes reaching outside the image are clipped, never empty.
    assert crop_to_box(image, [11.0, 9.0, 50.0, 50.0]).shape == (1, 1, 3)
    ds = tf.data.Dataset.from_tensors((image, box)).map(crop_to_box)
    np.testing.assert_array_equal(next(iter(ds)), image[1:7, 2:7])


def test_low_resolution_keeps_size_and_removes_detail(rng):
    image = tf.constant(rng.uniform(0, 255, (2, 32, 32, 3)), tf.float32)
    low = low_resolution(image, 8)
    assert low.shape == image.shape
    # Smoother: neighbouring pixels differ far less than in the noise image.
    assert np.abs(np.diff(low, axis=1)).mean() < 0.5 * np.abs(np.diff(image, axis=1)).mean()
    np.testing.assert_allclose(low_resolution(image[0], 8), low[0], atol=1e-3)
    with pytest.raises(ValueError, match="static"):
        tf.function(lambda x: low_resolution(x, 8)).get_concrete_function(
            tf.TensorSpec([None, None, 3], tf.float32))


def test_lowres_student_view_is_the_degraded_teacher_view(rng):
    split = _split(rng)
    ds = pipeline.training_batches([split], 2, 3, spec=ImageSpec(SIZE, SIZE),
                                   view=StudentView("lowres", 4), seed=1)
    x, y = next(iter(ds))
    assert set(x) == {"images", "student_images"} and y.shape == (6,)
    np.testing.assert_allclose(x["student_images"], low_resolution(x["images"], 4), atol=1e-3)
    assert not np.allclose(x["images"], x["student_images"], atol=1.0)


def test_uncropped_student_view_and_crop_boxes(rng):
    split = _split(rng)
    kw = dict(spec=ImageSpec(SIZE, SIZE), augment=Augment(flip=False), seed=3)
    x, y = next(iter(pipeline.training_batches([split], 2, 3, view=StudentView("uncropped"),
                                               **kw)))
    crops, _ = next(iter(pipeline.training_batches([split], 2, 3, crop_boxes=True, **kw)))
    plain, y_plain = next(iter(pipeline.training_batches([split], 2, 3, **kw)))
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_allclose(x["images"], crops)           # teacher: the box crop
    np.testing.assert_allclose(x["student_images"], plain)   # student: the whole image
    assert float(tf.reduce_mean(x["images"])) > float(tf.reduce_mean(x["student_images"]))
    with pytest.raises(ValueError, match="bounding boxes"):
        pipeline.training_batches([_split(rng, boxes=False)], 2, 3, crop_boxes=True, **kw)
    with pytest.raises(ValueError, match="student view"):
        StudentView("blurry")


def test_eval_dataset_views(rng):
    split = _split(rng)
    kw = dict(spec=ImageSpec(SIZE, SIZE))
    boxed, _ = next(iter(pipeline.eval_dataset(split, 4, crop_boxes=True, **kw)))
    expected = eval_transform(crop_to_box(split.images[0], split.boxes[0]), SIZE, SIZE)
    np.testing.assert_allclose(boxed[0], expected, atol=1e-4)
    low, _ = next(iter(pipeline.eval_dataset(split, 4, low_resolution_size=4, **kw)))
    plain, _ = next(iter(pipeline.eval_dataset(split, 4, **kw)))
    np.testing.assert_allclose(low, low_resolution(plain, 4), atol=1e-3)


def test_split_labelled_per_class(rng):
    split = _split(rng, classes=5, per_class=7)
    labelled, unlabelled = pipeline.split_labelled(split, 0.5, seed=2)
    assert len(labelled) + len(unlabelled) == len(split)
    for c in range(5):
        assert (labelled.labels == c).sum() == 4  # round(3.5) → 4, per class
    again, _ = pipeline.split_labelled(split, 0.5, seed=2)
    np.testing.assert_array_equal(again.images, labelled.images)
    with pytest.raises(ValueError, match="labelled_fraction"):
        pipeline.split_labelled(split, 0.0)


def test_unlabelled_batches_hide_labels_and_cover_the_split(rng):
    split = _split(rng, classes=3, per_class=4)
    ds = pipeline.unlabelled_batches(split, 4, spec=ImageSpec(SIZE, SIZE), seed=0)
    seen = []
    for x, y in ds.take(3):  # one pass over the 12 images
        assert x.shape == (4, SIZE, SIZE, 3)
        np.testing.assert_array_equal(y, [-1, -1, -1, -1])
        seen.append(x.numpy())
    assert len({a.tobytes() for a in np.concatenate(seen)}) == 12
    x, _ = next(iter(pipeline.unlabelled_batches(split, 20, spec=ImageSpec(SIZE, SIZE))))
    assert x.shape[0] == 20  # more than the split: batches run across passes
    with pytest.raises(ValueError, match="empty"):
        pipeline.unlabelled_batches(split.subset([]), 4)


def test_teacher_spec_views_cut_each_domains_teacher_view_at_its_own_size(rng):
    # Three domains: the teacher of domain 0 takes 8 px, domain 1's the student's 16, domain
    # 2's 24 (DESIGN §7). The teacher view is the same draw of the transform at its own sizes:
    # under random_resized the same box, so it equals the student's view resized.
    from tfembed.data.views import TeacherSpecViews

    splits = [_split(rng, boxes=False) for _ in range(3)]
    specs = [ImageSpec(8, 10), None, ImageSpec(24, 28)]
    augment = Augment(crop="random_resized", flip=True)
    ds = pipeline.training_batches(splits, 2, 3, spec=ImageSpec(SIZE, 20), augment=augment,
                                   view=TeacherSpecViews(specs), seed=2)
    sizes = {0: 8, 1: SIZE, 2: 24}
    seen = set()
    for x, _ in ds.take(10):
        d = int(x["domain"][0])
        seen.add(d)
        assert x["images"].shape[1:3] == (sizes[d], sizes[d])
        assert x["student_images"].shape[1:3] == (SIZE, SIZE)
        if d == 1:   # a teacher at the student's sizes sees the student's pixels
            np.testing.assert_array_equal(x["images"], x["student_images"])
        else:        # the same box at another resolution
            down = tf.image.resize(x["images"], (SIZE, SIZE), antialias=True)
            same = np.abs(down - x["student_images"]).mean()
            other = np.abs(down - tf.roll(x["student_images"], 1, axis=0)).mean()
            assert same < 0.5 * other, (d, same, other)
    assert seen == {0, 1, 2}
    with pytest.raises(ValueError, match="one teacher spec per domain"):
        TeacherSpecViews([])


def test_teacher_spec_view_of_one_domain_without_a_switch(rng):
    from tfembed.data.views import TeacherSpecViews

    ds = pipeline.training_batches([_split(rng, boxes=False)], 2, 3, spec=ImageSpec(SIZE, 20),
                                   view=TeacherSpecViews([ImageSpec(12, 14)]), seed=0)
    assert ds.element_spec[0]["images"].shape == (6, 12, 12, 3)   # static: no switch_case
    x, _ = next(iter(ds))
    assert x["student_images"].shape == (6, SIZE, SIZE, 3)


def test_a_teacher_spec_differing_only_in_normalisation_gets_the_students_pixels(rng):
    # A trained specialist records its Preprocess mode; the pixels it takes are the student's.
    from tfembed.data.views import TeacherSpecViews

    assert ImageSpec(12, 14, normalisation="torch").same_sizes(ImageSpec(12, 14))
    assert not ImageSpec(12, 14).same_sizes(ImageSpec(12, 16))
    ds = pipeline.training_batches([_split(rng, boxes=False)], 2, 3, spec=ImageSpec(SIZE, 20),
                                   view=TeacherSpecViews([ImageSpec(SIZE, 20, normalisation="x")]),
                                   seed=0)
    x, _ = next(iter(ds))
    np.testing.assert_array_equal(x["images"], x["student_images"])
