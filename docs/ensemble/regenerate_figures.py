"""Re-draws abe_demo's figures from its trained models, without training again.

Usage: ``python docs/ensemble/regenerate_figures.py RUN_DIR`` (the ``--workdir`` of
``tfembed-train --recipe abe_demo``); writes ``RUN_DIR/diagnostics_redrawn/``.
"""
import os
import sys

import keras
from tfembed import recipes
from tfembed.ensemble import runner as E
from tfembed.training.builders import load_domains
from tfembed.evaluation.protocol import embed_domains

run = sys.argv[1]
c = recipes.resolve("abe_demo", [])
domains = load_domains(c); d = domains[0]
sim, masks = {}, {}
for m in c.ensemble.methods:
    model = keras.models.load_model(os.path.join(run, m, "model.keras"))
    emb = embed_domains(model, domains, [0], batch_size=512, image_size=28, resize_size=32)[d.name]
    sim[E.title(m)] = E.similarity_panel(m, emb, 2000, 200000, 0)
    if m.startswith("abe"):
        images = E.mask_images(d, c)
        masks[m] = (images, model.learner_outputs(images)["masks"])
E.write_diagnostics(os.path.join(run, "diagnostics_redrawn"), sim, masks)
