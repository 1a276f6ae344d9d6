"""``Recipe``: one entry of a recipe family (a ``tfembed/configs/<family>.py`` module).

A family module holds ``RECIPES = {argument: Recipe(documented name, build, smoke)}``; the
registry (``tfembed.recipes``) runs ``<family>:<argument>`` or the documented name.
"""

import dataclasses
from typing import Callable, Mapping, Optional


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A parameterised config: ``build()`` returns the recipe's ConfigDict.

    Attributes:
      name: the documented recipe name (``tfembed-train --recipe <name>``), kept for the
        commands of the papers' pages and existing run directories.
      build: the function returning the config; its docstring is the recipe's documentation
        (summary line, settings and their sources, command, expected result, smoke run).
      smoke: dotted key → value applied with ``--set smoke=true`` (tiny images, a few steps).
      about: the documentation when ``build`` is shared by several arguments (a
        ``functools.partial``): the entry's own summary, command and expected result.
    """

    name: str
    build: Callable
    smoke: Mapping = dataclasses.field(default_factory=dict)
    about: Optional[str] = None

    @property
    def doc(self) -> str:
        return self.about if self.about is not None else (self.build.__doc__ or "")
