"""Paper 002's config block (``ensemble``) and its method entries, TensorFlow-free."""

import dataclasses
from typing import Optional

import ml_collections

from tfembed.configs._method import MethodEntry

KINDS = ("abe", "mheads")


@dataclasses.dataclass(frozen=True)
class EnsembleMethod(MethodEntry):
    """One ensemble of an ensemble recipe.

    Attributes:
      kind: ``"abe"`` (ABE-M: M attention modules on a shared trunk) or ``"mheads"`` (M heads
        on a shared backbone, the paper's baseline).
      learners: M.
      divergence: the divergence loss between learners (None: the kind's default, on for ABE,
        off for M-heads; never with one learner).

    Names: ``abe<M>``, ``abe<M>_nodiv``, ``mheads<M>``, ``mheads<M>_div``.
    """

    kind: str
    learners: int
    divergence: Optional[bool] = None

    what = "ensemble method"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.what}: kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.learners, bool) or int(self.learners) != self.learners or \
                self.learners < 1:
            raise ValueError(f"{self.what}: learners must be an int >= 1, got "
                             f"{self.learners!r}")
        object.__setattr__(self, "learners", int(self.learners))
        if self.divergence is None:
            object.__setattr__(self, "divergence", self.kind == "abe")

    @classmethod
    def from_name(cls, name):
        for kind in KINDS:
            rest = str(name)[len(kind):] if str(name).startswith(kind) else None
            if rest is None:
                continue
            count, _, suffix = rest.partition("_")
            own = {"abe": "nodiv", "mheads": "div"}[kind]
            if count.isdigit() and int(count) >= 1 and suffix in ("", own):
                return cls(kind, int(count), (kind == "abe") != (suffix == own))
            if suffix in ("div", "nodiv"):
                raise ValueError(f"{name!r}: abe has the divergence loss by default (use _nodiv "
                                 "to drop it), mheads has none (use _div to add it)")
        raise ValueError(f"unknown {cls.what} {name!r}: expected abe<M>, abe<M>_nodiv, "
                         "mheads<M> or mheads<M>_div (M >= 1), e.g. abe8")

    @property
    def name(self):
        default = self.kind == "abe"
        suffix = "" if self.divergence == default else ("_nodiv" if default else "_div")
        return f"{self.kind}{self.learners}{suffix}"

    @property
    def uses_divergence(self):
        """The divergence loss is on (it needs two learners or more)."""
        return bool(self.divergence) and self.learners > 1


def ensemble(kind, learners, divergence=None):
    """An ensemble's entry as a recipe stores it: ``ensemble("abe", 8, divergence=False)``."""
    return EnsembleMethod(kind, learners, divergence).to_config()


def defaults():
    """The ``ensemble`` block (pipeline "ensemble", paper 002); see tfembed/ensemble/runner.py.

    methods: :class:`EnsembleMethod` entries (dicts of its fields, or documented names:
      ``abe<M>``, ``abe<M>_nodiv``, ``mheads<M>``, ``mheads<M>_div``); ``model.embedding_dim``
      is the ensemble's size D (each learner D/M).
    divergence_weight, divergence_margin: λ_div and m_div (both 1 in 002).
    branch: layer or stage alias where S ends ("": the backbone's default branch).
    attention_blocks: backbone blocks in the attention trunk C (0: up to the next stage).
    sampler: "pairs" (002: pair_anchors random images + a positive partner for the first
      pair_positives and a negative one for the rest) or "classes" (the train block's c×k).
    head_init: M-heads' initialisation, "copy" | "fresh" ("": copy with pretrained weights).
    global_batch: under MirroredStrategy, the losses on the all-gathered batch.
    diagnostics: write 002's Fig. 5/6; diagnostics_max_images / _max_pairs bound Fig. 5's cost.
    export: methods whose ensemble model is exported as a SavedModel.
    eval_every_steps: Recall@K of the ensemble every this many training steps (002: every 1000
      iterations; replaces ``eval.every_n_epochs`` in this pipeline); the best evaluation by
      R@1 is reported beside the final model (``<method>/ensemble@best``).
    """
    return ml_collections.ConfigDict(dict(
        methods=[ensemble("abe", 8)],
        divergence_weight=1.0, divergence_margin=1.0,
        branch="", attention_blocks=0,
        sampler="pairs", pair_anchors=32, pair_positives=16,
        head_init="",
        global_batch=True,
        diagnostics=True, diagnostics_max_images=2000, diagnostics_max_pairs=200000,
        export=[],
        eval_every_steps=1000,
    ))
