"""Papers 001/004's config blocks (``teacher``, ``distill``, ``teacher_cache``) and their method
entries, TensorFlow-free.

A distill recipe trains (or loads) one teacher and, for each entry of ``distill.methods``, one
student with that entry's loss terms on that entry's data.
"""

import dataclasses
from typing import Tuple

import ml_collections

from tfembed.configs._method import MethodEntry
from tfembed.universal.config import SND_SIGMA

#: Embedding-level terms (one per student at most) → their loss in the registry.
EMBEDDING_TERMS = {"abs": "absolute_teacher", "rel": "relative_teacher",
                   "direct": "direct_match", "darkrank_hard": "darkrank_hard",
                   "darkrank_soft": "darkrank_soft", "rkd": "rkd", "snd": "snd"}
#: The student's metric loss, hint (FitNets), attention transfer and Hinton KD.
OTHER_TERMS = ("ml", "hint", "at", "kd")
#: full: every training image with its label; labelled: the labelled part only; semi: labelled
#: and unlabelled streams mixed; unlabelled: the unlabelled part only (001's semi-supervised
#: settings, distill.labelled_fraction).
DATA = ("full", "labelled", "semi", "unlabelled")


@dataclasses.dataclass(frozen=True)
class DistillMethod(MethodEntry):
    """One student of a distill recipe.

    Attributes:
      terms: its loss terms: ``ml`` (its own metric loss, ``train.loss``), at most one
        embedding-level teacher term (``EMBEDDING_TERMS``), ``hint``, ``at``, ``kd``.
      data: which training images it sees (``DATA``).

    Name (report row ``student/<name>``): the terms ``+``-joined, then ``@<data>`` unless
    ``full`` (``ml+rel+at``, ``rel@unlabelled``).
    """

    terms: Tuple[str, ...]
    data: str = "full"

    what = "distill method"

    def __post_init__(self):
        terms = (self.terms,) if isinstance(self.terms, str) else tuple(self.terms)
        object.__setattr__(self, "terms", terms)
        known = (*EMBEDDING_TERMS, *OTHER_TERMS)
        bad = [t for t in terms if t not in known]
        if bad or not terms or self.data not in DATA:
            raise ValueError(f"{self.what} {self.name!r}: terms come from {', '.join(known)} "
                             f"and data from {', '.join(DATA)}")
        if sum(t in EMBEDDING_TERMS for t in terms) > 1:
            raise ValueError(f"{self.what} {self.name!r} has more than one embedding-level "
                             f"teacher term ({', '.join(EMBEDDING_TERMS)}); use one")
        if self.data == "unlabelled" and "ml" in terms:
            raise ValueError(f"{self.what} {self.name!r}: unlabelled data has no labels for 'ml'")

    @classmethod
    def from_name(cls, name):
        body, _, data = str(name).partition("@")
        terms = tuple(t for t in body.split("+") if t)
        if not terms:
            raise ValueError(f"cannot parse {cls.what} {name!r}: terms are +-joined, optionally "
                             f"followed by @<data> with data in {', '.join(DATA[1:])}")
        return cls(terms, data or "full")

    @property
    def name(self):
        return "+".join(self.terms) + ("" if self.data == "full" else f"@{self.data}")

    @property
    def embedding_term(self):
        """The entry's embedding-level teacher term, or None."""
        return next((t for t in self.terms if t in EMBEDDING_TERMS), None)


def student(*terms, data="full"):
    """A student's entry as a recipe stores it: ``student("ml", "rel", data="semi")``."""
    return DistillMethod(terms, data).to_config()


def teacher_defaults():
    """The ``teacher`` block: the teacher's model (trained first as a specialist, or loaded from
    ``teachers=``)."""
    return ml_collections.ConfigDict(dict(
        backbone="resnet101", embedding_dim=512, weights="imagenet", image_size=224,
        resize_size=256, backbone_kwargs={}, freeze_batchnorm=False))


