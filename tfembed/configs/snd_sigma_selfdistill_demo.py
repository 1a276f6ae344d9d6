"""Offline σ sweep for SND by self-distillation on the demo glyphs domain (2 CPU cores).

The small-CNN glyphs specialist (600 steps) is distilled into a fresh small CNN on glyphs alone
for σ ∈ {0.25, 0.5, 1, 2} (600 steps each). This is how tfembed's default σ = 0.25 was
chosen (docs/papers/000_universal.md, "Choosing σ").

Command:
  tfembed-train --recipe snd_sigma_selfdistill_demo --workdir runs/sigma
Expected result: the "Choosing σ" table of docs/papers/000_universal.md (measured with this recipe).
"""

from tfembed.configs import snd_universal_demo
from tfembed.configs._base import universal_defaults

SMOKE = dict(snd_universal_demo.SMOKE, **{"universal.sigma_sweep": [0.5, 1.0]})


def get_config():
    c = snd_universal_demo.get_config()
    c.pipeline = "self_distill"
    c.domains = ["glyphs"]
    c.universal = universal_defaults()
    c.universal.steps = 600
    c.universal.steps_per_epoch = 200
    c.eval.random_init_baseline = False
    return c
