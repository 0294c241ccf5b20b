"""The command line: JSON/CSV contracts, exit status 2 with one line on bad input."""

import csv
import json
import subprocess
import sys

import pytest
from contract import RESULT_KEYS, TOP_KEYS

from llmopt.cli import main


def test_evaluate_writes_json_and_predictions(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    out, preds = tmp_path / "r.json", tmp_path / "p.csv"
    rc = main(
        [
            "evaluate",
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(tiny_csv),
            "--json",
            str(out),
            "--predictions",
            str(preds),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "confusion matrix" in printed
    data = json.loads(out.read_text())
    assert set(data) == TOP_KEYS
    assert set(data["baseline"]) == RESULT_KEYS
    assert data["n"] == 10 and data["split"] == "test"
    assert data["compressed"] is None and data["fidelity"] is None and data["report"] is None
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 10
    assert list(rows[0])[:4] == ["index", "label", "pred_baseline", "pred_compressed"]
    names = data["label_names"]
    assert [f"prob_baseline_{n}" for n in names] == list(rows[0])[4 : 4 + len(names)]
    acc = sum(r["label"] == r["pred_baseline"] for r in rows) / len(rows)
    assert acc == pytest.approx(data["baseline"]["metrics"]["accuracy"])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--limit", "0"], "--limit"),
        (["--dataset", "missing.csv"], "not found"),
        (["--model", "./no/such/dir"], "not found"),
        (["--text-column", "body"], "'body' not found"),
        (["--json", "no/such/folder/x.json"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_bert_dir, tiny_csv, args, match, capsys):
    base = ["--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    try:
        rc = main(["evaluate", *base, *args])
    except SystemExit as exc:  # argparse errors leave through sys.exit
        rc = exc.code
    assert rc == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0]


def test_module_entry_point_reports_errors_without_traceback(tiny_csv):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmopt",
            "evaluate",
            "--model",
            "./no/such/dir",
            "--dataset",
            str(tiny_csv),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmopt: error:") and "Traceback" not in proc.stderr


def test_prepare_command(tiny_bert_dir, tiny_csv, capsys):
    assert main(["prepare", "--model", f"encoder:{tiny_bert_dir}", "--dataset", str(tiny_csv)]) == 0
    assert "ready:" in capsys.readouterr().out


def test_compression_flags_fill_compressed_fidelity_report_and_save(
    tiny_bert_dir, tiny_csv, tmp_path
):
    out, preds, saved = tmp_path / "r.json", tmp_path / "p.csv", tmp_path / "model"
    rc = main(
        [
            "evaluate",
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(tiny_csv),
            "--sparsity",
            "0.5",
            "--bits",
            "8",
            "--json",
            str(out),
            "--predictions",
            str(preds),
            "--save-model",
            str(saved),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["config"]["sparsity"] == 0.5 and data["config"]["bits"] == 8
    assert set(data["compressed"]) == RESULT_KEYS
    assert set(data["fidelity"]) == {"agreement", "mean_kl", "flipped"}
    assert len(data["report"]) == 12  # 2 blocks x 6 Linear layers
    nonzero = data["compressed"]["params_nonzero"]
    assert nonzero < data["baseline"]["params_nonzero"]
    assert data["compressed"]["size_bytes"] < data["baseline"]["size_bytes"]
    rows = list(csv.DictReader(preds.open()))
    agree = sum(r["pred_baseline"] == r["pred_compressed"] for r in rows) / len(rows)
    assert agree == pytest.approx(data["fidelity"]["agreement"])
    again = tmp_path / "again.json"
    assert (
        main(["evaluate", "--model", str(saved), "--dataset", str(tiny_csv), "--json", str(again)])
        == 0
    )
    reloaded = json.loads(again.read_text())["baseline"]
    assert reloaded["metrics"] == data["compressed"]["metrics"]  # the saved model predicts alike


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--rank", "5000"], "rank 5000"),
        (["--bits", "4", "--group-size", "7"], "group_size 7"),
        (["--bits", "9"], "bits 9"),
        (["--sparsity", "1.0"], "sparsity 1.0"),
        (["--int8-dynamic", "--save-model", "x"], "cannot be saved"),
    ],
)
def test_bad_compression_flags_exit_2(tiny_bert_dir, tiny_csv, args, match, capsys):
    rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv), *args])
    assert rc == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and match in err[0]


def test_flags_that_change_nothing_are_refused(tiny_bert_dir, tiny_csv, capsys):
    rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
               "--sparsity-method", "wanda"])  # fmt: skip
    assert rc == 2
    assert "change nothing on their own" in capsys.readouterr().err


def test_printed_latency_follows_the_one_policy(tiny_bert_dir, tiny_csv, capsys):
    """A pruned model runs the baseline's kernels: the printed table gives it the baseline's
    latency (two single passes timed apart once printed 8.30 vs 4.74 ms beside a note calling
    the difference noise); int8 kernels differ: both columns are the paired medians the note
    quotes."""
    common = ["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    assert main([*common, "--sparsity", "0.5", "--no-record"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("latency"))
    base, compressed = row.split()[2:4]
    assert base == compressed
    assert main([*common, "--int8-dynamic", "--no-record"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("latency"))
    base, compressed = row.split()[2:4]
    note = next(ln for ln in out.splitlines() if ln.startswith("note: paired latency"))
    assert f"baseline {base} ms, compressed {compressed} ms" in note
