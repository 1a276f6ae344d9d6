"""Recipe registry: recipe families in ``tfembed/configs/<family>.py``, one entry per argument.

A family module holds ``RECIPES = {argument: Recipe(documented name, build, smoke)}``
(``tfembed.configs._recipe``). A recipe is named ``<family>:<argument>`` (``rel_teacher:cub``)
or by its documented name (``rel_teacher_resnet18_cub``, ``snd_universal_demo``: the names the
papers' pages and existing run directories use); a family with one argument also answers to the
family's name. Recipes live in the ``tfembed.configs`` package (not a top-level ``configs/``
folder) so an installed, non-editable tfembed finds them too. A recipe is resolved in three steps:

1. its ``build()`` (the config; ``config.recipe`` is the documented name, whichever name ran it);
2. ``--set key=value`` overrides (dotted keys; the value is parsed to the type the recipe gives
   the key, and an unknown key or a value of the wrong type is an error naming the key);
3. if ``smoke`` is true, the recipe's smoke settings (dotted key → value: tiny images, a few
   steps, no pretrained weights) for every key the user did not set explicitly.
"""

import ast
import difflib
import functools
import importlib
import pkgutil
from typing import Dict, Iterable, List, Optional, Tuple

import ml_collections

import tfembed.configs

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class RecipeError(ValueError):
    """A recipe name, key or value the user gave is wrong; the message says which."""


def list_families() -> List[str]:
    """The recipe families (modules of ``tfembed.configs``)."""
    return sorted(m.name for m in pkgutil.iter_modules(tfembed.configs.__path__)
                  if not m.name.startswith("_"))


def family_recipes(family: str) -> Dict:
    """``{argument: Recipe}`` of a family."""
    return importlib.import_module(f"tfembed.configs.{family}").RECIPES


@functools.lru_cache(maxsize=None)
def _index() -> Dict[str, Tuple[str, str]]:
    """Every accepted name → ``(family, argument)``."""
    index = {}
    for family in list_families():
        recipes = family_recipes(family)
        for arg, recipe in recipes.items():
            for name in (f"{family}:{arg}", recipe.name):
                if name in index:
                    raise RuntimeError(f"recipe name {name!r} is defined twice")
                index[name] = (family, arg)
        if len(recipes) == 1 and family not in index:
            index[family] = (family, next(iter(recipes)))
    return index


def list_recipes() -> List[str]:
    """The documented names of every recipe (one per family argument)."""
    return sorted(family_recipes(f)[a].name for f, a in set(_index().values()))


def _lookup(name: str):
    index = _index()
    if name not in index:
        family, _, arg = name.partition(":")
        if family in list_families() and arg:
            hint = f" Arguments of {family}: {', '.join(family_recipes(family))}."
        elif family in list_families():
            hint = f" Give an argument: {', '.join(f'{family}:{a}' for a in family_recipes(family))}."
        else:
            close = difflib.get_close_matches(name, list(index), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"unknown recipe {name!r}.{hint} Families (tfembed-train --list): "
                          f"{', '.join(list_families())}")
    family, arg = index[name]
    return family_recipes(family)[arg]


def doc(name: str) -> str:
    """The recipe's documentation (its build function's docstring)."""
    return _lookup(name).doc


def summary(name: str) -> str:
    """The first paragraph of a recipe's (or a family's) docstring, on one line."""
    if name in list_families():
        text = importlib.import_module(f"tfembed.configs.{name}").__doc__ or ""
    else:
        text = doc(name)
    return " ".join(line.strip() for line in text.strip().split("\n\n")[0].splitlines())


def listing(family: Optional[str] = None) -> str:
    """``tfembed-train --list``: one line per family (its name, summary and arguments); with a
    family, one line per recipe (``family:argument``, documented name, summary)."""
    if not family:
        rows = [(f, f"{summary(f)} [{f}:{'|'.join(family_recipes(f))}]")
                for f in list_families()]
    else:
        # A family, a family:argument or a documented name: the family it belongs to.
        family = _index()[family][0] if family in _index() else family.partition(":")[0]
        if family not in list_families():
            raise RecipeError(f"unknown recipe family {family!r}; families: "
                              f"{', '.join(list_families())}")
        rows = [(f"{family}:{arg}  {r.name}", summary(r.name))
                for arg, r in family_recipes(family).items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in rows)


def get_recipe(name: str) -> ml_collections.ConfigDict:
    """The recipe's own config (no overrides)."""
    recipe = _lookup(name)
    config = recipe.build()
    config.recipe = recipe.name
    return config


def _parse(key: str, text: str, current):
    """Parses ``text`` to the type of ``current`` (the recipe's value for ``key``)."""
    def fail(expected):
        raise RecipeError(f"--set {key}={text}: expected {expected} (the recipe's value is "
                          f"{current!r})")

    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        fail("a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            fail("an integer")
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            fail("a number")
    if isinstance(current, str):
        return text
    if isinstance(current, (list, tuple)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if current and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in current):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                fail("a list of numbers, e.g. 1,2,4")
        return type(current)(value)
    if current is None:  # an optional field: take a Python literal, else the string
        if text.strip().lower() in ("none", "null", ""):
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    if isinstance(current, ml_collections.ConfigDict):
        fail("one of its sub-keys (" + ", ".join(sorted(current.keys())) + ")")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        fail(type(current).__name__)


def _split_override(item: str):
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    return key.strip(), text


def set_value(config: ml_collections.ConfigDict, key: str, value, *, parse: bool):
    """Sets dotted ``key`` in ``config``; unknown keys raise RecipeError naming valid ones."""
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(parts[:depth]) or "the recipe"
            valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, valid, n=1)
            hint = f" Did you mean {'.'.join(parts[:depth] + close[:1])!r}?" if close else ""
            raise RecipeError(f"unknown key {key!r} in recipe {config.get('recipe', '?')!r}."
                              f"{hint} Valid keys of {where}: {', '.join(valid)}")
        if depth < len(parts) - 1:
            node = node[part]
    last = parts[-1]
    new = _parse(key, value, node[last]) if parse else value
    with node.unlocked() if hasattr(node, "unlocked") else _nullcontext():
        try:
            node[last] = new
        except TypeError as e:  # ConfigDict's own type safety
            raise RecipeError(f"--set {key}: {e}") from None


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def resolve(name: str, overrides: Optional[Iterable[str]] = None) -> ml_collections.ConfigDict:
    """Recipe ``name`` with ``--set`` overrides and, if ``smoke`` is on, its smoke settings."""
    config = get_recipe(name)
    smoke = _lookup(name).smoke
    explicit = set()
    for item in overrides or ():
        key, text = _split_override(item)
        set_value(config, key, text, parse=True)
        explicit.add(key)
    if config.get("smoke", False):
        for key, value in smoke.items():
            if key not in explicit:
                set_value(config, key, value, parse=False)
    return config
