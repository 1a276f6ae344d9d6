"""Run reports: ``report.json`` (DESIGN §4) and the same results as a fixed-width table.

A row is one (model, domain, gallery) evaluation::

    {"model": "universal/snd", "domain": "cub", "gallery": "domain" | "fused",
     "recall@1": 0.61, "recall@2": ..., ...}            # fractions, not percent

UnED rows (``tfembed.evaluation.uned``) have gallery ``"uned_separate"`` / ``"uned_merged"`` and
add ``"mmp@5"`` and ``"map@5"``; they print in a table of their own (``format_uned_table``).

``format_table`` lays rows out like Table 2 of paper 000: one section per gallery, the models'
rows one per domain, and after each model an ``average`` row (the mean over its domains). Models
that cover one domain each and are named ``<family>/<domain>`` (``specialist/cub``,
``specialist/cars``...) are averaged together as ``<family>/*``, as the paper's "Specialist" row is.
"""

import dataclasses
import json
import math
import os
import pathlib
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from tfembed.io import atomic_save, atomic_write  # noqa: F401 (atomic_save: its old home)

GALLERIES = ("domain", "fused", "uned_separate", "uned_merged")
REPORT_FILENAME = "report.json"
_ROW_KEYS = ("model", "domain", "gallery")


def recall_rows(model_name: str, domain: str, gallery: str, recalls: Mapping[int, float],
                **extra) -> dict:
    """One report row: ``{"model", "domain", "gallery", "recall@k"..., **extra}``.

    ``recalls`` is ``recall_at_k``'s ``{k: fraction}``; ``extra`` adds further JSON-able fields
    (``map@r=...``, ``nmi=...``) after the recalls.
    """
    if gallery not in GALLERIES:
        raise ValueError(f"gallery must be one of {GALLERIES}, got {gallery!r}")
    row = {"model": str(model_name), "domain": str(domain), "gallery": gallery}
    for k in sorted(recalls, key=int):
        row[f"recall@{int(k)}"] = float(recalls[k])
    for key, value in extra.items():
        row[key] = _jsonable(value)
    return row


def _average_group(row: dict) -> str:
    model, domain = row["model"], row["domain"]
    if model.endswith("/" + domain):
        return model[: -len(domain)] + "*"
    return model


