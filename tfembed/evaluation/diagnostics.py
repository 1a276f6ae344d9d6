"""Training diagnostics of paper 000: PNG plots in the run directory plus the numbers behind them.

Each ``plot_*`` function writes ``<name>.png`` and ``<name>.json`` next to each other (both
atomically: temporary file in the same directory + ``os.replace``, so a crash never leaves a
half-written file that a later reader would trip on) and returns the dict written to JSON:

- ``plot_recall_curves`` -- Fig. 2(a/b): Recall@k of each domain along training, one subplot per
  model. The JSON adds, per model and domain, the best value, its epoch and the last value, so
  "early overfitting" (best long before the end) is visible in numbers.
- ``plot_tsne`` -- Fig. 4: t-SNE of several domains' embeddings, one subplot per model. The JSON
  adds ``domain_nn_purity``: the fraction of points whose nearest neighbour in the *original*
  embedding space (t-SNE distorts distances) belongs to the same domain, with its chance level.
- ``plot_pca_spectra`` -- Fig. 5: PCA eigenvalues of each domain's embeddings under several models.
  The JSON adds the number of components explaining 90 % of the variance and the participation
  ratio ``(sum λ)² / sum λ²`` (an "effective dimension").
- ``plot_distance_ratio_density`` -- Fig. 2(c): density of ``student distance / teacher distance``
  over intra- and inter-class pairs. The JSON adds count, mean, median, std, 5th/95th percentiles
  and the coefficient of variation (std / mean; 0 when the two models' distances are proportional).

Inputs are numpy arrays (no TensorFlow here). Empty inputs and non-finite values raise
``ValueError`` naming the input; a domain with a single point, which carries no spread, no
neighbour and no pair, is skipped with an ``absl.logging`` warning.

Distances are Euclidean, as in ``tfembed.evaluation.retrieval``.
"""

import json
import os
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import matplotlib

# Headless by default. If pyplot is already imported (a notebook), keep its backend: switching
# would close the user's figures. Nothing below goes through pyplot anyway -- figures are plain
# ``Figure`` objects drawn by the Agg canvas -- so no display is ever opened either way.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tfembed.io import atomic_write  # noqa: E402

INDEX_FILENAME = "diagnostics.json"
_MIN_TEACHER_DISTANCE = 1e-12
# Rows of the [block, N] distance block in domain_nn_purity: 512 x 5000 float64 = 20 MB.
_PURITY_BLOCK = 512
# Pairs whose distances are computed at once in distance_ratios: bounds the [chunk, D] differences.
_PAIR_CHUNK = 8192
# A Gaussian KDE costs O(points x grid); more points than this do not change the curve visibly.
_KDE_MAX_POINTS = 20000
_KDE_GRID = 256


# ----------------------------------------------------------------------------------------------
# Validation and file helpers
# ----------------------------------------------------------------------------------------------

def _as_finite(values, name: str, ndim: Optional[int] = None) -> np.ndarray:
    """``values`` as float64, raising ValueError if empty, of the wrong rank or non-finite."""
    arr = np.asarray(values, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN/inf value(s)")
    return arr


def _require_mapping(obj, name: str) -> None:
    if not isinstance(obj, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(obj).__name__}")
    if not obj:
        raise ValueError(f"{name} is empty")


def _paths(path) -> Tuple[str, str]:
    """``(png_path, json_path)`` for ``path`` (``x.png`` -> ``x.json``; no ``.png`` is appended)."""
    path = os.fspath(path)
    root, ext = os.path.splitext(path)
    if ext.lower() != ".png":
        root = path
    return root + ".png", root + ".json"


def _write_json(path: str, data: dict) -> None:
    # allow_nan=False: undefined statistics must already be None (JSON null), never NaN, which
    # strict JSON readers reject.
    text = json.dumps(data, indent=1, allow_nan=False)
    atomic_write(path, lambda f: f.write(text + "\n"), "w")


def _new_figure(n_panels: int, panel_size=(4.5, 3.6), sharey: bool = False, max_cols: int = 5):
    # Wrap into rows of at most ``max_cols`` panels so many panels stay readable.
    cols = max(1, min(n_panels, max_cols))
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), constrained_layout=True)
    FigureCanvasAgg(fig)  # attaches the Agg canvas: rendering never involves a GUI backend
    grid = fig.subplots(rows, cols, sharey=sharey, squeeze=False).ravel()
    for ax in grid[n_panels:]:
        ax.set_visible(False)
    return fig, list(grid[:n_panels])


