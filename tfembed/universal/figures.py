"""The diagnostics of paper 000's figures, from what the universal pipeline already computed.

Written to ``<workdir>/diagnostics/`` as PNG + JSON pairs (the numbers behind each plot):

* ``recall_curves`` — Fig. 2(a/b): per-domain Recall@1 over training for every trained fused
  baseline and distilled model (from their RecallAtKCallback histories); the JSON gives each
  domain's best epoch, so early overfitting of small domains under fused training is a number.
* ``tsne`` — Fig. 4: t-SNE of all domains' test embeddings coloured by domain, one panel per
  model (random init, the specialists each on its own domain, the universal models), with the
  fraction of images whose nearest neighbour is from the same domain.
* ``pca_spectra`` — Fig. 5: PCA eigenvalues of each domain's test embeddings, specialist vs
  universal (and random init).
* ``distance_ratios`` — Fig. 2(c): density of (universal distance / specialist distance) over
  intra- and inter-class pairs of each domain's test images, and of (another domain's specialist /
  the domain's own specialist), the paper's ImageNet-vs-CUB picture.
"""

import os

from absl import logging

from tfembed.evaluation import diagnostics as diag

# The rows of eval.random_init_baseline (tfembed.training.builders.untrained_baseline).
UNTRAINED = ("baseline/random_init", "baseline/pretrained")


def _curves(histories, domains, k=1):
    curves = {}
    for model, history in histories.items():
        per_domain = {}
        for d in domains:
            key = f"val_{d.name}_recall@{k}"
            points = [(h["epoch"] + 1, h[key]) for h in history or [] if h.get(key) is not None]
            if points:
                per_domain[d.name] = points
        if per_domain:
            curves[model] = per_domain
    return curves


def _queries(embedded, model, domain):
    return embedded[model][domain][0], embedded[model][domain][1]


def write_universal_diagnostics(workdir, domains, embedded, histories, config):
    """Writes the four figures' PNG/JSON pairs from the evaluation embeddings (``embedded``:
    report model name → ``embed_domains`` output) and the Recall@K histories; returns
    ``{name: png path}``."""
    out = os.path.join(workdir, "diagnostics")
    os.makedirs(out, exist_ok=True)
    names = [d.name for d in domains]
    seed = int(config.seed)
    written = {}
    universal = [m for m in embedded if m.startswith("universal/")]
    curves = _curves(histories, domains)
    if curves:
        diag.plot_recall_curves(curves, os.path.join(out, "recall_curves.png"))
        written["recall_curves"] = os.path.join(out, "recall_curves.png")

    def own_specialist(name):
        return _queries(embedded, f"specialist/{name}", name)

    panels = {}
    untrained = [b for b in UNTRAINED if b in embedded]
    for b in untrained:
        panels[b.split("/")[1].replace("_", " ")] = {n: _queries(embedded, b, n)[0]
                                                    for n in names}
    panels["specialists (each on its domain)"] = {n: own_specialist(n)[0] for n in names}
    for model in universal:
        panels[model] = {n: _queries(embedded, model, n)[0] for n in names}
    if len(names) > 1:
        try:
            diag.plot_tsne(panels, os.path.join(out, "tsne.png"), max_points_per_domain=int(
                config.universal.get("tsne_max_points", 1000)), seed=seed)
            written["tsne"] = os.path.join(out, "tsne.png")
        except ValueError as err:  # e.g. too few points in a smoke run
            logging.warning("t-SNE diagnostics skipped: %s", err)

    spectra = {}
    for n in names:
        spectra[n] = {"specialist": diag.pca_spectrum(own_specialist(n)[0])}
        for model in untrained + universal:
            if model in embedded:
                spectra[n][model] = diag.pca_spectrum(_queries(embedded, model, n)[0])
    diag.plot_pca_spectra(spectra, os.path.join(out, "pca_spectra.png"))
    written["pca_spectra"] = os.path.join(out, "pca_spectra.png")

    ratios = {}
    for i, n in enumerate(names):
        teacher, labels = own_specialist(n)
        for model in universal:
            ratios[f"{n}: {model} / specialist"] = diag.distance_ratios(
                teacher, _queries(embedded, model, n)[0], labels, seed=seed)
        if len(names) > 1:
            other = names[(i + 1) % len(names)]
            ratios[f"{n}: specialist/{other} / specialist/{n}"] = diag.distance_ratios(
                teacher, _queries(embedded, f"specialist/{other}", n)[0], labels, seed=seed)
    diag.plot_distance_ratio_density(ratios, os.path.join(out, "distance_ratios.png"))
    written["distance_ratios"] = os.path.join(out, "distance_ratios.png")
    logging.info("diagnostics written to %s", out)
    return written
