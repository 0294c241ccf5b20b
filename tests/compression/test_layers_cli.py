"""``evaluate --layers FILE --skip PATTERN``: the JSON ``report`` shows each matrix's own
sparsity, bits and rank; the run's recipe keeps the rules, and re-running it with ``--recipe``
compresses the same way; the rules reach the store and its lineage label.

Fails on the code before per-layer rules: evaluate had no ``--layers``/``--skip`` flags."""

from __future__ import annotations

import json

from llmopt.cli import main
from llmopt.compression import CompressionConfig
from llmopt.experiments import ExperimentStore

L = "bert.encoder.layer"
YAML = '"*.layer.0.*": {bits: 8}\n"*.query": {sparsity: 0.25, bits: null}\n'


def _evaluate(tiny_bert_dir, tiny_csv, out, *args) -> dict:
    argv = ["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    assert main([*argv, "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def test_layers_file_and_skip_reach_the_report_and_recipe(tiny_bert_dir, tiny_csv, tmp_path):
    rules = tmp_path / "layers.yaml"
    rules.write_text(YAML, encoding="utf-8")
    flags = ["--sparsity", "0.5", "--bits", "4", "--layers", str(rules), "--skip", "*.output.dense"]
    first = _evaluate(tiny_bert_dir, tiny_csv, tmp_path / "a.json", *flags)
    rows = {r["name"]: r for r in first["report"]}
    assert not any(n.endswith(".output.dense") for n in rows)  # skipped: not compressed
    assert rows[f"{L}.0.attention.self.key"]["bits"] == 8  # block 0 beats the query rule
    assert rows[f"{L}.0.attention.self.query"]["bits"] == 8
    assert rows[f"{L}.1.attention.self.query"]["bits"] is None  # the query rule: float, 25%
    assert rows[f"{L}.1.attention.self.query"]["sparsity"] == 0.25
    assert rows[f"{L}.1.attention.self.key"]["bits"] == 4
    assert rows[f"{L}.1.attention.self.key"]["sparsity"] >= 0.5

    store = ExperimentStore()
    run = store.get(first["run_id"])
    assert run.config["layers"] == {"*.layer.0.*": {"bits": 8},
                                    "*.query": {"sparsity": 0.25, "bits": None}}  # fmt: skip
    assert run.config["skip"] == ["*.output.dense"]
    assert "'*.query': 25% sparsity, float" in run.method

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(run.config), encoding="utf-8")
    again = _evaluate(tiny_bert_dir, tiny_csv, tmp_path / "b.json", "--recipe", str(recipe))
    assert again["report"] == first["report"]
    assert CompressionConfig.from_dict(run.config).rules["*.query"] == {
        "sparsity": 0.25,
        "bits": None,
    }
