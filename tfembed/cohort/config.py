"""Paper 003's config block (``cohort``) and its method entries, TensorFlow-free."""

import dataclasses
from typing import Tuple

import ml_collections

from tfembed.configs._method import MethodEntry

#: Model diversity (relation transfer between members), temporal diversity (members updated
#: with probabilities p_l), view diversity (one augmentation draw per member); in this order.
DIVERSITIES = ("md", "td", "vd")


@dataclasses.dataclass(frozen=True)
class CohortMethod(MethodEntry):
    """One cohort of a cohort recipe.

    Attributes:
      diversities: the diversities used (``DIVERSITIES``; empty: independent members). Model
        diversity is the relation transfer the others build on: a cohort with ``td`` or ``vd``
        has ``md``.
      distill_rkd: also distill the cohort's ensemble into one student by RKD-DA (003 §4.6).

    Names: ``independent``, ``md``, ``md+td``, ``md+vd``, ``md+td+vd``, then ``->rkd``; report
    rows ``<name>/member<l>``, ``<name>/ensemble``, ``<name>/rkd_student`` (``->`` written
    ``_to_``).
    """

    diversities: Tuple[str, ...] = ()
    distill_rkd: bool = False

    what = "cohort method"

    def __post_init__(self):
        given = ((self.diversities,) if isinstance(self.diversities, str)
                 else tuple(self.diversities))
        if set(given) - set(DIVERSITIES) or len(set(given)) != len(given) or \
                (given and "md" not in given):
            raise ValueError(f"{self.what}: diversities are a subset of {DIVERSITIES} that "
                             f"includes 'md' (or empty: independent), got {list(given)}")
        object.__setattr__(self, "diversities", tuple(d for d in DIVERSITIES if d in given))
        object.__setattr__(self, "distill_rkd", bool(self.distill_rkd))

    @classmethod
    def from_name(cls, name):
        body, arrow, target = str(name).partition("->")
        if (arrow and target != "rkd") or not body:
            raise ValueError(f"unknown {cls.what} {name!r}: expected independent, md, md+td, "
                             "md+vd or md+td+vd, optionally followed by ->rkd")
        parts = () if body == "independent" else tuple(body.split("+"))
        if list(parts) != [d for d in DIVERSITIES if d in parts] or \
                (parts and parts[0] != "md"):
            raise ValueError(f"unknown {cls.what} {name!r}: expected independent, md, md+td, "
                             "md+vd or md+td+vd, optionally followed by ->rkd")
        return cls(parts, bool(arrow))

    @property
    def name(self):
        body = "+".join(self.diversities) or "independent"
        return body + ("->rkd" if self.distill_rkd else "")

    @property
    def row_prefix(self):
        """The name as report rows and run directories write it (``->`` → ``_to_``)."""
        return self.name.replace("->", "_to_")


def cohort(*diversities, distill_rkd=False):
    """A cohort's entry as a recipe stores it: ``cohort("md", "td", "vd", distill_rkd=True)``."""
    return CohortMethod(diversities, distill_rkd).to_config()


def defaults():
    """The ``cohort`` block (pipeline "cohort", paper 003); see tfembed/cohort/runner.py.

    methods: :class:`CohortMethod` entries (dicts of its fields, or documented names:
      independent | md | md+td | md+vd | md+td+vd, optionally ``->rkd``).
    size: members L. backbones: one per member for a heterogeneous cohort ([]: model.backbone).
    weights: one per member ([]: model.weights for all); a heterogeneous cohort started from
      local weights files needs one file per architecture.
    relation_weight: final λ_DM² (0: the paper's value for train.loss: 20 triplet / contrastive
      / binomial, 100 proxy-NCA, 2000 ArcFace). warmup_epochs: λ's linear warm-up (3 in 003).
    update_probabilities: p_l of temporal diversity ([]: 2^-(l-1) per backbone type).
    freeze_batchnorm: BatchNorm frozen in every member (003: CUB and Cars).
    placement: "devices" puts member l on device l mod #GPUs (or logical CPUs); "none".
    pretrain_domain: a domain to train one network on first; every member then starts from its
      backbone (the analogue of 003's ImageNet initialisation: members differ only in their
      projection). "": members start from model.weights.
    rkd: RKD-DA weights of the ->rkd student (003 §4.6: distance 20, angle 40, no metric loss).
    export: report rows whose model is exported, e.g. "md+td+vd/ensemble", "md+td+vd/member0".
    """
    return ml_collections.ConfigDict(dict(
        methods=[cohort("md", "td", "vd")], size=4, backbones=[], weights=[],
        relation_weight=0.0, warmup_epochs=3.0,
        update_probabilities=[],
        freeze_batchnorm=False,
        placement="devices",
        pretrain_domain="",
        rkd={"distance_weight": 20.0, "angle_weight": 40.0},
        export=[],
    ))
