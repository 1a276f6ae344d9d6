"""Command-line entry points: ``tfembed-train``, ``tfembed-eval``, ``tfembed-export``.

Each takes its flags from ``argv`` (absl flags in a private FlagValues, so the three commands
don't share flags and tests can call them in-process).
"""

import os
import sys

# Before TensorFlow is imported: keep its C++ start-up chatter out of the run's output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402


_HELP = {"--help", "-h", "-help", "--helpfull", "-?"}


def _parse(define, argv, usage, about):
    """The command's flags, or None after printing ``--help`` (the caller then exits 0).

    absl defines ``--help`` only on its global flags (``absl.app``); these commands keep private
    FlagValues, so help is answered here.
    """
    fv = flags.FlagValues()
    define(fv)
    argv = list(sys.argv if argv is None else argv)
    if any(a in _HELP for a in argv[1:]):
        print(f"{usage}\n\n{about}\n\nflags:{fv.get_help(include_special_flags=False)}")
        return None
    try:
        fv(argv)
    except flags.Error as e:
        sys.stderr.write(f"{e}\n{usage}\n")
        raise SystemExit(2)
    logging.set_verbosity(logging.INFO)
    return fv


_TRAIN_ABOUT = """\
Runs a recipe end to end: trains every model it names (specialists, teachers, students,
ensembles, cohorts), evaluates them (Recall@K; report.json in the workdir) and exports the
SavedModels it lists. Rerunning the same command in the same workdir resumes an interrupted run.
`tfembed-train --list` gives the recipes; `--print_config` shows a resolved recipe; `--set
smoke=true` runs any recipe tiny and fast.

example: tfembed-train --recipe snd_universal_demo --workdir runs/demo"""

_EVAL_ABOUT = """\
Evaluates trained embedders (.keras files or SavedModel directories) on the test splits of the
given domains: Recall@K per domain, written to report.json in --workdir and printed. UnED
domains (uned:cars, ..., uned:rp2k, read from --data_dir in UnED's layout) are scored by UnED's
protocol instead: R@1, mMP@5 and mAP@5 against each domain's own index and against the merged
index of the UnED domains given (--uned_evaluation test|val).

example: tfembed-eval --model runs/demo/universal/snd/model.keras --domains digits,fashion
         tfembed-eval --model model.keras --data_dir /data/uned --domains uned:cars,uned:sop,\
uned:inshop,uned:inat,uned:met,uned:gldv2,uned:food2k,uned:rp2k"""

_EXPORT_ABOUT = """\
Exports a trained .keras embedder as a SavedModel for TF Serving, under
<export_root>/<name>/<version>/, with serving signatures for raw image bytes and float images."""


def _define_train(fv):
    flags.DEFINE_string("recipe", None, "recipe: <family>:<argument> (rel_teacher:cub) or a "
                        "documented name (snd_universal_demo)", flag_values=fv)
    flags.DEFINE_string("workdir", None, "run directory (default runs/<documented recipe name>)",
                        flag_values=fv)
    flags.DEFINE_multi_string("set", [], "override a recipe key: --set key=value", flag_values=fv)
    flags.DEFINE_bool("list", False, "list the recipe families (with --recipe FAMILY: its "
                      "recipes) and exit", flag_values=fv)
    flags.DEFINE_bool("print_config", False, "print the resolved recipe and exit", flag_values=fv)


def train_main(argv=None):
    """``tfembed-train --recipe NAME [--workdir DIR] [--set key=value ...]``."""
    from tfembed import recipes

    fv = _parse(_define_train, argv, "usage: tfembed-train --recipe NAME [--workdir DIR] "
                                     "[--set key=value ...]", _TRAIN_ABOUT)
    if fv is None:
        return 0
    if fv.list:
        try:
            print(recipes.listing(fv.recipe))
        except recipes.RecipeError as e:
            sys.stderr.write(f"tfembed-train: {e}\n")
            return 2
        return 0
    if not fv.recipe:
        sys.stderr.write("tfembed-train: --recipe is required; families (tfembed-train --list): "
                         + ", ".join(recipes.list_families()) + "\n")
        return 2
    try:
        config = recipes.resolve(fv.recipe, fv.set)
    except recipes.RecipeError as e:
        sys.stderr.write(f"tfembed-train: {e}\n")
        return 2
    if fv.print_config:
        print(config)
        return 0
    from tfembed.training.fault_tolerance import NonFiniteLossError, TrainingPreempted
    from tfembed.training.run import run

    # The documented name: `rel_teacher:cub` and `rel_teacher_resnet18_cub` share (and resume)
    # one run directory.
    workdir = fv.workdir or os.path.join("runs", config.recipe)
    try:
        run(config, workdir)
    except TrainingPreempted as e:
        sys.stderr.write(f"tfembed-train: {e}\n")
        return 143  # 128 + SIGTERM: what a scheduler expects from a terminated job
    except NonFiniteLossError as e:
        sys.stderr.write(f"tfembed-train: {e}\n")
        return 1
    return 0