def _save_figure(fig: Figure, png_path: str) -> None:
    try:
        atomic_write(png_path, lambda f: fig.savefig(f, format="png", dpi=100), "wb")
    finally:
        # The figure is not registered with pyplot, so clearing it is all "closing" means here:
        # it frees the artists now rather than at the next garbage collection.
        fig.clf()


def _num(x):
    """A JSON number: an int for integral values (epochs, steps), else a float."""
    x = float(x)
    return int(x) if x.is_integer() else x


def _legend(ax, **kwargs) -> None:
    # A panel with nothing labelled (e.g. no pairs) gets no legend instead of a matplotlib warning.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


# ----------------------------------------------------------------------------------------------
# Fig. 2(a/b): Recall@k along training
# ----------------------------------------------------------------------------------------------

def plot_recall_curves(histories: Mapping[str, Mapping[str, Sequence[Tuple[float, float]]]], path,
                       k: int = 1, *, x_label: str = "epoch") -> dict:
    """Recall@k of each domain along training, one subplot per model (paper 000, Fig. 2(a/b)).

    Args:
      histories: ``{model_name: {domain: [(epoch_or_step, recall_at_k), ...]}}`` with recalls as
        fractions in [0, 1] (plotted in percent). Points are sorted by epoch; a domain evaluated
        once is kept (its best and last value coincide).
      path: PNG path; the JSON goes next to it with the ``.json`` suffix.
      k: the k of Recall@k, for labels.
      x_label: label of the x axis ("epoch" or "step").

    Returns:
      The dict written to JSON: ``{"k", "x_label", "models": {model: {domain: {"points":
      [[epoch, recall], ...], "best", "best_epoch", "last", "last_epoch", "drop_from_best"}}}}``
      with recalls as fractions. ``best_epoch`` is the earliest epoch reaching the best value;
      ``drop_from_best = best - last`` (> 0 when the domain overfits before the end).

    Raises:
      ValueError: empty histories, a model without domains, a domain without points, NaN
        recalls or recalls outside [0, 1] (percent given instead of fractions).
    """
    _require_mapping(histories, "histories")
    k = int(k)
    models: Dict[str, Dict[str, dict]] = {}
    for model, domains in histories.items():
        _require_mapping(domains, f"histories[{model!r}]")
        models[str(model)] = {}
        for domain, points in domains.items():
            name = f"histories[{model!r}][{domain!r}]"
            arr = _as_finite(points, name)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise ValueError(f"{name} must be a sequence of (epoch, recall) pairs, "
                                 f"got shape {arr.shape}")
            if np.any(arr[:, 1] < 0.0) or np.any(arr[:, 1] > 1.0):
                raise ValueError(f"{name}: recalls must be fractions in [0, 1], got range "
                                 f"[{arr[:, 1].min()}, {arr[:, 1].max()}]")
            arr = arr[np.argsort(arr[:, 0], kind="stable")]
            best_i = int(np.argmax(arr[:, 1]))  # argmax returns the first (earliest) maximum
            models[str(model)][str(domain)] = {
                "points": [[_num(x), float(y)] for x, y in arr],
                "best": float(arr[best_i, 1]),
                "best_epoch": _num(arr[best_i, 0]),
                "last": float(arr[-1, 1]),
                "last_epoch": _num(arr[-1, 0]),
                "drop_from_best": float(arr[best_i, 1] - arr[-1, 1]),
            }

    # One colour per domain across all subplots, so a domain reads the same in each panel.
    all_domains = list(dict.fromkeys(d for per in models.values() for d in per))
    colours = _domain_colours(all_domains)
    fig, axes = _new_figure(len(models), sharey=True)
    for ax, (model, per_domain) in zip(axes, models.items()):
        for domain, rec in per_domain.items():
            pts = np.asarray(rec["points"], dtype=np.float64)
            ax.plot(pts[:, 0], 100.0 * pts[:, 1], marker="o", markersize=3, label=domain,
                    color=colours[domain])
            # The best point is marked: its distance from the right end is the overfitting.
            ax.plot([rec["best_epoch"]], [100.0 * rec["best"]], marker="*", markersize=10,
                    color=colours[domain], linestyle="none")
        ax.set_title(model)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize="small")
    axes[0].set_ylabel(f"Recall@{k} (%)")

    data = {"k": k, "x_label": str(x_label), "models": models}
    png_path, json_path = _paths(path)
    _save_figure(fig, png_path)
    _write_json(json_path, data)
    return data


