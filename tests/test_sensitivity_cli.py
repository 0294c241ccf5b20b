"""``llmopt sensitivity``: the JSON contract, the printed table and one-line errors."""

from __future__ import annotations

import json

import pytest

from llmopt.cli import main
from llmopt.sensitivity import PROXIES


def test_json_contract(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    out = tmp_path / "s.json"
    argv = ["sensitivity", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
            "--quant-method", "rtn", "--levels", "2,4", "--validation-rows", "16",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert list(data)[:6] == ["method", "levels", "metric", "granularity", "seconds", "layers"]
    assert data["method"] == "rtn" and data["levels"] == [2, 4]
    assert data["metric"] == "accuracy" and data["granularity"] == "matrix"
    assert data["seconds"] > 0
    assert len(data["layers"]) == 12 * 2  # 2 blocks x 6 matrices, at 2 levels
    for row in data["layers"]:
        assert set(row) >= {"name", "level", "delta", "interval", "proxies"}
        lo, hi = row["interval"]
        assert lo <= row["delta"] <= hi
        assert set(row["proxies"]) == set(PROXIES)
    assert set(data["proxy_correlation"]) == set(PROXIES)
    printed = capsys.readouterr().out
    assert "bert.encoder.layer.1.output.dense" in printed and "Spearman" in printed


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sparsity-method", "magnitude", "--levels", "0.5,1.5"], "outside the allowed range"),
        (["--sparsity-method", "magnitude", "--levels", "x"], "not a sparsity"),
        (["--quant-method", "nope", "--levels", "4"], "quant_method 'nope' is unknown"),
        (["--lowrank-method", "svd", "--levels", "2", "--validation-rows", "999"], "leaves none"),
        (["--quant-method", "rtn", "--levels", "4", "--json", "/nonexistent/dir/x.json"],
         "does not exist"),
        (["--quant-method", "rtn", "--levels", "4", "--granularity", "head"], "invalid choice"),
        (["--levels", "4"], "required"),
        (["--quant-method", "rtn", "--sparsity-method", "wanda", "--levels", "4"],
         "not allowed with"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(tiny_bert_dir, tiny_csv, capsys, extra, message):
    argv = ["sensitivity", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv), *extra]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
