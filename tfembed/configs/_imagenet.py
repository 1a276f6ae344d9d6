"""Shared by snd_imagenet_cub / snd_imagenet_cars (paper 000 §5.3, Table 5)."""

from tfembed.configs._base import paper_universal
from tfembed.universal.config import concat_pca, distilled, fused


def imagenet_plus(domain):
    c = paper_universal(["imagenet", domain])
    # ImageNet is 218× (CUB) / 159× (CARS) larger: batches are drawn ∝ size with the small
    # domain's images up-weighted ×10, for every method of the table.
    c.universal.policy = "weighted"
    c.universal.weights = [1.0, 10.0]
    # No distance shrinkage or early overfitting on ImageNet: triplet on its labels, SND only on
    # the fine-grained domain.
    c.universal.domain_losses = {"imagenet": "triplet_semihard"}
    c.universal.methods = [concat_pca(), fused("triplet", "weighted"), distilled("rkd"),
                           distilled("snd")]
    c.universal.export = ["snd"]
    # ImageNet shares categories with CUB/CARS: evaluation sets are not fused (000 §5.3).
    c.eval.fused = False
    return c
