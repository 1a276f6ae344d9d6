"""Evaluating embedding models on one or several domains, per domain and on the fused gallery.

:func:`evaluate` is the entry point: a model and its domains in, report rows (DESIGN §4) out, the
images' sizes read from the model's ``ImageSpec``. The functions below it are its steps, for
callers that embed once and score several ways (the pipelines' fused baselines, ensembles).

Fused evaluation (paper 000 §5.2): a domain's test images are the queries and the gallery is every
domain's test images together (In-shop keeps its query set and fuses its gallery), so a model that
maps two domains onto each other is penalised. Labels are offset per domain, so class 3 of one
domain never matches class 3 of another.
"""

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from tfembed.data.pipeline import default_label_offsets, eval_dataset
from tfembed.data.types import Domain, ImageSpec
from tfembed.evaluation.report import recall_rows
from tfembed.evaluation.retrieval import fused_recall, recall_at_k


def evaluate(model, domains: Union[Domain, Sequence[Domain]], *, ks=(1, 2, 4, 8), fused=True,
             name: str = "model", spec=None, batch_size=128,
             offsets: Optional[Sequence[int]] = None, multi_domain_input=False,
             uned_evaluation: str = "test", **view) -> List[dict]:
    """Recall@K of ``model`` on each domain's evaluation splits, and on the fused gallery.

    UnED domains (``Domain.protocol == "uned"``) are scored by UnED's protocol instead
    (``tfembed.evaluation.uned.evaluate_uned``: R@1, mMP@5, mAP@5 on each domain's
    ``uned_evaluation`` query/index pair, separate and merged index).

    Args:
      model: an embedder (images → ``[B, D]``), or any model whose ``predict`` gives embeddings.
      domains: one :class:`Domain` or several; each is queried with its test split (or its
        query split against its gallery, In-shop), and with several, also against the fused
        gallery of all domains (paper 000's protocol; labels offset per domain).
      ks: the K of Recall@K. fused: also score on the fused gallery.
      name: the ``model`` field of the rows.
      spec: the images' :class:`ImageSpec` (default: the model's, ``ImageSpec.of(model)``).
      offsets: per-domain label offsets (default: cumulative class counts).
      multi_domain_input: feed ``{"images", "domain"}`` instead of images.
      **view: ``crop_boxes`` / ``low_resolution_size`` of :func:`eval_dataset`.

    Returns:
      report rows ``{"model", "domain", "gallery", "recall@1", ...}`` (DESIGN §4), per domain
      (``gallery="domain"``) and on the fused gallery (``gallery="fused"``); format them with
      ``tfembed.evaluation.format_table``.
    """
    domains = [domains] if isinstance(domains, Domain) else list(domains)
    if is_uned(domains):
        if multi_domain_input or any(view.values()):
            raise ValueError("UnED domains are evaluated on their images as they are "
                             "(no multi-domain input, crop boxes or low resolution)")
        from tfembed.evaluation.uned import evaluate_uned  # noqa: PLC0415

        return evaluate_uned(model, domains, evaluation=uned_evaluation, name=name, spec=spec,
                             batch_size=batch_size)
    offsets = default_label_offsets(domains) if offsets is None else offsets
    embedded = embed_domains(model, domains, offsets, spec=spec, batch_size=batch_size,
                             multi_domain_input=multi_domain_input, **view)
    return evaluate_embeddings(name, embedded, ks, fused=fused)


def is_uned(domains: Sequence[Domain]) -> bool:
    """Whether ``domains`` are UnED domains (scored by UnED's protocol); a mix of UnED and other
    domains has no common protocol and is refused."""
    kinds = {d.protocol for d in domains}
    if len(kinds) > 1:
        raise ValueError("a run evaluates UnED domains (uned:<domain>) or other domains, not both: "
                         + ", ".join(f"{d.name} ({d.protocol})" for d in domains))
    return kinds == {"uned"}


def embed_split(model, split, *, spec=None, batch_size=128, label_offset=0, domain=None,
                crop_boxes=False, low_resolution_size=0):
    """Embeddings ``[N, D]`` (float32 numpy) and offset labels of a split, in order.

    ``spec``: the images' :class:`ImageSpec` (default the model's); ``crop_boxes`` /
    ``low_resolution_size``: the view of the images (see ``eval_dataset``).
    """
    ds = eval_dataset(split, batch_size, spec=ImageSpec.of(model if spec is None else spec),
                      label_offset=label_offset, domain=domain, crop_boxes=crop_boxes,
                      low_resolution_size=low_resolution_size)
    emb = model.predict(ds.map(lambda x, y: x), verbose=0)
    return np.asarray(emb, np.float32), split.labels + label_offset


def embed_domains(model, domains: Sequence[Domain], offsets: Sequence[int], *, spec=None,
                  batch_size=128, multi_domain_input=False, **view):
    """For each domain: ``(query_emb, query_labels, gallery_emb | None, gallery_labels | None)``.

    Domains with a query/gallery split (In-shop) return both; others return the test set as
    queries and ``None`` gallery (each test image queries the others). ``spec`` (default the
    model's) and ``view`` (box crop, low resolution): as :func:`embed_split`.
    """
    spec = ImageSpec.of(model if spec is None else spec)
    out = {}
    for d, (domain, offset) in enumerate(zip(domains, offsets)):
        kw = dict(spec=spec, batch_size=batch_size,
                  label_offset=offset, domain=d if multi_domain_input else None, **view)
        if domain.has_query_gallery:
            q, ql = embed_split(model, domain.splits["query"], **kw)
            g, gl = embed_split(model, domain.splits["gallery"], **kw)
            out[domain.name] = (q, ql, g, gl)
        else:
            q, ql = embed_split(model, domain.splits["test"], **kw)
            out[domain.name] = (q, ql, None, None)
    return out


def evaluate_embeddings(model_name: str, embedded: Dict[str, tuple], ks=(1, 2, 4, 8),
                        fused=True) -> List[dict]:
    """Report rows (DESIGN §4) for one model: per domain on its own gallery and on the fused one."""
    ks = tuple(ks)
    rows = []
    for name, (q, ql, g, gl) in embedded.items():
        rows.append(recall_rows(model_name, name, "domain",
                                recall_at_k(q, ql, ks, gallery_embeddings=g, gallery_labels=gl)))
    if fused and len(embedded) > 1:
        for name, recalls in fused_recall(embedded, ks=ks).items():
            rows.append(recall_rows(model_name, name, "fused", recalls))
    return rows
