"""Diagnostics of paper 002 (attention-based ensemble, ABE-M): PNG plots plus their numbers.

Like ``tfembed.evaluation.diagnostics`` (whose file helpers are reused), each ``plot_*`` function
writes ``<name>.png`` and ``<name>.json`` next to each other, both atomically, and returns the dict
written to JSON:

- ``plot_similarity_histograms`` -- Fig. 5: histograms (densities over shared bins on [-1, 1]) of
  the cosine similarity of *positive* pairs (same label, same learner; blue), *negative* pairs
  (different labels, same learner; red) and *self* pairs (same image, two different learners;
  green), one subplot per model (e.g. "ABE-8", "ABE-8 without L_div", "8-heads"). The
  similarities come from ``pair_similarities``. The JSON adds, per model and pair kind, count,
  mean, median, std and the 5th/95th percentiles, and ``separation`` = mean positive - mean
  negative. Self similarities close to 1 mean the learners compute nearly the same embedding
  (ABE without the divergence loss); the divergence loss pushes them down, i.e. diversifies the
  learners.
- ``plot_attention_masks`` -- Fig. 6: the attention masks ``A_m(S(x))`` of several learners over
  the input images. Columns are images; for each shown learner there is one row with the mask
  averaged over the channels of the spatial features and one row per chosen channel. Each cell is
  the image in grey with the mask, bilinearly upsampled to the image size, overlaid in colour.
  By default the chosen channels are those whose masks differ most across learners. The JSON adds
  the mean of each learner's mask and ``pairwise_mask_distance``: the M x M mean absolute
  difference between learners' masks over all images, positions and channels -- 0 when the
  learners attend to the same places, larger when they attend to different ones.

Inputs are numpy arrays (no TensorFlow here). Empty inputs, non-finite values, wrong shapes and
out-of-range values raise ``ValueError`` naming the input.

Similarities are cosines; the cosine involving a zero vector is taken as 0.
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import logging
from matplotlib.colors import Normalize

from tfembed.evaluation.diagnostics import (
    _as_finite,
    _legend,
    _new_figure,
    _paths,
    _require_mapping,
    _save_figure,
    _write_json,
)

PAIR_KINDS = ("positive", "negative", "self")
_KIND_STYLE = {"positive": ("tab:blue", "positive"), "negative": ("tab:red", "negative"),
               "self": ("tab:green", "self")}
# Pairs whose cosines are computed at once: bounds the [chunk, d] gathered embeddings.
_PAIR_CHUNK = 8192
# Cosines are clipped to [-1, 1]; values further out than this are not cosines (bad input).
_COS_TOLERANCE = 1e-6
_MASK_TOLERANCE = 1e-6
# ITU-R BT.601 luma weights, to show RGB images in grey under the coloured mask.
_LUMA = np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------------------------
# Fig. 5: cosine similarity of positive, negative and self pairs
# ----------------------------------------------------------------------------------------------

def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (last axis) scaled to unit norm; zero rows stay zero (their cosines are 0)."""
    # Dividing by the largest magnitude first keeps the norm from overflowing for huge values.
    scale = np.max(np.abs(x), axis=-1, keepdims=True)
    x = x / np.where(scale > 0, scale, 1.0)
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.where(norm > 0, norm, 1.0)