def _domain_colours(names: Sequence[str]) -> Dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


# ----------------------------------------------------------------------------------------------
# Fig. 4: t-SNE of the domains and the nearest-neighbour domain purity
# ----------------------------------------------------------------------------------------------

def _subsample_domains(embeddings_by_domain: Mapping[str, np.ndarray], max_points_per_domain: int,
                       seed: int, name: str = "embeddings_by_domain"):
    """Stacked ``(X [N, D], domain_ids [N], domain_names)``, each domain subsampled (seeded).

    Domains with a single point are skipped with a warning.
    """
    _require_mapping(embeddings_by_domain, name)
    max_points_per_domain = int(max_points_per_domain)
    if max_points_per_domain < 2:
        raise ValueError(f"max_points_per_domain must be >= 2, got {max_points_per_domain}")
    blocks, ids, names, dim = [], [], [], None
    for domain, emb in embeddings_by_domain.items():
        arr = _as_finite(emb, f"{name}[{domain!r}]", ndim=2)
        if dim is None:
            dim = arr.shape[1]
        elif arr.shape[1] != dim:
            raise ValueError(f"{name}[{domain!r}] has dimension {arr.shape[1]}, others {dim}")
        if arr.shape[0] < 2:
            logging.warning("%s: domain %r has a single point; skipped", name, domain)
            continue
        if arr.shape[0] > max_points_per_domain:
            # Seeded by (seed, domain name) so a domain's subsample does not change when other
            # domains are added or reordered; sorted so the kept points stay in input order.
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF,
                                         *str(domain).encode("utf-8")])
            keep = np.sort(rng.choice(arr.shape[0], max_points_per_domain, replace=False))
            arr = arr[keep]
        blocks.append(arr)
        ids.append(np.full(arr.shape[0], len(names), dtype=np.int64))
        names.append(str(domain))
    if not blocks:
        raise ValueError(f"{name}: no domain has at least 2 points")
    return np.concatenate(blocks), np.concatenate(ids), names


def _run_tsne(x: np.ndarray, perplexity: float, seed: int) -> Tuple[np.ndarray, float]:
    from sklearn.manifold import TSNE  # imported lazily: only t-SNE needs it, and it is slow

    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    # sklearn requires perplexity < N, and with perplexity p it uses ~3p neighbours; clipping to
    # (N - 1) / 3 keeps tiny inputs valid without changing anything at realistic sizes.
    used = float(min(float(perplexity), (n - 1) / 3.0))
    if used < float(perplexity):
        logging.info("t-SNE on %d points: perplexity %.3g clipped to %.3g", n, perplexity, used)
    # PCA initialisation needs at least 2 input dimensions.
    init = "pca" if x.shape[1] >= 2 else "random"
    tsne = TSNE(n_components=2, perplexity=used, init=init, learning_rate="auto",
                random_state=int(seed))
    return np.asarray(tsne.fit_transform(x), dtype=np.float64), used


