"""``MethodEntry``: one method of a recipe's ``methods`` list, as structured fields.

Each method family states its entries as a small frozen dataclass (``UniversalMethod``,
``DistillMethod``, ``EnsembleMethod``, ``CohortMethod``, in the family's ``config`` module). A
recipe writes them as dicts of those fields (``dict(terms=["ml", "rel"], data="semi")``); the
runner reads every entry through :meth:`MethodEntry.of`, and the entry's :attr:`name` — the
documented method name (``ml+rel@semi``, ``abe8_nodiv``, ``md+td+vd->rkd``, ``triplet_ds``) —
names its report rows, run directory and export, as before. A documented name is accepted
wherever an entry is (``--set distill.methods=ml,ml+rel``): :meth:`from_name` reads it into
the same fields.
"""

import dataclasses
from typing import Mapping


class MethodEntry:
    """Base of a family's method dataclass: :meth:`of` (a dict, a name or an entry) and
    :meth:`to_config` (the dict a recipe stores); subclasses give :meth:`from_name`,
    :attr:`name` and validate their fields in ``__post_init__``."""

    #: What the entry is called in error messages, e.g. "distill method".
    what = "method"

    @classmethod
    def from_name(cls, name: str) -> "MethodEntry":
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    @classmethod
    def of(cls, entry) -> "MethodEntry":
        """The entry ``entry`` states: an instance, a dict of its fields or a documented name."""
        if isinstance(entry, cls):
            return entry
        if isinstance(entry, str):
            return cls.from_name(entry)
        if isinstance(entry, Mapping):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(entry) - fields)
            if unknown:
                raise ValueError(f"{cls.what} {dict(entry)!r}: unknown field(s) {unknown}; the "
                                 f"fields are {sorted(fields)}")
            return cls(**{k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in entry.items()})
        raise ValueError(f"{cls.what} {entry!r}: expected a dict of {cls.__name__} fields or a "
                         "method name")

    def to_config(self) -> dict:
        """The dict a recipe stores: the fields that differ from their defaults (JSON-ready:
        lists, not tuples)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.default is dataclasses.MISSING or value != field.default:
                out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __str__(self):
        return self.name


def entries(cls, methods):
    """``[cls.of(m) for m in methods]``: a recipe's ``methods`` list read as entries (a bad entry
    fails here, naming itself)."""
    return [cls.of(m) for m in methods]


def as_config(cls, methods):
    """A ``methods`` list as a recipe stores it: one dict of fields per entry (names read)."""
    return [cls.of(m).to_config() for m in methods]