def _flat_to_ranges(flat: np.ndarray, lo: np.ndarray, counts: np.ndarray
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Pair number -> (row, column) when row r owns the columns ``lo[r] .. lo[r] + counts[r] - 1``.

    Pairs are numbered row by row, so drawing numbers instead of building the pairs keeps memory
    at O(rows + drawn pairs).
    """
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    row = np.searchsorted(starts, flat, side="right") - 1
    # Rows without pairs share their start with the next row; side="right" picks the last of
    # those rows, which is the one owning the pair (empty rows never own a pair).
    return row, lo[row] + (flat - starts[row])


def _draw(total: int, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """All numbers ``0 .. total - 1`` or ``max_pairs`` of them without replacement, sorted."""
    if total <= max_pairs:
        return np.arange(total, dtype=np.int64)
    return np.sort(rng.choice(total, size=max_pairs, replace=False)).astype(np.int64)


def _cosines(u: np.ndarray, m: np.ndarray, i: np.ndarray, q: np.ndarray, j: np.ndarray
             ) -> np.ndarray:
    """``cos(u[m, i], u[q, j])`` for unit-norm (or zero) rows, computed in chunks."""
    out = np.empty(i.shape[0], dtype=np.float64)
    for s in range(0, i.shape[0], _PAIR_CHUNK):
        e = s + _PAIR_CHUNK
        out[s:e] = np.einsum("ij,ij->i", u[m[s:e], i[s:e]], u[q[s:e], j[s:e]])
    return np.clip(out, -1.0, 1.0)


def pair_similarities(learner_embeddings, labels, max_pairs: int = 200000,
                      seed: int = 0) -> Dict[str, np.ndarray]:
    """Cosine similarities of positive, negative and self pairs of an ensemble (paper 002, Fig. 5).

    Args:
      learner_embeddings: ``[M, N, d]``: learner m's embedding ``B_m(x_n)`` of image n.
      labels: ``[N]`` class labels (any sortable values).
      max_pairs: a kind with more pairs than this gets a uniform random subset (without
        replacement) of exactly this many pairs; no ``[N, N]`` matrix is ever built.
      seed: seed of the subsets (each kind has its own stream, so one kind's subset does not depend
        on the size of another).

    Returns:
      ``{"positive", "negative", "self"}`` -> float64 arrays of cosines:

      - positive: for every learner m and images i < j with the same label,
        ``cos(B_m(x_i), B_m(x_j))``;
      - negative: the same over images with different labels;
      - self: for every image i and learners p < q, ``cos(B_p(x_i), B_q(x_i))`` (empty for M = 1).

      The cosine with a zero vector is 0. Values are clipped to [-1, 1] against round-off. The
      order of the values is unspecified (compare as multisets).

    Raises:
      ValueError: empty, non-3-D or non-finite embeddings, labels of another length, or
        ``max_pairs < 1``.
    """
    x = _as_finite(learner_embeddings, "learner_embeddings", ndim=3)
    num_learners, n, _ = x.shape
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be 1-D of length {n} (images in learner_embeddings), got "
                         f"shape {labels.shape}")
    max_pairs = int(max_pairs)
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    u = _unit_rows(x)

    # Images sorted by label: the positives of sorted row r are the columns r+1 .. end of its
    # class, the negatives (counted once, i < j in sorted order) the columns after its class.
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    new_class = np.concatenate([[True], sorted_labels[1:] != sorted_labels[:-1]])
    class_id = np.cumsum(new_class) - 1
    class_end = np.append(np.flatnonzero(new_class)[1:], n)[class_id]  # exclusive end, per row
    rows = np.arange(n, dtype=np.int64)
    ranges = {"positive": (rows + 1, class_end - rows - 1),
              "negative": (class_end, n - class_end)}

    out: Dict[str, np.ndarray] = {}
    for k, kind in enumerate(PAIR_KINDS):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, k])
        if kind == "self":
            pp, qq = np.triu_indices(num_learners, k=1)
            per_image = pp.shape[0]
            if per_image == 0 or n == 0:  # a single learner has no self pair
                out[kind] = np.zeros(0)
                continue
            flat = _draw(n * per_image, max_pairs, rng)
            img, pair = flat // per_image, flat % per_image
            out[kind] = _cosines(u, pp[pair], img, qq[pair], img)
            continue
        lo, counts = ranges[kind]
        per_learner = int(np.sum(counts))
        flat = _draw(num_learners * per_learner, max_pairs, rng)
        if flat.shape[0] == 0:
            out[kind] = np.zeros(0)
            continue
        m, within = flat // per_learner, flat % per_learner
        r, c = _flat_to_ranges(within, lo, counts)
        out[kind] = _cosines(u, m, order[r], m, order[c])
    return out


def _similarity_stats(s: np.ndarray) -> dict:
    if s.shape[0] == 0:
        return {"count": 0, "mean": None, "median": None, "std": None, "p05": None, "p95": None}
    p05, median, p95 = (float(v) for v in np.percentile(s, [5, 50, 95]))
    return {"count": int(s.shape[0]), "mean": float(np.mean(s)), "median": median,
            "std": float(np.std(s)), "p05": p05, "p95": p95}


def plot_similarity_histograms(panels: Mapping[str, Mapping[str, np.ndarray]], path,
                               bins: int = 50) -> dict:
    """Histograms of positive / negative / self cosine similarities, one subplot per model (Fig. 5).

    Args:
      panels: ``{title: pair_similarities(...) output}``, e.g. ``"ABE-8"``,
        ``"ABE-8 without L_div"``, ``"8-heads"``. ``"self"`` may be missing (taken as empty).
      path: PNG path; the JSON goes next to it with the ``.json`` suffix.
      bins: number of histogram bins, shared by all panels and kinds, over [-1, 1].

    Returns:
      The dict written to JSON: ``{"bins", "edges", "panels": {title: {"positive": stats,
      "negative": stats, "self": stats, "separation", "density": {kind: [bins] or None}}}}`` with
      stats ``{"count", "mean", "median", "std", "p05", "p95"}`` (std with ddof 0; None for an
      empty kind) and ``separation = mean positive - mean negative`` (None if either is empty).

    Raises:
      ValueError: no panels, ``bins < 1``, a panel without positive or negative similarities, or
        values that are non-finite or outside [-1, 1].
    """
    _require_mapping(panels, "panels")
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(-1.0, 1.0, bins + 1)
    data: Dict[str, dict] = {}
    arrays_by_title: Dict[str, Dict[str, np.ndarray]] = {}
    for title, sims in panels.items():
        if not isinstance(sims, Mapping):
            raise TypeError(f"panels[{title!r}] must be a pair_similarities dict")
        arrays, entry, density = {}, {}, {}
        for kind in PAIR_KINDS:
            name = f"panels[{title!r}][{kind!r}]"
            if kind not in sims:
                if kind == "self":
                    arrays[kind] = np.zeros(0)
                else:
                    raise ValueError(f"panels[{title!r}] lacks {kind!r}")
            else:
                arr = np.asarray(sims[kind], dtype=np.float64).reshape(-1)
                if arr.size and not np.all(np.isfinite(arr)):
                    raise ValueError(f"{name} contains NaN/inf values")
                if arr.size and np.max(np.abs(arr)) > 1.0 + _COS_TOLERANCE:
                    raise ValueError(f"{name}: cosine similarities must lie in [-1, 1], got range "
                                     f"[{arr.min()}, {arr.max()}]")
                arrays[kind] = np.clip(arr, -1.0, 1.0)
            if arrays[kind].size == 0 and kind != "self":
                logging.warning("%s: no similarities", name)
            entry[kind] = _similarity_stats(arrays[kind])
            density[kind] = (np.histogram(arrays[kind], bins=edges, density=True)[0].tolist()
                             if arrays[kind].size else None)
        pos, neg = entry["positive"]["mean"], entry["negative"]["mean"]
        entry["separation"] = None if pos is None or neg is None else pos - neg
        entry["density"] = density
        data[str(title)] = entry
        arrays_by_title[str(title)] = arrays

    fig, axes = _new_figure(len(data), max_cols=4)
    for ax, (title, entry) in zip(axes, data.items()):
        for kind, (colour, label) in _KIND_STYLE.items():
            arr, stats = arrays_by_title[title][kind], entry[kind]
            if stats["count"] == 0:
                continue
            label = f"{label} (n={stats['count']}, mean={stats['mean']:.3f})"
            ax.hist(arr, bins=edges, density=True, histtype="stepfilled", color=colour, alpha=0.3)
            ax.hist(arr, bins=edges, density=True, histtype="step", color=colour, label=label)
        if not any(entry[kind]["count"] for kind in PAIR_KINDS):
            ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
        sep = entry["separation"]
        ax.set_title(title if sep is None else f"{title}\nseparation {sep:.3f}",
                     fontsize="medium")
        ax.set_xlim(-1.0, 1.0)
        ax.set_xlabel("cosine similarity")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize="x-small", loc="upper left")

    out = {"bins": bins, "edges": edges.tolist(), "panels": data}
    png_path, json_path = _paths(path)
    _save_figure(fig, png_path)
    _write_json(json_path, out)
    return out


# ----------------------------------------------------------------------------------------------
# Fig. 6: attention masks of several learners
# ----------------------------------------------------------------------------------------------

def _linear_weights(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear resampling (half-pixel centres, edges clamped)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def bilinear_resize(a, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``a`` (``[h, w]`` or ``[h, w, K]``) to ``[height, width(, K)]``.

    Half-pixel-centre convention (as ``tf.image.resize(..., "bilinear")`` and OpenCV): sizes that
    do not change are returned unchanged and a constant input stays constant.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim not in (2, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"bilinear_resize needs a [h, w] or [h, w, K] array, got {a.shape}")
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {height} x {width}")
    r0, r1, wr = _linear_weights(a.shape[0], height)
    c0, c1, wc = _linear_weights(a.shape[1], width)
    trailing = (1,) * (a.ndim - 2)  # broadcast the weights over a K axis, if any
    wr = wr.reshape((-1, 1) + trailing)
    wc = wc.reshape((-1,) + trailing)
    rows = a[r0] * (1.0 - wr) + a[r1] * wr
    return rows[:, c0] * (1.0 - wc) + rows[:, c1] * wc


def _indices(values, size: int, name: str) -> list:
    idx = [int(v) for v in np.asarray(values).reshape(-1)]
    bad = [v for v in idx if not 0 <= v < size]
    if bad:
        raise ValueError(f"{name}: indices {bad} out of range [0, {size})")
    if len(set(idx)) != len(idx):
        raise ValueError(f"{name} contains duplicates: {idx}")
    return idx


def plot_attention_masks(images, masks, path, learners: Optional[Sequence[int]] = None,
                         channels: Optional[Sequence[int]] = None, max_images: int = 6) -> dict:
    """Attention masks of several learners over the input images (paper 002, Fig. 6).

    Args:
      images: ``[N, H, W, 3]`` (RGB) or ``[N, H, W, 1]`` (grey) pixels in [0, 255].
      masks: ``[N, h, w, M, C]`` masks in [0, 1] of the M learners over the C channels of the
        spatial features, at the feature map's resolution (h <= H, w <= W).
      path: PNG path; the JSON goes next to it with the ``.json`` suffix.
      learners: learners shown, one row group each (default: the first ``min(3, M)``).
      channels: channels shown, one row each under the channel-averaged row (default: the 2
        channels whose masks vary most across learners -- variance over learners averaged over
        images and positions -- highest first; ties go to the lower channel). May be empty.
      max_images: columns: the first ``min(N, max_images)`` images.

    Returns:
      The dict written to JSON: ``{"images_shown", "image_size": [H, W], "mask_size": [h, w],
      "learners", "channels", "channel_learner_variance": [per chosen channel],
      "mean_mask": [M] (mean of each learner's channel-averaged mask over all images and
      positions), "pairwise_mask_distance": M x M, "mean_pairwise_mask_distance"}``.
      ``pairwise_mask_distance[p][q]`` is the mean absolute difference between the masks of
      learners p and q over all images, positions and channels (0 on the diagonal);
      the mean is over p != q (None when M = 1).

    Raises:
      ValueError: wrong shapes, N mismatch, a mask larger than the image, values out of range,
        non-finite values, bad learner / channel indices or ``max_images < 1``.
    """
    img = _as_finite(images, "images", ndim=4)
    if img.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, 3] or [N, H, W, 1], got shape {img.shape}")
    if img.min() < 0.0 or img.max() > 255.0:
        raise ValueError(f"images: pixels must lie in [0, 255], got range "
                         f"[{img.min()}, {img.max()}]")
    msk = _as_finite(masks, "masks", ndim=5)
    n, height, width = img.shape[:3]
    _, h, w, num_learners, num_channels = msk.shape
    if msk.shape[0] != n:
        raise ValueError(f"masks has {msk.shape[0]} images, images has {n}")
    if h > height or w > width:
        raise ValueError(f"masks resolution {h} x {w} exceeds the image size {height} x {width}")
    if msk.min() < -_MASK_TOLERANCE or msk.max() > 1.0 + _MASK_TOLERANCE:
        raise ValueError(f"masks: values must lie in [0, 1], got range [{msk.min()}, {msk.max()}]")
    msk = np.clip(msk, 0.0, 1.0)
    max_images = int(max_images)
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")

    learners = (list(range(min(3, num_learners))) if learners is None
                else _indices(learners, num_learners, "learners"))
    if not learners:
        raise ValueError("learners is empty")
    # Variance over learners, averaged over images and positions: [C].
    channel_score = np.mean(np.var(msk, axis=3), axis=(0, 1, 2))
    if channels is None:
        channels = [int(c) for c in np.argsort(-channel_score, kind="stable")[:2]]
    else:
        channels = _indices(channels, num_channels, "channels")

    # Mean absolute difference between two learners' masks, one pair at a time: no [.., M, M, C].
    distance = np.zeros((num_learners, num_learners))
    for p in range(num_learners):
        for q in range(p + 1, num_learners):
            distance[p, q] = distance[q, p] = float(np.mean(np.abs(msk[:, :, :, p, :]
                                                                   - msk[:, :, :, q, :])))
    off_diag = distance[~np.eye(num_learners, dtype=bool)]

    shown = min(n, max_images)
    grey = img[:shown] @ _LUMA if img.shape[-1] == 3 else img[:shown, ..., 0]
    mean_over_channels = msk[:shown].mean(axis=-1)  # [shown, h, w, M]
    row_specs = [(m, c) for m in learners for c in [None] + channels]
    fig, axes = _new_figure(len(row_specs) * shown, panel_size=(2.2, 2.2), max_cols=shown)
    norm = Normalize(vmin=0.0, vmax=1.0)
    overlay = None
    for r, (m, c) in enumerate(row_specs):
        for col in range(shown):
            ax = axes[r * shown + col]
            mask = mean_over_channels[col, :, :, m] if c is None else msk[col, :, :, m, c]
            ax.imshow(grey[col], cmap="gray", vmin=0.0, vmax=255.0)
            overlay = ax.imshow(bilinear_resize(mask, height, width), cmap="jet", norm=norm,
                                alpha=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"image {col}", fontsize="small")
            if col == 0:
                ax.set_ylabel(f"learner {m}\n" + ("mean of channels" if c is None
                                                  else f"channel {c}"), fontsize="small")
    fig.colorbar(overlay, ax=axes, shrink=0.6, label="attention")

    data = {
        "images_shown": shown,
        "image_size": [int(height), int(width)],
        "mask_size": [int(h), int(w)],
        "learners": learners,
        "channels": channels,
        "channel_learner_variance": [float(channel_score[c]) for c in channels],
        "mean_mask": [float(v) for v in msk.mean(axis=(0, 1, 2, 4))],
        "pairwise_mask_distance": distance.tolist(),
        "mean_pairwise_mask_distance": float(off_diag.mean()) if off_diag.size else None,
    }
    png_path, json_path = _paths(path)
    _save_figure(fig, png_path)
    _write_json(json_path, data)
    return data
