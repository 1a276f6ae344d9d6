"""How closely each student of a distillation run reproduces its teacher's embedding geometry.

For a ``distill`` run directory (``teacher/model.keras`` and ``student/<method>/model.keras``, or
``seed_*/`` directories of them), embeds a demo domain's test split (classes unseen in training)
with every model and compares each student's distances between unit embeddings with the
teacher's on the same images:

* ``pearson``: correlation of all pairwise distances (what direct match fits);
* ``spearman``: mean over queries of the rank correlation of the distances to the other images
  (the ordering DarkRank and the relative teacher transfer);
* ``nn10``: mean overlap of each image's 10 nearest neighbours with the teacher's;
* ``mean_distance``: the scale of the distances.

Usage (prints a markdown table of mean ± std over seeds, writes ``<run>/geometry.json``):

    python tools/teacher_geometry.py runs/darkrank_demo [--domain digits] [--images 1500]
"""

import argparse
import glob
import json
import os

import numpy as np


def _ranks(d):
    """Each row's distances to the other images as ranks (the diagonal dropped)."""
    n = len(d)
    off = d[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return np.argsort(np.argsort(off, axis=1), axis=1).astype(np.float64)


def _distances(e):
    g = e @ e.T
    return np.sqrt(np.maximum(2.0 - 2.0 * g, 0.0))


def compare(student, teacher):
    """The four measures of one student's unit embeddings against the teacher's (same rows)."""
    ds, dt = _distances(student), _distances(teacher)
    iu = np.triu_indices(len(ds), 1)
    rs, rt = _ranks(ds), _ranks(dt)
    rs -= rs.mean(1, keepdims=True)
    rt -= rt.mean(1, keepdims=True)
    spearman = np.sum(rs * rt, 1) / np.sqrt(np.sum(rs ** 2, 1) * np.sum(rt ** 2, 1))
    big = np.eye(len(ds)) * 1e9   # an image is not its own neighbour
    nn_s = np.argsort(ds + big, axis=1)[:, :10]
    nn_t = np.argsort(dt + big, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nn_s, nn_t)])
    return {"pearson": float(np.corrcoef(ds[iu], dt[iu])[0, 1]),
            "spearman": float(spearman.mean()), "nn10": float(overlap),
            "mean_distance": float(ds[iu].mean())}


def main(argv=None):
    from tfembed.data.sources import read_demo  # noqa: PLC0415 (TensorFlow loads late)
    from tfembed.evaluation.protocol import embed_split  # noqa: PLC0415
    from tfembed.models import load_embedder  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--domain", default="digits")
    p.add_argument("--images", type=int, default=1500, help="test images compared (seeded)")
    args = p.parse_args(argv)
    seeds = sorted(glob.glob(os.path.join(args.run, "seed_*"))) or [args.run]
    test = read_demo(args.domain).splits["test"]
    rows = np.random.default_rng(0).choice(len(test.labels), min(args.images, len(test.labels)),
                                           replace=False)
    out = {}
    for seed in seeds:
        paths = {"teacher": os.path.join(seed, "teacher", "model.keras")}
        for path in sorted(glob.glob(os.path.join(seed, "student", "*", "model.keras"))):
            paths[os.path.basename(os.path.dirname(path))] = path
        emb = {}
        for name, path in paths.items():
            e = embed_split(load_embedder(path), test, batch_size=256)[0][rows]
            emb[name] = e / np.linalg.norm(e, axis=1, keepdims=True)
        for name, e in emb.items():
            row = compare(e, emb["teacher"])
            out.setdefault(name, []).append(row)
            print(os.path.basename(seed), name, {k: round(v, 3) for k, v in row.items()})
    keys = ["pearson", "spearman", "nn10", "mean_distance"]
    print("| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, rs in out.items():
        cells = [np.array([r[k] for r in rs]) for k in keys]
        print(f"| `{name}` | " + " | ".join(
            f"{c.mean():.3f} ± {c.std(ddof=1) if len(c) > 1 else 0.0:.3f}" for c in cells) + " |")
    with open(os.path.join(args.run, "geometry.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
