"""Dynamic domain sampling (UDON, Ypsilantis et al., NeurIPS 2024): more batches for the domains
that are learning slowest.

UDON's rule (its public code, nikosips/UDON ``sampling_utils.py``): every ``interval`` steps,
each domain's sampling weight becomes its mean training loss over the last interval divided by
the sum over domains (a domain that drew no batch in the interval keeps its previous weight, and
the weights are renormalised); the next interval's batches are laid out in proportion to the
weights and shuffled. UDON starts from round-robin (equal shares) and updates every 1000 steps
from its teacher heads' classification losses; the loss here is each domain's distillation loss
of the universal student (``loss_<domain>`` of :class:`~tfembed.universal.UniversalDistiller`),
which is what this trainer has per domain.

Two differences of form, both ours: an interval's domains are its exact shares (largest
remainders), shuffled within the interval, where UDON lays the shares over the whole remaining
run and reads the current interval's slice of that permutation (the same expected shares, less
variance); and the interval is an epoch of the run (``steps_per_epoch``), so the update happens
where the run checkpoints and evaluates.

Everything is a function of the seed and the loss history, which is written to
``sampling.json`` in the run directory *before* the training state of the same step, together
with the current interval's running loss sums whenever the training state is checkpointed
mid-interval: a run killed at any point resumes with the same schedule and the same update
(entries after the restored step are dropped and recomputed).
"""

import json
import os
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
from absl import logging

from tfembed.data.pipeline import batches
from tfembed.data.samplers import Scheduled
from tfembed.io import atomic_write

INITIAL = ("balanced", "size")


def shares(weights: Sequence[float], steps: int) -> np.ndarray:
    """``steps`` split in proportion to ``weights``: floors, then the largest remainders (ties
    to the lower domain id)."""
    w = np.asarray(weights, np.float64)
    exact = w / w.sum() * steps
    counts = np.floor(exact).astype(np.int64)
    rest = steps - counts.sum()
    order = np.lexsort((np.arange(len(w)), -(exact - counts)))
    counts[order[:rest]] += 1
    return counts


class DynamicDomainSampling:
    """The domain schedule of a run under UDON's dynamic sampling.

    Args:
      sizes: training images per domain (used by ``initial="size"``).
      interval: steps between weight updates (the run's ``steps_per_epoch``).
      seed: the recipe seed.
      initial: starting weights, ``"balanced"`` (UDON's round-robin shares) or ``"size"``
        (domain-specific sampling's, ∝ images).
      path: where the history is kept (``<run_dir>/sampling.json``); None keeps it in memory.
    """

    def __init__(self, sizes: Sequence[int], interval: int, seed: int = 0,
                 initial: str = "balanced", path: Optional[str] = None):
        if initial not in INITIAL:
            raise ValueError(f"dynamic sampling: initial must be one of {INITIAL}, got {initial!r}")
        if int(interval) < 1:
            raise ValueError(f"dynamic sampling: interval must be >= 1, got {interval!r}")
        self.sizes = [int(n) for n in sizes]
        self.interval, self.seed, self.initial = int(interval), int(seed), initial
        self.path = path
        start = (np.ones(len(self.sizes)) if initial == "balanced"
                 else np.asarray(self.sizes, np.float64))
        self.history: List[Dict] = [{"step": 0, "weights": (start / start.sum()).tolist()}]
        # The current interval's loss sums and batch counts per domain, up to step "step"; and
        # the ones written with the last few training-state checkpoints (the state keeps two).
        self.pending = self._zeros(0)
        self.checkpointed: Dict[str, Dict] = {}
        if path and os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            setup = {"sizes": self.sizes, "interval": self.interval, "seed": self.seed,
                     "initial": self.initial}
            if {k: saved.get(k) for k in setup} != setup:
                raise ValueError(f"{path} was written for another run ({saved.get('sizes')} "
                                 f"images, interval {saved.get('interval')}); use a fresh "
                                 "run directory")
            self.history = saved["history"]
            self.checkpointed = saved.get("checkpointed", {})

    # ------------------------------------------------------------------------------ schedule

    def weights_at(self, step: int) -> np.ndarray:
        """The weights in force at ``step``: the last update at or before its interval's start."""
        start = step - step % self.interval
        return np.asarray([h for h in self.history if h["step"] <= start][-1]["weights"])

    def schedule(self, start: int) -> np.ndarray:
        """The domains of steps ``[start, start + interval)`` (``start`` an interval boundary)."""
        if start % self.interval:
            raise ValueError(f"step {start} is not an interval boundary ({self.interval})")
        counts = shares(self.weights_at(start), self.interval)
        domains = np.repeat(np.arange(len(counts)), counts)
        return np.random.default_rng([self.seed, 0xD0, start]).permutation(domains)

    def resume_at(self, step: int):
        """Continues from ``step``: drops updates after it (written before a kill that lost
        their training state: replaying the steps recomputes them) and takes the interval's
        loss sums saved with the state at ``step`` (none at an interval boundary)."""
        self.history = [h for h in self.history if h["step"] <= step]
        if step % self.interval == 0:
            self.pending = self._zeros(step)
        elif str(step) in self.checkpointed:
            self.pending = json.loads(json.dumps(self.checkpointed[str(step)]))
        else:
            logging.warning("dynamic sampling: no loss sums saved for step %d; the update at the "
                            "end of this interval uses its remaining steps only", step)
            self.pending = self._zeros(step)

    def _zeros(self, step):
        m = len(self.sizes)
        return {"step": int(step), "sums": [0.0] * m, "counts": [0] * m}

    def record(self, step: int, domain: int, loss: float):
        """Adds one batch's loss to its domain's running sum of the current interval."""
        self.pending["sums"][domain] += float(loss)
        self.pending["counts"][domain] += 1
        self.pending["step"] = int(step)

    def save(self, checkpoint: bool = False):
        """Writes ``sampling.json``; ``checkpoint``: the training state is about to be saved at
        the current step, so its running sums are kept for a resume from there."""
        if checkpoint:
            self.checkpointed[str(self.pending["step"])] = json.loads(json.dumps(self.pending))
            for old in sorted(self.checkpointed, key=int)[:-3]:
                del self.checkpointed[old]
        if self.path:
            record = {"sizes": self.sizes, "interval": self.interval, "seed": self.seed,
                      "initial": self.initial, "history": self.history,
                      "checkpointed": self.checkpointed}
            atomic_write(self.path, lambda f: json.dump(record, f, indent=1))

    # -------------------------------------------------------------------------------- update

    def end_interval(self, step: int) -> np.ndarray:
        """The update at the end of the interval ending at ``step``, from the recorded losses."""
        losses = [s / c if c else None
                  for s, c in zip(self.pending["sums"], self.pending["counts"])]
        new = self.update(step, losses)
        self.pending = self._zeros(step)
        self.save()
        return new

    def update(self, step: int, losses: Sequence[Optional[float]]) -> np.ndarray:
        """UDON's rule at the end of an interval: weights ∝ each domain's mean loss over it;
        a domain with no batch in it (None) keeps its weight; renormalised. Saved at once."""
        old = self.weights_at(step - 1)
        seen = [d for d, v in enumerate(losses) if v is not None and np.isfinite(v)]
        new = old.copy()
        total = sum(max(float(losses[d]), 0.0) for d in seen)
        if seen and total > 0:
            for d in seen:
                new[d] = max(float(losses[d]), 0.0) / total
            new = new / new.sum()
        self.history = [h for h in self.history if h["step"] < step]
        self.history.append({"step": int(step), "losses": [None if v is None else float(v)
                                                            for v in losses],
                             "weights": new.tolist()})
        logging.info("dynamic sampling at step %d: losses %s → weights %s", step,
                     ["-" if v is None else f"{v:.4g}" for v in losses],
                     [f"{w:.3f}" for w in new])
        return new

    def callback(self, trainer, state):
        """The Keras callback that updates the weights at each interval's last step, from the
        trainer's per-domain loss trackers; it must run before ``state`` (the training state)
        saves that step."""
        return _Update(self, trainer, state)


