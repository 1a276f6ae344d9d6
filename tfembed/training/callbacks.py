"""Keras callbacks for embedding training.

``RecallAtKCallback`` evaluates retrieval Recall@K on held-out sets at the end of an epoch and
writes it into the epoch's ``logs``, so it lands in ``History``, in any callback listed after it
(``TensorBoard``, ``CSVLogger``, ``ModelCheckpoint(monitor=...)``, ``EarlyStopping``) and in its
own JSON-able ``history`` (the per-domain curves of paper 000 Fig. 2(a)).
"""

import json
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfembed.io import atomic_save, atomic_write
from tfembed.evaluation.retrieval import fused_recall, recall_at_k


def default_embed_output(outputs):
    """The embeddings in a model's output: the tensor itself, ``outputs["embeddings"]`` of a dict,
    or the first element of a list/tuple."""
    if isinstance(outputs, Mapping):
        if "embeddings" not in outputs:
            raise ValueError(f"model returned a dict without 'embeddings': {sorted(outputs)}; "
                             "pass embed_fn=")
        return outputs["embeddings"]
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


class RecallAtKCallback(keras.callbacks.Callback):
    """Recall@K per evaluation domain (and on the fused gallery), every ``every_n_epochs`` epochs.

    Args:
      eval_sets: ``{domain: (query_ds, gallery_ds or None)}`` (a bare dataset means no gallery).
        Each dataset yields ``(x, labels)`` batches, ``x`` being images or a dict such as
        ``{"images": ..., "domain": ...}``; it is passed to the model as given. Without a gallery
        every query searches the other queries. Datasets are iterated once per evaluation, so
        embeddings and labels stay paired even if a dataset reshuffles. Labels should be offset
        per domain (DESIGN §4) when ``fused=True``.
      ks: the k values.
      every_n_epochs: evaluate after epochs ``n-1, 2n-1, ...`` (0-based), i.e. every n-th epoch.
      every_n_steps: if > 0, evaluate after training steps ``n, 2n, ...`` (global steps, counted
        across ``fit`` calls and resumes: see ``resume_at``) instead of at epoch ends.
      history_path: if given, ``history`` is written there (JSON, atomically) after every
        evaluation and read back by ``resume_at``, so a resumed run keeps the evaluations made
        before the interruption.
      prefix: prepended to every log key.
      fused: also evaluate each domain against the fused gallery of all domains
        (``tfembed.evaluation.fused_recall``).
      embed_fn: ``embed_fn(model, x) -> embeddings``; default ``model(x, training=False)`` and
        ``default_embed_output`` on the result (compiled with ``tf.function``).

    Log keys, per domain ``d`` and k: ``f"{prefix}{d}_recall@{k}"``; with ``fused``,
    ``f"{prefix}{d}_fused_recall@{k}"``; and ``f"{prefix}recall@{k}"`` (and
    ``f"{prefix}fused_recall@{k}"``), the mean over domains, handy as a ``monitor`` for checkpoints
    and early stopping. ``history`` is a list of ``{"epoch": e, key: value, ...}``, one per
    evaluation: ``{"step": s, "epoch": e, key: value, ...}`` (``epoch`` in the per-epoch
    schedule only; plain Python numbers, JSON-serialisable).

    Under ``tf.distribute`` (e.g. ``MirroredStrategy``) the forward pass reads the mirrored
    weights in cross-replica context, on one device; evaluation sets are small enough that this
    costs less than distributing them.
    """

    def __init__(self, eval_sets: Mapping[str, object], ks: Sequence[int] = (1, 2, 4, 8),
                 every_n_epochs: int = 1, prefix: str = "val_", fused: bool = False,
                 embed_fn: Optional[Callable] = None, every_n_steps: int = 0,
                 history_path: Optional[str] = None):
        super().__init__()
        if not eval_sets:
            raise ValueError("eval_sets is empty")
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if int(every_n_steps) < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.eval_sets = {}
        for name, entry in eval_sets.items():
            if isinstance(entry, (tuple, list)):
                if len(entry) != 2:
                    raise ValueError(f"eval_sets[{name!r}] must be (query_ds, gallery_ds or None)")
                self.eval_sets[str(name)] = (entry[0], entry[1])
            else:
                self.eval_sets[str(name)] = (entry, None)
        self.ks = tuple(int(k) for k in ks)
        self.every_n_epochs = int(every_n_epochs)
        self.prefix = prefix
        self.fused = bool(fused)
        self.embed_fn = embed_fn
        self.every_n_steps = int(every_n_steps)
        self.history_path = history_path
        self.history: List[Dict[str, float]] = []
        self.step = 0   # global training step (fit_for_steps sets the resumed one: resume_at)
        self._evaluate_on_begin = False
        self._forward = None
        self._forward_model = None

    # -- embedding ------------------------------------------------------------------------------

    def _get_forward(self):
        if self._forward is None or self._forward_model is not self.model:
            model, embed_fn = self.model, self.embed_fn
            if embed_fn is None:
                def forward(x):
                    return default_embed_output(model(x, training=False))
            else:
                def forward(x):
                    return embed_fn(model, x)
            self._forward = tf.function(forward, reduce_retracing=True)
            self._forward_model = model
        return self._forward

    def embed(self, dataset):
        """``(embeddings [N, D] float32, labels [N])`` as numpy, in one pass over ``dataset``."""
        forward = self._get_forward()
        embs, labels = [], []
        for batch in dataset:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("evaluation datasets must yield (inputs, labels) batches")
            x, y = batch[0], batch[1]
            embs.append(np.asarray(forward(x), np.float32))
            labels.append(np.asarray(y).reshape(-1))
        if not embs:
            raise ValueError("an evaluation dataset is empty")
        return np.concatenate(embs, 0), np.concatenate(labels, 0)

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self) -> Dict[str, float]:
        """Computes every log value now and returns them (keys as described in the class doc)."""
        embedded = {}
        for name, (query_ds, gallery_ds) in self.eval_sets.items():
            q, ql = self.embed(query_ds)
            g, gl = self.embed(gallery_ds) if gallery_ds is not None else (None, None)
            embedded[name] = (q, ql, g, gl)
        values = {}
        per_k = {k: [] for k in self.ks}
        for name, (q, ql, g, gl) in embedded.items():
            recalls = recall_at_k(q, ql, self.ks, gallery_embeddings=g, gallery_labels=gl)
            for k, v in recalls.items():
                values[f"{self.prefix}{name}_recall@{k}"] = float(v)
                per_k[k].append(float(v))
        for k, vs in per_k.items():
            values[f"{self.prefix}recall@{k}"] = float(np.mean(vs))
        if self.fused:
            per_k = {k: [] for k in self.ks}
            for name, recalls in fused_recall(embedded, self.ks).items():
                for k, v in recalls.items():
                    values[f"{self.prefix}{name}_fused_recall@{k}"] = float(v)
                    per_k[k].append(float(v))
            for k, vs in per_k.items():
                values[f"{self.prefix}fused_recall@{k}"] = float(np.mean(vs))
        return values

    def _record(self, values, **where):
        entry = {"step": int(self.step), **where}
        entry.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
        self.history.append(entry)
        if self.history_path:
            text = json.dumps(self.history)
            atomic_write(self.history_path, lambda f: f.write(text))

    def resume_at(self, step):
        """Sets the global step of a resumed run (``fit_for_steps`` calls it after restoring).

        With ``history_path``, the evaluations saved there up to ``step`` become ``history``
        (later ones belong to steps the resumed run trains again). In the per-step schedule, an
        evaluation due at ``step`` that the interruption prevented (killed between the
        checkpoint and the evaluation) runs at the start of the next ``fit``, on the restored
        weights: the same model.
        """
        self.step = int(step)
        if self.history_path and os.path.exists(self.history_path):
            with open(self.history_path) as f:
                self.history = [h for h in json.load(f) if int(h["step"]) <= self.step]
        self._evaluate_on_begin = bool(
            self.every_n_steps and self.step and self.step % self.every_n_steps == 0
            and not any(int(h["step"]) == self.step for h in self.history))

    def on_train_begin(self, logs=None):
        if self._evaluate_on_begin:
            self._evaluate_on_begin = False
            self._record(self.evaluate())

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every_n_steps and self.step % self.every_n_steps == 0:
            self._record(self.evaluate())

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_steps or (epoch + 1) % self.every_n_epochs:
            return
        values = self.evaluate()
        if logs is not None:
            logs.update(values)
        self._record(values, epoch=int(epoch))


class SaveStudent(keras.callbacks.Callback):
    """Saves only ``model.student`` at the end of every epoch (a distiller's checkpoint).

    Teachers are inputs, and adapters or heads are training aids: the student is the result.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        atomic_save(self.model.student, self.path)