def _define_eval(fv):
    flags.DEFINE_multi_string("model", [], ".keras file or SavedModel dir (repeatable)",
                              flag_values=fv)
    flags.DEFINE_list("domains", [], "domains to evaluate on, e.g. cub,cars,inshop or digits",
                      flag_values=fv)
    flags.DEFINE_string("data_dir", "", "root that holds the datasets", flag_values=fv)
    flags.DEFINE_integer("image_size", 0, "evaluation crop size (0: the model's ImageSpec)",
                         flag_values=fv)
    flags.DEFINE_integer("resize_size", 0, "resize before the centre crop (0: the model's "
                         "ImageSpec)", flag_values=fv)
    flags.DEFINE_list("ks", ["1", "2", "4", "8"], "Recall@K values", flag_values=fv)
    flags.DEFINE_enum("uned_evaluation", "test", ["test", "val"], "UnED domains (uned:<domain>): "
                      "which evaluation pairs to score (UnED's test or val query/index splits)",
                      flag_values=fv)
    flags.DEFINE_string("workdir", ".", "where report.json is written", flag_values=fv)


def eval_main(argv=None):
    """``tfembed-eval --model M.keras --domains cub,cars [--data_dir DIR]``: Recall@K table."""
    fv = _parse(_define_eval, argv, "usage: tfembed-eval --model PATH [--model PATH ...] "
                                    "--domains a,b [--data_dir DIR]", _EVAL_ABOUT)
    if fv is None:
        return 0
    if not fv.model or not fv.domains:
        sys.stderr.write("tfembed-eval: --model and --domains are required\n")
        return 2
    from tfembed.data.sources import load_domain
    from tfembed.data.types import ImageSpec
    from tfembed.evaluation.protocol import evaluate
    from tfembed.evaluation.report import write_report
    from tfembed.models import load_embedder

    from tfembed.data.uned import UNED_EVAL_PAIRS, read_uned_domain
    from tfembed.evaluation.uned import evaluate_uned

    # UnED domains (uned:<domain>) are scored by UnED's protocol (separate and merged index over
    # the UnED domains given, R@1 / mMP@5 / mAP@5); only their evaluation splits are read.
    uned_names = [d[len("uned:"):] for d in fv.domains if d.startswith("uned:")]
    domains = [load_domain(d, data_dir=fv.data_dir or None) for d in fv.domains
               if not d.startswith("uned:")]
    uned = [read_uned_domain(fv.data_dir or os.environ.get("TFEMBED_DATA_DIR") or "data", d,
                             splits=list(dict.fromkeys(UNED_EVAL_PAIRS.get(d, {}).get(
                                 fv.uned_evaluation, ()))) or None)
            for d in uned_names]
    rows = []
    for path in fv.model:
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        model = load_embedder(path)
        try:
            spec = ImageSpec.of(model)
        except ValueError:   # no static input size (e.g. a SavedModel): the standard transform
            spec = ImageSpec()
        if fv.image_size or fv.resize_size:
            size = ImageSpec(fv.image_size).size if fv.image_size else spec.size
            # The model's recorded resize still holds when the size is its own.
            spec = ImageSpec(size, fv.resize_size or (spec.resize if size == spec.size else None))
        if domains:
            rows += evaluate(model, domains, ks=tuple(int(k) for k in fv.ks), name=name, spec=spec)
        if uned:
            rows += evaluate_uned(model, uned, evaluation=fv.uned_evaluation, name=name, spec=spec)
    write_report(fv.workdir, "tfembed-eval", {"models": list(fv.model),
                                              "domains": list(fv.domains)}, rows)
    return 0


def _define_export(fv):
    flags.DEFINE_string("model", None, "trained .keras model", flag_values=fv)
    flags.DEFINE_string("name", None, "model name (TF Serving --model_name)", flag_values=fv)
    flags.DEFINE_string("export_root", "saved_models", "export root", flag_values=fv)
    flags.DEFINE_integer("image_size", 0, "crop size the model takes (0: its input shape)",
                         flag_values=fv)
    flags.DEFINE_integer("resize_size", 0, "resize before the centre crop (0: the model's "
                         "ImageSpec)", flag_values=fv)


def export_main(argv=None):
    """``tfembed-export --model M.keras --name NAME``: SavedModel in saved_models/NAME/<v>/."""
    fv = _parse(_define_export, argv, "usage: tfembed-export --model M.keras --name NAME",
                _EXPORT_ABOUT)
    if fv is None:
        return 0
    if not fv.model or not fv.name:
        sys.stderr.write("tfembed-export: --model and --name are required\n")
        return 2
    from tfembed.export import export_from_file

    path = export_from_file(fv.model, fv.export_root, fv.name,
                            image_size=fv.image_size or None,
                            resize_size=fv.resize_size or None)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