def teacher_cache_defaults():
    """The ``teacher_cache`` block of the distillation students (universal snd/rkd, distill
    methods): mode "off" (teachers run live on fresh augmentations, the papers' setting),
    "memory" or "disk" (computed once per run into dir, default <workdir>/.../teacher_cache,
    reused by every student and by a rerun). views: 0 = the teacher sees the evaluation
    transform while the student keeps random augmentation; K = K fixed augmented views per
    image, seen by teacher and student alike."""
    return ml_collections.ConfigDict(dict(mode="off", views=0, dir=""))


def defaults():
    """The ``distill`` block (pipeline "distill", papers 001/004); see tfembed/distill/runner.py.

    methods: the students to train, :class:`DistillMethod` entries (dicts of its fields, or
      documented names such as ``ml+rel@semi``).
    weights: per-term weights: λ of the embedding-level term (abs, rel, direct, darkrank_*, rkd,
      snd), μ of hint, κ of at, and the Hinton KD weight. 1 here; DarkRank: λ = 2. A term listed
      in ``lambda_search.terms`` has its λ chosen by cross-validation instead (this weight then
      only breaks ties).
    loss_kwargs: hyper-parameters per term (DarkRank α = β = 3, 004 §4; abs / rel
      ``aggregation``: "mean", DESIGN §4, or "frobenius", the authors' code of 001).
    lambda_search: λ by cross-validation (001 §4; tfembed.distill.runner.LambdaSearch), off
      while ``terms`` is empty. terms: the embedding-level terms whose λ is searched (e.g.
      ["abs", "rel"]); grid: the λ values tried (log-spaced), term_grids: {term: grid} per
      term; val_fraction: the share of the *training* classes held out for validation (whole
      classes, seeded; never the test split); steps: training steps of each trial student (0:
      train.steps); teacher: "full" (the run's teacher) or "reduced" (one trained on the
      remaining classes only). The choice goes to report.json under "selection".
    metric_weight: weight of the student's own metric loss (``train.loss``).
    hint_layers / attention_layers: ``[[teacher layer, student layer], ...]``.
    heads: supervised heads with weights, e.g. ``{"lsoftmax": {"weight": 1, "margin": 3}}``
      (``verification``: ``mode`` "logistic" | "contrastive", ``margin``).
    teacher_heads: train the teacher with ``heads`` too (next to ``train.loss`` weighted by
      ``metric_weight``), as 004 trains its teacher with the student's losses; False: the
      teacher is a plain specialist on ``train.loss``.
    kd_temperature, kd_classifier_epochs: Hinton KD's T; epochs of the teacher's linear head.
    labelled_fraction: < 1 splits each training class into labelled / unlabelled (001 §5.2).
    cross_quality: none | lowres | uncropped (001 §5.4); low_resolution_size: 50 in 001.
    teacher_train: overrides of the ``train`` block for the teacher (e.g. its learning rate:
      004 trains the teacher at 0.01 and the student at 5e-4).
    clustering: add NMI and F1 (k-means) to the report rows (004 Table 4).
    export: methods whose student is exported as a SavedModel.
    """
    return ml_collections.ConfigDict(dict(
        methods=[student("ml"), student("ml", "abs"), student("ml", "rel")],
        weights={"abs": 1.0, "rel": 1.0, "direct": 1.0, "darkrank_hard": 2.0,
                 "darkrank_soft": 2.0, "rkd": 1.0, "snd": 1.0, "hint": 0.01, "at": 1.0,
                 "kd": 1.0},
        loss_kwargs={"darkrank_hard": {"alpha": 3.0, "beta": 3.0},
                     "darkrank_soft": {"alpha": 3.0, "beta": 3.0},
                     "snd": {"sigma": SND_SIGMA},
                     "abs": {"aggregation": "mean"}, "rel": {"aggregation": "mean"}},
        lambda_search=dict(terms=[], grid=[0.1, 0.3, 1.0, 3.0, 10.0], term_grids={},
                           val_fraction=0.2, steps=0, teacher="full"),
        metric_weight=1.0,
        hint_layers=[], attention_layers=[],
        heads={}, teacher_heads=False,
        kd_temperature=4.0, kd_classifier_epochs=30,
        labelled_fraction=1.0,
        cross_quality="none", low_resolution_size=50,
        global_batch=True,
        teacher_train={},
        clustering=True,
        export=[],
    ))
