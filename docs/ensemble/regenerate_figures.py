"""Re-draws abe_demo's figures from its trained models, without training again.

Usage: ``python docs/ensemble/regenerate_figures.py RUN_DIR [key=value ...]`` (``RUN_DIR`` is
one seed's directory of ``tfembed-train --recipe abe_demo``, e.g. ``runs/abe_demo/seed_0``; the
``key=value`` pairs are the ``--set`` overrides the run used); writes
``RUN_DIR/diagnostics_redrawn/``.
"""
import os
import sys

import keras
from tfembed import recipes
from tfembed.ensemble import runner as E
from tfembed.evaluation.protocol import embed_domains
from tfembed.training.builders import image_spec, load_domains

run = sys.argv[1]
c = recipes.resolve("abe_demo", sys.argv[2:])
domains = load_domains(c, single="ensemble")
d = domains[0]
sim, masks = {}, {}
for m in [x.name for x in E.entries(E.EnsembleMethod, c.ensemble.methods)]:
    model = keras.models.load_model(os.path.join(run, m, "model.keras"))
    emb = embed_domains(model, domains, [0], spec=image_spec(c.model),
                        batch_size=int(c.eval.batch_size))[d.name]
    sim[E.title(m)] = E.similarity_panel(m, emb, int(c.ensemble.diagnostics_max_images),
                                         int(c.ensemble.diagnostics_max_pairs), int(c.seed))
    if m.startswith("abe"):
        images = E.mask_images(d, c)
        masks[m] = (images, model.learner_outputs(images)["masks"])
E.write_diagnostics(os.path.join(run, "diagnostics_redrawn"), sim, masks, seed=int(c.seed))
