"""Choosing SND's σ by self-distillation (paper 000 §5: "we tune σ by self-distillation on one
dataset and then use the obtained σ value for the experiments on the other datasets").

The CUB specialist is distilled into a fresh ResNet50 student on CUB alone, once per σ in
universal.sigma_sweep (0.25, 0.5, 1, 2); report rows self_distill/sigma=<σ> next to the
specialist. Use the best σ in the universal recipes (--set universal.snd.sigma=...).

Command:
  tfembed-train --recipe snd_sigma_selfdistill --set data_dir=/path/to/datasets --set teachers=cub.keras
Expected result: the paper does not publish its σ or the sweep; a self-distilled student should
match its teacher (≈ 59.8 R@1 on CUB) at the best σ.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

SMOKE = dict(PAPER_UNIVERSAL_SMOKE, **{"universal.sigma_sweep": [0.5, 1.0]})


def get_config():
    c = paper_universal(["cub"])
    c.pipeline = "self_distill"
    return c
