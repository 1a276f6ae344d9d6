"""How well each cohort member fits its training classes, how well it generalises, and how alike
the members of a cohort are.

For a ``cohort`` run directory (``<method>/member<l>.keras``, or ``seed_*/`` directories of
them), embeds the same number of seeded images of a demo domain's training split (classes seen
in training) and of its test split (unseen classes) with every member, and reports per member:

* ``train_r1`` / ``test_r1``: Recall@1 within each sample (equal sizes, so the two compare; both
  are higher than the full test split's R@1, whose gallery is larger);
* ``gap``: ``train_r1 - test_r1``, how much of the fit does not transfer to new classes;

and per cohort ``peer_pearson``: the mean over member pairs of the correlation of their pairwise
test distances (1: the members embed alike; what the relation loss pulls towards).

Usage (prints markdown tables of mean ± std over seeds, writes ``<run>/cohort_fit.json``):

    python tools/cohort_fit.py runs/dm2_demo [--domain digits] [--images 1500]
"""

import argparse
import glob
import itertools
import json
import os

import numpy as np

from teacher_geometry import compare


def _sample(split, n, seed):
    from tfembed.data.types import Split  # noqa: PLC0415 (TensorFlow loads late)
    rows = np.sort(np.random.default_rng(seed).choice(len(split.labels), min(n, len(split.labels)),
                                                      replace=False))
    return Split(labels=split.labels[rows], images=split.images[rows], hflip=split.hflip)


def main(argv=None):
    from tfembed.data.sources import read_demo  # noqa: PLC0415
    from tfembed.evaluation.protocol import embed_split  # noqa: PLC0415
    from tfembed.evaluation.retrieval import recall_at_k  # noqa: PLC0415
    from tfembed.models import load_embedder  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--domain", default="digits")
    p.add_argument("--images", type=int, default=1500, help="images per split (seeded)")
    args = p.parse_args(argv)
    seeds = sorted(glob.glob(os.path.join(args.run, "seed_*"))) or [args.run]
    domain = read_demo(args.domain)
    splits = {s: _sample(domain.splits[s], args.images, 0) for s in ("train", "test")}
    members, cohorts = {}, {}
    for seed in seeds:
        for method in sorted(os.listdir(seed)):
            paths = sorted(glob.glob(os.path.join(seed, method, "member*.keras")))
            test_emb = []
            for path in paths:
                model = load_embedder(path)
                r1 = {}
                for name, split in splits.items():
                    e, labels = embed_split(model, split, batch_size=256)
                    e = e / np.linalg.norm(e, axis=1, keepdims=True)
                    r1[name] = float(recall_at_k(e, labels, ks=(1,))[1])
                    if name == "test":
                        test_emb.append(e)
                row = {"train_r1": r1["train"], "test_r1": r1["test"],
                       "gap": r1["train"] - r1["test"]}
                key = f"{method}/{os.path.basename(path)[:-len('.keras')]}"
                members.setdefault(key, []).append(row)
                print(os.path.basename(seed), key, {k: round(v, 3) for k, v in row.items()})
            if len(test_emb) > 1:
                pearson = [compare(a, b)["pearson"] for a, b in itertools.combinations(test_emb, 2)]
                cohorts.setdefault(method, []).append(float(np.mean(pearson)))

    def cell(values):
        v = 100 * np.asarray(values)
        return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"

    keys = ["train_r1", "test_r1", "gap"]
    print("| member | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for key, rows in members.items():
        print(f"| `{key}` | " + " | ".join(cell([r[k] for r in rows]) for k in keys) + " |")
    print("| cohort | peer_pearson |\n|---|---|")
    for method, values in cohorts.items():
        v = np.asarray(values)
        print(f"| `{method}` | {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f} |")
    with open(os.path.join(args.run, "cohort_fit.json"), "w") as f:
        json.dump({"members": members, "cohorts": cohorts}, f, indent=1)


if __name__ == "__main__":
    main()