def _fmt(value, std=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{100.0 * float(value):.1f}"
    return text if std is None else f"{text}±{100.0 * float(std):.1f}"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate_seeds(rows_per_seed: Mapping[int, Sequence[dict]]) -> List[dict]:
    """Rows of several seeds' runs → one row per ``(model, domain, gallery)``: every numeric
    field's mean over the seeds, its sample standard deviation as ``<field>_std`` (ddof 1; 0 for
    one seed) and ``"seeds"``, the seeds the row was measured on (DESIGN §4). Rows keep the first
    seed's order; a field that is not a number is kept when every seed agrees on it. A row some
    seed lacks (an interrupted run) is a ValueError naming it."""
    seeds = list(rows_per_seed)
    if not seeds:
        raise ValueError("no seeds to aggregate")
    keyed = {}
    for seed in seeds:
        for row in rows_per_seed[seed]:
            key = (row["model"], row["domain"], row["gallery"])
            keyed.setdefault(key, {})[seed] = row
    out = []
    for key, by_seed in keyed.items():
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise ValueError(f"row {key} is missing from the run(s) of seed(s) {missing}")
        rows = [by_seed[s] for s in seeds]
        merged = {"model": key[0], "domain": key[1], "gallery": key[2]}
        for field in rows[0]:
            if field in merged or field.endswith("_std"):
                continue
            values = [r.get(field) for r in rows]
            if all(_is_number(v) for v in values):
                merged[field] = float(np.mean(values))
                merged[f"{field}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            elif all(v == values[0] for v in values):
                merged[field] = values[0]
        merged["seeds"] = [int(s) for s in seeds]
        out.append(merged)
    return out


def format_table(rows: Sequence[dict], ks: Sequence[int] = (1, 2, 4, 8)) -> str:
    """Fixed-width table of report rows: model | domain | gallery | R@k... in percent.

    Sections per gallery (``domain`` first, then ``fused``, then any other), rows in the order
    given, each model (or ``<family>/*`` group of one-domain models) followed by its ``average``
    row over domains. A missing recall prints as ``-`` and is left out of the average.
    """
    ks = tuple(int(k) for k in ks)
    header = ["model", "domain", "gallery"] + [f"R@{k}" for k in ks]
    sections: "OrderedDict[str, OrderedDict[str, List[dict]]]" = OrderedDict()
    order = {g: i for i, g in enumerate(GALLERIES)}
    for row in sorted(rows, key=lambda r: order.get(r.get("gallery"), len(GALLERIES))):
        gallery = row.get("gallery", "?")
        sections.setdefault(gallery, OrderedDict()).setdefault(_average_group(row), []).append(row)

    lines_by_section = []
    for gallery, groups in sections.items():
        body = []
        for group, members in groups.items():
            for r in members:
                body.append([r.get("model", "?"), r.get("domain", "?"), gallery]
                            + [_fmt(r.get(f"recall@{k}"), r.get(f"recall@{k}_std"))
                               for k in ks])
            avg = []
            for k in ks:
                vals = [float(r[f"recall@{k}"]) for r in members
                        if r.get(f"recall@{k}") is not None]
                avg.append(_fmt(sum(vals) / len(vals)) if vals else "-")
            body.append([group, "average", gallery] + avg)
        lines_by_section.append((gallery, body))

    all_cells = [header] + [c for _, body in lines_by_section for c in body]
    widths = [max(len(str(c[i])) for c in all_cells) for i in range(len(header))]

    def line(cells):
        left = [str(c).ljust(w) for c, w in zip(cells[:3], widths[:3])]
        right = [str(c).rjust(w) for c, w in zip(cells[3:], widths[3:])]
        return ("  ".join(left) + "  " + "  ".join(right)).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule]
    for i, (gallery, body) in enumerate(lines_by_section):
        if i:
            out.append(rule)
        out.append(f"[gallery: {gallery}]")
        out.extend(line(cells) for cells in body)
    return "\n".join(out)


def format_model_table(rows: Sequence[dict], ks: Sequence[int] = (1, 2, 4, 8),
                       extra: Sequence[str] = ("nmi", "f1"), gallery: str = "domain") -> str:
    """One line per (model, domain) of one gallery: ``R@k`` then the ``extra`` metrics present
    (NMI / F1 for the single-domain distillation reports, as in 004 Table 4), in percent."""
    picked = [r for r in rows if r.get("gallery") == gallery]
    extra = [e for e in extra if any(e in r for r in picked)]
    header = ["model", "domain"] + [f"R@{int(k)}" for k in ks] + [e.upper() for e in extra]
    body = [[r["model"], r["domain"]] + [_fmt(r.get(f"recall@{int(k)}")) for k in ks]
            + [_fmt(r.get(e)) for e in extra] for r in picked]
    widths = [max(len(str(c[i])) for c in [header] + body) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "-" * len(line(header))] + [line(c) for c in body])