class DynamicStream:
    """The training stream under a :class:`DynamicDomainSampling`: ``stream(start_step)`` is
    the batches of ``start_step``'s interval from there on (c×k per batch, the domains its
    policy scheduled); ``fit_for_steps`` rebuilds it after every interval's update.

    ``options``: the keywords of :func:`tfembed.data.batches` (``spec``, ``augment``, ``view``,
    ``seed``, ``label_offsets``, ``multi_domain``).
    """

    def __init__(self, dynamic: DynamicDomainSampling, splits, classes_per_batch: int,
                 images_per_class: int, **options):
        self.dynamic, self.splits = dynamic, list(splits)
        self.classes_per_batch, self.images_per_class = int(classes_per_batch), \
            int(images_per_class)
        self.options = dict(options, seed=int(options.get("seed", dynamic.seed)))

    def __call__(self, start_step=0):
        first = start_step - start_step % self.dynamic.interval
        sampler = Scheduled(self.classes_per_batch, self.images_per_class,
                            tuple(int(d) for d in self.dynamic.schedule(first)), first)
        return batches(self.splits, sampler, start_step=start_step, **self.options)


class _Update(keras.callbacks.Callback):
    """Reads each batch's loss (the trainer's ``batch_loss``, exact) and domain (the per-domain
    Keras ``Mean`` tracker whose count grew since the previous batch; they reset at each epoch's
    start), records it, writes the running sums before the training state checkpoints
    mid-interval, and updates the weights at the interval's last step."""

    def __init__(self, sampling, trainer, state):
        super().__init__()
        self.sampling, self.trainer, self.state = sampling, trainer, state
        self._seen = None

    def _read(self):
        return [float(t.count.numpy()) for t in self.trainer.domain_trackers]

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = None   # the trackers restart from zero

    def on_train_batch_end(self, batch, logs=None):
        step = self.state.step + 1   # the training state counts this step after us
        now = self._read()
        before = self._seen or [0.0] * len(now)
        self._seen = now
        loss = float(self.trainer.batch_loss.result().numpy())
        for d, (count, count0) in enumerate(zip(now, before)):
            if count > count0:   # the batch's domain
                self.sampling.record(step, d, loss)
        self.sampling.pending["step"] = step
        if step % self.sampling.interval == 0:
            self.sampling.end_interval(step)
        elif step % self.state.every_n_steps == 0 or self.state.preempt_requested:
            self.sampling.save(checkpoint=True)   # the state saved at this step resumes with it
