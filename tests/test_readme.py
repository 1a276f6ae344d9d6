"""The README's notebook example runs as written."""

import os
import re

import keras

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = open(README).read()
    match = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its tested example"
    monkeypatch.chdir(tmp_path)
    keras.backend.clear_session()
    # TF_DETERMINISTIC_OPS (conftest) makes unseeded random ops an error; a notebook user
    # without that variable needs no seed, so the test sets one, as a fresh process would not.
    keras.utils.set_random_seed(0)
    namespace = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    assert os.path.isfile(os.path.join(namespace["path"], "saved_model.pb"))
    rows = namespace["rows"]
    assert [(r["domain"], r["gallery"]) for r in rows] == [("glyphs", "domain")]
    assert 0 < rows[0]["recall@1"] <= rows[0]["recall@8"] <= 1
    printed = capsys.readouterr().out
    assert "glyphs_model" in printed and "universal" in printed and "fused" in printed
    assert os.path.isfile(os.path.join("saved_models", "universal_demo", "1", "saved_model.pb"))
    assert namespace["universal"].student is namespace["student"]
    distiller = namespace["distiller"]
    assert distiller.student is namespace["small"]
    assert {"metric_loss", "distill_loss", "attention_loss"} <= {m.name for m in distiller.metrics}