def format_paper_table(rows: Sequence[dict], gallery: str = "fused",
                       ks: Sequence[int] = (1, 2, 4)) -> str:
    """Rows of one gallery laid out as paper 000's Table 2: one line per model, per domain
    ``R@k`` columns, then the average over domains. Models keep their order of appearance.
    """
    ks = tuple(int(k) for k in ks)
    picked = [r for r in rows if r.get("gallery") == gallery]
    domains = list(OrderedDict((r["domain"], None) for r in picked))
    models = list(OrderedDict((r["model"], None) for r in picked))
    cell = {(r["model"], r["domain"]): r for r in picked}
    header = ["model"] + [f"{d} R@{k}" for d in domains + ["average"] for k in ks]
    body = []
    for model in models:
        line = [model]
        per_k = {k: [] for k in ks}
        for d in domains:
            r = cell.get((model, d), {})
            for k in ks:
                v = r.get(f"recall@{k}")
                line.append(_fmt(v))
                if v is not None:
                    per_k[k].append(float(v))
        line += [_fmt(sum(v) / len(v)) if v else "-" for v in per_k.values()]
        body.append(line)
    widths = [max(len(str(c[i])) for c in [header] + body) for i in range(len(header))]
    fmt = lambda cells: "  ".join(  # noqa: E731
        [str(cells[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in
                                            zip(cells[1:], widths[1:])])
    out = [f"[gallery: {gallery}]", fmt(header), "-" * len(fmt(header))]
    return "\n".join(out + [fmt(b) for b in body])


def _jsonable(value):
    """Converts configs/results to plain JSON types (dicts, lists, str, int, float, bool, None)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):  # ml_collections.ConfigDict & co
        value = value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if hasattr(value, "numpy") and callable(value.numpy):  # tf / keras tensors
        return _jsonable(np.asarray(value.numpy()))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, (pathlib.PurePath, bytes)):
        return os.fsdecode(value) if isinstance(value, bytes) else str(value)
    if isinstance(value, type) or callable(value):
        return getattr(value, "__qualname__", getattr(value, "__name__", repr(value)))
    return str(value)


def write_report(workdir, recipe: str, config, rows: Sequence[dict], *, echo: bool = True,
                 extra: Optional[Mapping] = None) -> str:
    """Writes ``<workdir>/report.json`` = ``{"recipe", "config", "rows"}`` atomically.

    ``config`` may be a ConfigDict (anything with ``to_dict``), a dataclass or a dict holding
    tuples, numpy scalars/arrays, paths...; it is converted to plain JSON. Rows must carry
    ``model``, ``domain`` and ``gallery`` (one of ``GALLERIES``); recalls are fractions.
    ``extra``: further top-level keys after ``rows`` (e.g. the distill pipeline's
    ``"selection"``: the cross-validated λ of each student); empty or None adds nothing, and it
    cannot replace ``recipe``, ``config`` or ``rows``.
    The file appears complete or not at all (temporary file + ``os.replace``). The table of
    ``format_table`` is printed unless ``echo=False``. Returns the path of the report.
    """
    clean_rows = []
    for i, row in enumerate(rows):
        missing = [k for k in _ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"report row {i} lacks {missing}: {row}")
        if row["gallery"] not in GALLERIES:
            raise ValueError(f"report row {i}: gallery must be one of {GALLERIES}, "
                             f"got {row['gallery']!r}")
        clean_rows.append(_jsonable(dict(row)))
    report = {"recipe": str(recipe), "config": _jsonable(config if config is not None else {}),
              "rows": clean_rows}
    if not isinstance(report["config"], dict):
        raise TypeError(f"config must be a mapping (or have to_dict), got {type(config).__name__}")
    for key, value in (extra or {}).items():
        if str(key) in report:
            raise ValueError(f"report extra key {key!r} would replace the report's own {key!r}")
        report[str(key)] = _jsonable(value)
    text = json.dumps(report, indent=2, allow_nan=False)

    path = os.path.join(os.fspath(workdir), REPORT_FILENAME)
    atomic_write(path, lambda f: f.write(text + "\n"))
    if echo:
        uned = [r for r in clean_rows if r["gallery"].startswith("uned_")]
        other = [r for r in clean_rows if not r["gallery"].startswith("uned_")]
        ks = sorted({int(key.split("@", 1)[1]) for r in other for key in r
                     if key.startswith("recall@") and key.split("@", 1)[1].isdigit()})
        print(f"recipe {recipe}: {path}")
        if other or not uned:
            print(format_table(other, ks or (1, 2, 4, 8)))
        if uned:   # UnED's own columns: R@1, mMP@5, mAP@5
            from tfembed.evaluation.uned import format_uned_table  # noqa: PLC0415

            print(format_uned_table(uned))
    return path


def read_report(path) -> Dict:
    """Loads a ``report.json`` (a path to the file or to its working directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, REPORT_FILENAME)
    with open(path) as f:
        return json.load(f)
