"""Paper 000's config block (``universal``) and its method entries, TensorFlow-free.

A universal recipe trains one specialist per domain (or loads them, ``teachers=``) and builds
the universal models its ``universal.methods`` list: students distilled from the specialists
(SND, RKD), embedders trained on the fused data (a metric loss and a domain sampling policy) and
the concatenation of the specialists reduced by PCA.
"""

import dataclasses

import ml_collections

from tfembed.configs._method import MethodEntry

# SND kernel width for L2-normalised embeddings (squared distances in [0, 4]). Paper 000 tunes σ by
# self-distillation on one dataset and does not publish the value; this is the value our
# self-distillation sweep picked (recipe snd_sigma_selfdistill_demo, docs/papers/000_universal.md).
SND_SIGMA = 0.25

KINDS = ("distill", "fused", "concat_pca")
DISTILL_LOSSES = ("snd", "rkd")
#: Short policy names used in method names and report rows → samplers.POLICIES.
POLICY_ALIASES = {"naive": "naive", "ds": "domain_specific", "bal": "domain_balanced",
                  "weighted": "weighted"}
#: What a distilled student may name as its own policy (one domain per batch: a specialist
#: embeds its own domain only); "dynamic" is UDON's (tfembed/universal/dynamic.py).
DISTILL_POLICIES = ("ds", "bal", "weighted", "dynamic")


@dataclasses.dataclass(frozen=True)
class UniversalMethod(MethodEntry):
    """One universal model of a recipe.

    Attributes:
      kind: ``"distill"`` (a student of the specialists, loss ``snd`` or ``rkd``), ``"fused"``
        (one embedder trained on all domains with the metric loss ``universal.fused_losses[loss]``
        and the sampling ``policy``: naive, ds, bal, weighted) or ``"concat_pca"`` (the
        specialists concatenated, PCA to ``model.embedding_dim``).
      loss, policy: as the kind needs them ("" otherwise). A distilled student samples its
        batches by ``universal.policy`` unless it names its own (one of ``DISTILL_POLICIES``):
        ``snd_dynamic`` next to ``snd`` compares UDON's sampling with the recipe's on the same
        specialists in one run.

    Names: ``snd``, ``rkd``, ``snd_<policy>`` / ``rkd_<policy>``, ``<loss>_<policy>``
    (``triplet_ds``), ``concat_pca``; report rows ``universal/<name>`` for students,
    ``baseline/<name>`` for the others.
    """

    kind: str
    loss: str = ""
    policy: str = ""

    what = "universal method"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.what}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "distill" and (self.loss not in DISTILL_LOSSES or
                                       self.policy not in ("",) + DISTILL_POLICIES):
            raise ValueError(f"{self.what}: a distilled student takes loss in {DISTILL_LOSSES} "
                             f"and a policy in {DISTILL_POLICIES} or none (universal.policy), "
                             f"got loss={self.loss!r}, policy={self.policy!r}")
        if self.kind == "fused" and (not self.loss or self.policy not in POLICY_ALIASES):
            raise ValueError(f"{self.what}: a fused baseline takes a loss (a key of "
                             f"universal.fused_losses) and a policy in {sorted(POLICY_ALIASES)}, "
                             f"got loss={self.loss!r}, policy={self.policy!r}")
        if self.kind == "concat_pca" and (self.loss or self.policy):
            raise ValueError(f"{self.what}: concat_pca takes no loss or policy")

    @classmethod
    def from_name(cls, name):
        name = str(name)
        if name == "concat_pca":
            return cls("concat_pca")
        if name in DISTILL_LOSSES:
            return cls("distill", name)
        loss, _, policy = name.rpartition("_")
        if loss in DISTILL_LOSSES and policy in DISTILL_POLICIES:
            return cls("distill", loss, policy)
        if loss and policy in POLICY_ALIASES:
            return cls("fused", loss, policy)
        raise ValueError(f"unknown {cls.what} {name!r}: use concat_pca, "
                         f"{', '.join(DISTILL_LOSSES)}, or <loss>_<policy> with policy in "
                         f"{sorted(POLICY_ALIASES)}")

    @property
    def name(self):
        if self.policy:
            return f"{self.loss}_{self.policy}"
        return self.loss or self.kind

    @property
    def row(self):
        """The report.json ``model`` of the method."""
        return f"{'universal' if self.kind == 'distill' else 'baseline'}/{self.name}"


def distilled(loss, policy=""):
    """A student distilled from the specialists (``loss``: snd or rkd; ``policy``: its own
    batch sampling, default ``universal.policy``), as a recipe stores it."""
    return UniversalMethod("distill", loss, policy).to_config()


def fused(loss, policy):
    """A fused-data baseline (``loss``: a key of ``universal.fused_losses``; ``policy``: naive,
    ds, bal, weighted), as a recipe stores it."""
    return UniversalMethod("fused", loss, policy).to_config()


def concat_pca():
    """The concatenated specialists reduced by PCA, as a recipe stores it."""
    return UniversalMethod("concat_pca").to_config()


def defaults():
    """The ``universal`` block (pipeline "universal", paper 000); see tfembed/universal/runner.py.

    steps / steps_per_epoch / learning_rate: 0 means "as in ``train``" (the specialists' setting).
    policy: sampling of the distillation batches: ds (domain-specific, the paper's), bal, weighted,
      or dynamic (UDON's: weights ∝ each domain's loss over the last epoch; dynamic.initial:
      "balanced" as UDON starts, or "size" as ds; tfembed/universal/dynamic.py).
    weights: per-domain weights of the ``weighted`` policy (and of ``*_weighted`` baselines).
    snd: sigma (teacher kernel width), student_sigma (0: same as sigma), perplexity (0: fixed
      sigma; > 0: per-row sigma calibrated to this perplexity). rkd: RKD-DA weights (1:2).
    domain_losses: {domain: loss name} replacing distillation for that domain (000 §5.3).
    global_batch: under MirroredStrategy, SND/RKD on the all-gathered batch (the paper's loss).
    methods: :class:`UniversalMethod` entries (dicts of its fields, or documented names).
    fused_losses: the metric losses of the fused baselines (``UniversalMethod.loss``).
    pca_max_images: training images per domain the concat_pca PCA is fitted on (0: all).
    sigma_sweep: the σ values the self_distill pipeline compares.
    diagnostics, tsne_max_points: write the figure PNG/JSON pairs; t-SNE points per domain.
    export: the methods whose model is exported as a SavedModel.
    """
    return ml_collections.ConfigDict(dict(
        methods=[concat_pca(), fused("triplet", "naive"), fused("triplet", "ds"),
                 fused("triplet", "bal"), distilled("rkd"), distilled("snd")],
        steps=0, steps_per_epoch=0, learning_rate=0.0,
        policy="ds", weights=[], dynamic=dict(initial="balanced"),
        snd=dict(sigma=SND_SIGMA, student_sigma=0.0, perplexity=0.0),
        rkd=dict(distance_weight=1.0, angle_weight=2.0, delta=1.0),
        domain_losses={}, domain_loss_kwargs={"margin": 0.2},
        global_batch=True,
        fused_losses={"triplet": {"loss": "triplet_semihard", "kwargs": {"margin": 0.2}},
                      "ms": {"loss": "multi_similarity", "kwargs": {}}},
        pca_max_images=10000,
        sigma_sweep=[0.25, 0.5, 1.0, 2.0],
        diagnostics=True,
        tsne_max_points=1000,
        export=["snd", "rkd"],
    ))