def tsne_embeddings(embeddings_by_domain: Mapping[str, np.ndarray], perplexity: float = 50,
                    max_points_per_domain: int = 1000, seed: int = 0
                    ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """2-D t-SNE of several domains' embeddings computed by one model (paper 000: perplexity 50).

    Args:
      embeddings_by_domain: ``{domain: [n_d, D] embeddings}`` (same D for all domains).
      perplexity: t-SNE perplexity, clipped to ``(N - 1) / 3`` for tiny inputs.
      max_points_per_domain: larger domains are subsampled to this many points (seeded).
      seed: seed of the subsampling and of t-SNE.

    Returns:
      ``(points [N, 2] float64, domain_ids [N] int64, domain_names)`` where ``domain_ids`` index
      ``domain_names`` (input order; single-point domains are skipped with a warning).

    Raises:
      ValueError: no domains, an empty or non-finite embedding, mismatched dimensions, or fewer
        than 3 points in total.
    """
    x, ids, names = _subsample_domains(embeddings_by_domain, max_points_per_domain, seed)
    points, _ = _run_tsne(x, perplexity, seed)
    return points, ids, names


def domain_nn_purity(embeddings, domain_ids, block_size: int = _PURITY_BLOCK) -> float:
    """Fraction of points whose nearest other point (Euclidean) belongs to the same domain.

    1 means the domains occupy separate regions of the space; mixed domains give about the chance
    level ``sum_d n_d (n_d - 1) / (N (N - 1))`` (see ``chance_nn_purity``). Computed over
    ``block_size`` rows at a time, so memory is ``O(block_size * N)``.

    Args:
      embeddings: ``[N, D]`` embeddings, N >= 2.
      domain_ids: ``[N]`` domain of each point (any comparable labels).
      block_size: rows of the distance block.

    Returns:
      The purity as a Python float. Among equidistant neighbours the lowest index counts.
    """
    x = _as_finite(embeddings, "embeddings", ndim=2)
    ids = np.asarray(domain_ids).reshape(-1)
    n = x.shape[0]
    if ids.shape[0] != n:
        raise ValueError(f"{n} embeddings but {ids.shape[0]} domain ids")
    if n < 2:
        raise ValueError("domain_nn_purity needs at least 2 points")
    # Centring does not change distances but reduces the cancellation in |a|^2 + |b|^2 - 2ab.
    x = x - x.mean(axis=0)
    sq = np.einsum("ij,ij->i", x, x)
    same = 0
    for start in range(0, n, int(block_size)):
        stop = min(start + int(block_size), n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf  # a point is not its own NN
        nn = np.argmin(d2, axis=1)
        same += int(np.sum(ids[nn] == ids[start:stop]))
    return same / n


def chance_nn_purity(domain_ids) -> float:
    """Expected ``domain_nn_purity`` if the nearest neighbour were a random other point."""
    ids = np.asarray(domain_ids).reshape(-1)
    n = ids.shape[0]
    if n < 2:
        raise ValueError("chance_nn_purity needs at least 2 points")
    _, counts = np.unique(ids, return_counts=True)
    counts = counts.astype(np.float64)
    return float(np.sum(counts * (counts - 1.0)) / (n * (n - 1.0)))


def plot_tsne(panels: Mapping[str, Mapping[str, np.ndarray]], path, *, perplexity: float = 50,
              max_points_per_domain: int = 1000, seed: int = 0) -> dict:
    """t-SNE scatter of the domains, one subplot per model (paper 000, Fig. 4).

    Args:
      panels: ``{panel_title: {domain: [n_d, D] embeddings}}``, e.g. ``"random init"``,
        ``"specialists"``, ``"universal/snd"``. Each panel gets its own t-SNE.
      path: PNG path; the JSON goes next to it with the ``.json`` suffix.
      perplexity, max_points_per_domain, seed: as in ``tsne_embeddings``.

    Returns:
      The dict written to JSON: ``{"panels": {title: {"points": [[x, y], ...], "domain_ids",
      "domain_names", "domain_counts", "perplexity", "domain_nn_purity", "chance_nn_purity"}}}``.
      The purity is measured in the original embedding space on the same (subsampled) points.
    """
    _require_mapping(panels, "panels")
    data: Dict[str, dict] = {}
    for title, by_domain in panels.items():
        x, ids, names = _subsample_domains(by_domain, max_points_per_domain, seed,
                                           name=f"panels[{title!r}]")
        points, used = _run_tsne(x, perplexity, seed)
        data[str(title)] = {
            # 4 decimals of t-SNE coordinates (range ~ +-50) are far below what a plot shows.
            "points": np.round(points, 4).tolist(),
            "domain_ids": ids.tolist(),
            "domain_names": names,
            "domain_counts": {nm: int(np.sum(ids == i)) for i, nm in enumerate(names)},
            "perplexity": used,
            "domain_nn_purity": domain_nn_purity(x, ids),
            "chance_nn_purity": chance_nn_purity(ids),
        }

    all_domains = list(dict.fromkeys(d for p in data.values() for d in p["domain_names"]))
    colours = _domain_colours(all_domains)
    fig, axes = _new_figure(len(data), panel_size=(4.5, 4.5))
    for ax, (title, panel) in zip(axes, data.items()):
        pts = np.asarray(panel["points"])
        ids = np.asarray(panel["domain_ids"])
        for i, domain in enumerate(panel["domain_names"]):
            sel = ids == i
            ax.scatter(pts[sel, 0], pts[sel, 1], s=4, alpha=0.6, color=colours[domain],
                       label=domain, rasterized=True)
        ax.set_title(f"{title}\nNN domain purity {panel['domain_nn_purity']:.3f} "
                     f"(chance {panel['chance_nn_purity']:.3f})", fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
        _legend(ax, fontsize="small", markerscale=3)

    out = {"panels": data}
    png_path, json_path = _paths(path)
    _save_figure(fig, png_path)
    _write_json(json_path, out)
    return out


# ----------------------------------------------------------------------------------------------
# Fig. 5: PCA spectra
# ----------------------------------------------------------------------------------------------

def pca_spectrum(embeddings, n: Optional[int] = None) -> np.ndarray:
    """Descending eigenvalues of the covariance (``np.cov``, ddof=1) of the embeddings.

    Args:
      embeddings: ``[N, D]``, N >= 2.
      n: keep the ``n`` largest eigenvalues (all D when None or larger than D).

    Returns:
      ``[min(n, D)]`` float64 eigenvalues, largest first; round-off negatives are set to 0.
    """
    x = _as_finite(embeddings, "embeddings", ndim=2)
    num, dim = x.shape
    if num < 2:
        raise ValueError(f"pca_spectrum needs at least 2 embeddings, got {num}")
    if n is not None and int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    x = x - x.mean(axis=0)
    if num < dim:
        # Fewer points than dimensions (e.g. 2048-D backbone features): the SVD of the centred
        # [N, D] data is cheaper than eigvalsh of the D x D covariance, and the remaining
        # D - N eigenvalues are exactly 0.
        s = np.linalg.svd(x, compute_uv=False)
        eig = np.zeros(dim)
        eig[: s.shape[0]] = s ** 2 / (num - 1)
    else:
        eig = np.linalg.eigvalsh(x.T @ x / (num - 1))[::-1]
    eig = np.sort(np.maximum(eig, 0.0))[::-1]
    return eig if n is None else eig[: int(n)]


def _spectrum_stats(eig: np.ndarray) -> dict:
    total = float(np.sum(eig))
    if total <= 0.0:
        return {"total_variance": total, "n_components_90": 0, "participation_ratio": None}
    frac = np.cumsum(eig) / total
    # The 1e-12 slack keeps an exactly-90 % cumulative sum from missing because of rounding.
    n90 = int(np.searchsorted(frac, 0.9 - 1e-12) + 1)
    return {"total_variance": total, "n_components_90": min(n90, int(eig.shape[0])),
            "participation_ratio": float(total ** 2 / np.sum(eig ** 2))}


def plot_pca_spectra(spectra: Mapping[str, Mapping[str, np.ndarray]], path, top: int = 32) -> dict:
    """PCA eigenvalues per domain, one curve per model (paper 000, Fig. 5).

    Args:
      spectra: ``{domain: {model_name: eigenvalues}}``. A 1-D array is taken as eigenvalues
        (sorted descending here); a 2-D ``[N, D]`` array as embeddings, whose ``pca_spectrum``
        is used (an array of a single embedding is skipped with a warning).
      path: PNG path; the JSON goes next to it with the ``.json`` suffix.
      top: number of leading eigenvalues plotted (the JSON keeps all of them).

    Returns:
      The dict written to JSON: ``{"top", "domains": {domain: {model: {"eigenvalues",
      "total_variance", "n_components_90", "participation_ratio"}}}}``. ``n_components_90`` is the
      smallest number of components explaining >= 90 % of the variance; the participation ratio
      ``(sum λ)² / sum λ²`` is the effective dimension (None when all variance is 0).
    """
    _require_mapping(spectra, "spectra")
    top = int(top)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    domains: Dict[str, Dict[str, dict]] = {}
    for domain, per_model in spectra.items():
        _require_mapping(per_model, f"spectra[{domain!r}]")
        entries = {}
        for model, values in per_model.items():
            name = f"spectra[{domain!r}][{model!r}]"
            arr = np.asarray(values)
            if arr.ndim == 2:
                arr = _as_finite(arr, name)
                if arr.shape[0] < 2:
                    logging.warning("%s: a single embedding has no covariance; skipped", name)
                    continue
                eig = pca_spectrum(arr)
            else:
                eig = _as_finite(arr, name, ndim=1)
                scale = max(float(np.max(np.abs(eig))), 1e-300)
                if np.min(eig) < -1e-9 * scale:
                    raise ValueError(f"{name} has negative eigenvalues (min {np.min(eig)}): "
                                     "not a covariance spectrum")
                eig = np.sort(np.maximum(eig, 0.0))[::-1]
            entries[str(model)] = {"eigenvalues": eig.tolist(), **_spectrum_stats(eig)}
        if not entries:
            logging.warning("spectra[%r]: no model left to plot; domain skipped", domain)
            continue
        domains[str(domain)] = entries
    if not domains:
        raise ValueError("spectra: nothing to plot (every entry was skipped)")

    all_models = list(dict.fromkeys(m for per in domains.values() for m in per))
    colours = _domain_colours(all_models)
    fig, axes = _new_figure(len(domains))
    for ax, (domain, per_model) in zip(axes, domains.items()):
        for model, entry in per_model.items():
            eig = np.asarray(entry["eigenvalues"][:top])
            ax.plot(np.arange(1, eig.shape[0] + 1), eig, marker="o", markersize=2.5,
                    color=colours[model],
                    label=f"{model} (90%: {entry['n_components_90']}, "
                          f"PR: {_fmt_opt(entry['participation_ratio'])})")
        ax.set_title(domain)
        ax.set_xlabel("component")
        ax.set_ylabel("eigenvalue")
        ax.set_ylim(bottom=0.0)  # Fig. 5 reads "close to zero": keep zero on the axis
        ax.grid(alpha=0.3)
        _legend(ax, fontsize="x-small")

    data = {"top": top, "domains": domains}
    png_path, json_path = _paths(path)
    _save_figure(fig, png_path)
    _write_json(json_path, data)
    return data


def _fmt_opt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


# ----------------------------------------------------------------------------------------------
# Fig. 2(c): ratio of distances measured by two models
# ----------------------------------------------------------------------------------------------

def _pair_indices(n: int, max_pairs: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """All pairs i < j of n items, or ``max_pairs`` of them drawn without replacement (seeded)."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return np.triu_indices(n, k=1)
    # Pairs are numbered row by row (row i holds (i, i+1) ... (i, n-1)); drawing numbers instead of
    # building all n(n-1)/2 pairs keeps memory O(max_pairs) for any n.
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(total, size=max_pairs, replace=False))
    rows = np.arange(n, dtype=np.int64)
    row_start = rows * (2 * n - rows - 1) // 2  # number of the pair (i, i+1)
    i = np.searchsorted(row_start, flat, side="right") - 1
    j = flat - row_start[i] + i + 1
    return i, j


def _pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.empty(i.shape[0], dtype=np.float64)
    for s in range(0, i.shape[0], _PAIR_CHUNK):
        diff = x[i[s:s + _PAIR_CHUNK]] - x[j[s:s + _PAIR_CHUNK]]
        out[s:s + _PAIR_CHUNK] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def distance_ratios(teacher_emb, student_emb, labels, max_pairs: int = 200000,
                    seed: int = 0) -> Dict[str, np.ndarray]:
    """Ratios ``student distance / teacher distance`` over intra- and inter-class pairs.

    For Fig. 2(c) of paper 000 (ImageNet-specialist distance / CUB-specialist distance on CUB
    images) the ImageNet specialist is the "student" and the CUB specialist the "teacher". A
    constant ratio means the two models' distances are proportional (the RKD assumption);
    inter-class ratios below 1 mean the student shrinks the space between classes.

    Args:
      teacher_emb: ``[N, Dt]`` embeddings of the images by the model in the denominator.
      student_emb: ``[N, Ds]`` embeddings of the same images by the model in the numerator
        (Ds may differ from Dt).
      labels: ``[N]`` class labels.
      max_pairs: when there are more pairs i < j than this, this many are drawn (seeded).
      seed: seed of the pair subsample.

    Returns:
      ``{"intra": ratios over same-label pairs, "inter": ratios over different-label pairs}``,
      float64 arrays. Pairs whose teacher distance is below 1e-12 (duplicate images) are skipped.
      A single image has no pair: both arrays are empty (with a warning).
    """
    teacher = _as_finite(teacher_emb, "teacher_emb", ndim=2)
    student = _as_finite(student_emb, "student_emb", ndim=2)
    labels = np.asarray(labels).reshape(-1)
    n = teacher.shape[0]
    if student.shape[0] != n or labels.shape[0] != n:
        raise ValueError(f"teacher_emb, student_emb and labels must have the same length, got "
                         f"{n}, {student.shape[0]} and {labels.shape[0]}")
    if int(max_pairs) < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    if n < 2:
        logging.warning("distance_ratios: a single image has no pair; returning no ratios")
        return {"intra": np.zeros(0), "inter": np.zeros(0)}
    i, j = _pair_indices(n, int(max_pairs), seed)
    d_teacher = _pair_distances(teacher, i, j)
    d_student = _pair_distances(student, i, j)
    keep = d_teacher >= _MIN_TEACHER_DISTANCE
    if not np.all(keep):
        logging.info("distance_ratios: %d of %d pairs skipped (teacher distance < %g)",
                     int(np.sum(~keep)), keep.shape[0], _MIN_TEACHER_DISTANCE)
    ratio = d_student[keep] / d_teacher[keep]
    same = (labels[i] == labels[j])[keep]
    return {"intra": ratio[same], "inter": ratio[~same]}


def _ratio_stats(r: np.ndarray) -> dict:
    if r.shape[0] == 0:
        return {"count": 0, "mean": None, "median": None, "std": None, "p05": None, "p95": None,
                "cv": None}
    mean, std = float(np.mean(r)), float(np.std(r))
    p05, median, p95 = (float(v) for v in np.percentile(r, [5, 50, 95]))
    return {"count": int(r.shape[0]), "mean": mean, "median": median, "std": std, "p05": p05,
            "p95": p95, "cv": std / mean if mean > 0 else None}


def _density(r: np.ndarray, grid: np.ndarray, seed: int) -> Tuple[Optional[np.ndarray], str]:
    """Density of ``r`` on ``grid``: Gaussian KDE (scipy) or a histogram; None if degenerate."""
    if r.shape[0] < 2 or np.ptp(r) <= 1e-12 * max(1.0, float(np.max(np.abs(r)))):
        return None, "none"  # a point mass: the caller draws a vertical line instead
    if r.shape[0] > _KDE_MAX_POINTS:
        r = np.random.default_rng(seed).choice(r, _KDE_MAX_POINTS, replace=False)
    try:
        from scipy.stats import gaussian_kde
    except ImportError:
        gaussian_kde = None
    if gaussian_kde is not None:
        try:
            return gaussian_kde(r)(grid), "gaussian_kde"
        except np.linalg.LinAlgError:  # near-constant data: singular bandwidth
            pass
    step = grid[1] - grid[0]
    edges = np.concatenate([grid - step / 2, grid[-1:] + step / 2])
    # Wider bins than the grid spacing smooth the histogram; interpolated back onto the grid.
    bins = max(8, min(64, int(np.sqrt(r.shape[0]))))
    hist, hist_edges = np.histogram(r, bins=bins, range=(edges[0], edges[-1]), density=True)
    centres = (hist_edges[:-1] + hist_edges[1:]) / 2
    return np.interp(grid, centres, hist), "histogram"


def plot_distance_ratio_density(ratios_by_title: Mapping[str, Mapping[str, np.ndarray]],
                                path) -> dict:
    """Densities of intra- and inter-class distance ratios, one subplot per title (Fig. 2(c)).

    Args:
      ratios_by_title: ``{title: distance_ratios(...) output}``.
      path: PNG path; the JSON goes next to it with the ``.json`` suffix.

    Returns:
      The dict written to JSON: ``{"titles": {title: {"intra": stats, "inter": stats, "density":
      {"method", "grid", "intra", "inter"}}}}`` with stats ``{"count", "mean", "median", "std",
      "p05", "p95", "cv"}`` (std with ddof 0; cv = std / mean, 0 for proportional distances;
      None where undefined). A density is None when its ratios are a point mass (drawn as a
      vertical line) or fewer than 2. The grid spans the 0.5-99.5 percentiles of both types.
    """
    _require_mapping(ratios_by_title, "ratios_by_title")
    data: Dict[str, dict] = {}
    for t, (title, ratios) in enumerate(ratios_by_title.items()):
        if not isinstance(ratios, Mapping):
            raise TypeError(f"ratios_by_title[{title!r}] must be a distance_ratios dict")
        arrays = {}
        for kind in ("intra", "inter"):
            if kind not in ratios:
                raise ValueError(f"ratios_by_title[{title!r}] lacks {kind!r}")
            arr = np.asarray(ratios[kind], dtype=np.float64).reshape(-1)
            if arr.size and not np.all(np.isfinite(arr)):
                raise ValueError(f"ratios_by_title[{title!r}][{kind!r}] contains NaN/inf values")
            if arr.size < 2:
                logging.warning("ratios_by_title[%r][%r]: %d ratio(s), no density", title, kind,
                                arr.size)
            arrays[kind] = arr
        both = np.concatenate([arrays["intra"], arrays["inter"]])
        entry = {kind: _ratio_stats(arr) for kind, arr in arrays.items()}
        density = {"method": "none", "grid": [], "intra": None, "inter": None}
        if both.size:
            # Percentile range: a handful of near-duplicate teacher pairs give huge ratios that
            # would otherwise squash the curves into one corner.
            lo, hi = np.percentile(both, [0.5, 99.5])
            pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(lo), 1.0)
            grid = np.linspace(max(lo - pad, 0.0), hi + pad, _KDE_GRID)
            density["grid"] = grid.tolist()
            for kind, arr in arrays.items():
                dens, method = _density(arr, grid, seed=t)
                if dens is not None:
                    density[kind] = dens.tolist()
                    density["method"] = method
        entry["density"] = density
        data[str(title)] = entry

    fig, axes = _new_figure(len(data), max_cols=3)
    styles = {"intra": ("tab:blue", "intra-class"), "inter": ("tab:red", "inter-class")}
    for ax, (title, entry) in zip(axes, data.items()):
        grid = np.asarray(entry["density"]["grid"])
        for kind, (colour, label) in styles.items():
            stats = entry[kind]
            if stats["count"] == 0:
                continue
            label = f"{label} (n={stats['count']}, CV={_fmt_cv(stats['cv'])})"
            dens = entry["density"][kind]
            if dens is not None:
                ax.plot(grid, dens, color=colour, label=label)
                ax.fill_between(grid, dens, color=colour, alpha=0.15)
            else:
                ax.axvline(stats["mean"], color=colour, label=label + " point mass")
        # Ratio 1 = the student keeps the teacher's distances; below 1 = it shrinks them.
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
        if not (entry["intra"]["count"] or entry["inter"]["count"]):
            ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("distance ratio (student / teacher)")
        ax.set_ylabel("density")
        _legend(ax, fontsize="x-small")

    out = {"titles": data}
    png_path, json_path = _paths(path)
    _save_figure(fig, png_path)
    _write_json(json_path, out)
    return out


def _fmt_cv(cv) -> str:
    return "-" if cv is None else f"{cv:.3f}"


# ----------------------------------------------------------------------------------------------
# Index of the diagnostics of a run
# ----------------------------------------------------------------------------------------------

def write_diagnostics_index(run_dir, entries: Union[Mapping[str, str], Iterable[str]]) -> dict:
    """Writes (or updates) ``<run_dir>/diagnostics.json`` listing the diagnostics written.

    Args:
      run_dir: the run directory.
      entries: PNG paths, or ``{name: png_path}``; a plain path is named after its file stem.
        A bare file name is taken inside ``run_dir``. Paths are stored relative to ``run_dir``
        when inside it. Entries of an existing index
        are kept unless a new entry has the same name, so the index can be built incrementally.

    Returns:
      The dict written: ``{"diagnostics": {name: {"png", "json"}}}``; ``json`` is None when the
      file next to the PNG does not exist.
    """
    run_dir = os.fspath(run_dir)
    if isinstance(entries, Mapping):
        items = [(str(k), os.fspath(v)) for k, v in entries.items()]
    else:
        items = [(os.path.splitext(os.path.basename(os.fspath(p)))[0], os.fspath(p))
                 for p in entries]
    index_path = os.path.join(run_dir, INDEX_FILENAME)
    index: Dict[str, dict] = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = dict(json.load(f).get("diagnostics", {}))

    def rel(p: str) -> str:
        r = os.path.relpath(p, run_dir)
        return os.path.abspath(p) if r.startswith(os.pardir) else r

    for name, p in items:
        # A bare file name means a file of the run directory; other paths resolve as usual.
        png_path, json_path = _paths(os.path.join(run_dir, p) if not os.path.dirname(p) else p)
        index[name] = {"png": rel(png_path),
                       "json": rel(json_path) if os.path.exists(json_path) else None}
    data = {"diagnostics": index}
    _write_json(index_path, data)
    return data
