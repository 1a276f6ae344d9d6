"""The three commands: --help exits 0 and says what the command does; --list summarises recipes."""

import os
import subprocess
import sys

import pytest

from tfembed import cli, recipes

MAINS = {"tfembed-train": cli.train_main, "tfembed-eval": cli.eval_main,
         "tfembed-export": cli.export_main}


@pytest.mark.parametrize("command", sorted(MAINS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0_with_usage_purpose_and_flags(command, flag, capsys):
    assert MAINS[command]([command, flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {command} ")
    assert "--model" in out or "--recipe" in out
    assert len(out.splitlines()) > 8   # purpose and every flag, not just the usage line


def test_help_of_the_installed_entry_point_exits_0():
    # absl's own --help lives on its global flags; a private FlagValues used to answer
    # "Unknown command line flag 'help'" with exit code 2.
    done = subprocess.run([sys.executable, "-c", "import sys; from tfembed.cli import train_main;"
                           " sys.exit(train_main(['tfembed-train', '--help']))"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--set" in done.stdout


def test_list_gives_one_line_per_family_with_its_summary(capsys):
    assert cli.train_main(["tfembed-train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipes.list_families())
    by_name = {line.split()[0]: line for line in lines}
    assert "paper 000" in by_name["universal"] and "universal:snd|demo|" in by_name["universal"]
    # With a family: one line per recipe, its two names and its summary (a first paragraph that
    # wraps is joined onto one line).
    assert cli.train_main(["tfembed-train", "--list", "--recipe", "universal"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipes.family_recipes("universal"))
    demo = [l for l in lines if l.startswith("universal:demo ")][0]
    assert "snd_universal_demo" in demo and "Offline demo of paper 000" in demo
    sigma = [l for l in lines if "snd_sigma_selfdistill " in l][0]
    assert sigma.rstrip().endswith("datasets\").")
    for name in recipes.list_recipes():
        assert recipes.summary(name), f"recipe {name} has no docstring summary"


def test_family_argument_and_documented_names_run_the_same_recipe():
    assert recipes.list_recipes() == sorted(set(recipes.list_recipes()))
    assert len(recipes.list_recipes()) == sum(len(recipes.family_recipes(f))
                                              for f in recipes.list_families())
    a = recipes.resolve("rel_teacher:cub", ["smoke=true"])
    b = recipes.resolve("rel_teacher_resnet18_cub", ["smoke=true"])
    assert a.to_dict() == b.to_dict() and a.recipe == "rel_teacher_resnet18_cub"
    assert recipes.resolve("distill", []).recipe == "distill_demo"   # a one-argument family
    with pytest.raises(recipes.RecipeError, match="Arguments of rel_teacher: cub, cars"):
        recipes.resolve("rel_teacher:cbu", [])
    with pytest.raises(recipes.RecipeError, match="Give an argument: rel_teacher:cub"):
        recipes.resolve("rel_teacher", [])


def test_unknown_flag_still_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.train_main(["tfembed-train", "--recpie", "x"])
    assert exit_info.value.code == 2
    assert "recpie" in capsys.readouterr().err


def test_list_of_a_documented_name_lists_its_family_and_a_typo_exits_2(capsys):
    assert cli.train_main(["tfembed-train", "--list", "--recipe", "rel_teacher_resnet18_cub"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipes.family_recipes("rel_teacher"))
    assert cli.train_main(["tfembed-train", "--list", "--recipe", "nope"]) == 2
    assert "unknown recipe family 'nope'" in capsys.readouterr().err
