"""The command line's bad-input contract, case by case.

Every case runs ``llmopt evaluate`` (or ``prepare``) with one mistake and checks: exit status 2,
exactly one stderr line starting with ``llmopt: error:`` that names the problem, no traceback,
and nothing written at any output path (no ``.llmopt-tmp-*`` leftovers either). Most cases run
``llmopt.cli.main`` in-process; the few that need real process behaviour (stdin closed, a FIFO)
run ``python -m llmopt``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from badinputs import (
    assert_clean_failure,
    copy_model,
    leftovers,
    make_base_model,
    make_custom_code,
    make_headless_classifier,
    make_pickle_checkpoint,
    run_cli,
    run_module,
    write_save_marker,
)
from tinymodels import make_texts, make_tiny

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny_dirs):
    """Broken model folders shared by the cases (none of them is ever written to)."""
    root = tmp_path_factory.mktemp("broken_models")
    bert = tiny_dirs["bert"]
    markers = root / "markers"
    markers.mkdir()
    m = {"markers": markers}
    m["custom_code"] = make_custom_code(bert, root / "custom_code", markers / "custom_code_ran")
    m["base_model"] = make_base_model(bert, root / "base_model")
    m["no_head"] = make_headless_classifier(bert, root / "no_head")
    m["pickle"] = make_pickle_checkpoint(bert, root / "pickle", markers / "pickle_ran")
    no_config = root / "no_config"
    no_config.mkdir()
    (no_config / "README.md").write_text("not a checkpoint\n")
    m["no_config"] = no_config
    for name, text in [
        ("config_not_json", "{'num_labels': 2,"),
        ("config_empty", ""),
        ("config_list", "[1, 2, 3]"),
    ]:
        folder = copy_model(bert, root / name)
        (folder / "config.json").write_text(text)
        m[name] = folder
    truncated = copy_model(bert, root / "truncated_weights")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    m["truncated_weights"] = truncated
    partial = copy_model(bert, root / "partial")
    (partial / ".llmopt-partial").write_text("save in progress\n")
    m["partial"] = partial
    pooled = root / "pooled_no_marker"
    copy_model(bert, pooled / "encoder")
    (pooled / "llmopt_pooled.json").write_text(
        json.dumps({"label_names": ["neg", "pos"], "max_length": 64, "name": "x"})
    )
    m["pooled_no_marker"] = pooled
    m["size_mismatch"] = write_save_marker(
        copy_model(bert, root / "size_mismatch"),
        tweak={"model.safetensors": (bert / "model.safetensors").stat().st_size + 7},
    )
    m["listed_missing"] = write_save_marker(
        copy_model(bert, root / "listed_missing"), tweak={"extra.safetensors": 123}
    )
    garbage = copy_model(bert, root / "marker_garbage")
    (garbage / "llmopt_save.json").write_text("garbage{")
    m["marker_garbage"] = garbage
    m["named"] = make_tiny("bert", root / "named", id2label={0: "negative", 1: "positive"})
    return m


@dataclass
class Ctx:
    """What a case builds its arguments from; every path lives under the case's tmp folder."""

    tmp: Path
    bert: Path  # the session's tiny BERT classifier (read only)
    broken: dict
    csv: Path  # a good CSV (text,label; pos/neg)
    out: Path  # an empty folder for outputs
    absent: list[Path] = field(default_factory=list)  # must not exist after the run
    watch: list[Path] = field(default_factory=list)  # must hold no .llmopt-tmp-* after
    checks: list[Callable[[], None]] = field(default_factory=list)  # more post-conditions

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fifo(self, name: str) -> Path:
        path = self.tmp / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return path

    def bert_copy(self, name: str = "bert") -> Path:
        """A private copy of the tiny model; the case checks it is left unchanged."""
        dst = copy_model(self.bert, self.tmp / "models" / name)
        before = _tree(dst)
        self.checks.append(lambda: _assert_same(dst, before))
        return dst

    def keep(self, path: Path) -> Path:
        """``path`` must still exist with the same content after the run."""
        before = _tree(path) if path.is_dir() else path.read_bytes()
        self.checks.append(
            lambda: (
                _assert_same(path, before)
                if isinstance(before, dict)
                else _assert_bytes(path, before)
            )
        )
        return path

    def under_file(self, name: str) -> Path:
        """A path inside a regular file (so its folder cannot exist or be written)."""
        return self.file("plainfile", "x") / name

    def readonly_target(self, name: str) -> Path:
        """A path in a folder the user cannot write (root ignores permissions: then a path
        under a regular file, which no one can create)."""
        if os.geteuid() == 0:
            return self.under_file(name)
        folder = self.dir("readonly")
        folder.chmod(0o500)
        return folder / name


def _tree(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _assert_same(folder: Path, before: dict) -> None:
    assert folder.is_dir() and _tree(folder) == before, f"{folder} was changed"


def _assert_bytes(path: Path, before: bytes) -> None:
    assert path.is_file() and path.read_bytes() == before, f"{path} was changed"


def _labelled_csv(labels: list[str], n: int = 40) -> str:
    texts, _ = make_texts(n)
    rows = ["text,label"] + [f"{t},{labels[i % len(labels)]}" for i, t in enumerate(texts)]
    return "\n".join(rows) + "\n"


GOOD_ROWS = _labelled_csv(["pos", "neg"])
LATIN1 = (GOOD_ROWS + "caf\xe9 cr\xe8me br\xfbl\xe9e,pos\n").encode("latin-1")


# ------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Ctx], list[str]]  # arguments after the command (defaults filled in)
    pattern: str  # regex the error line must match (case-insensitive)
    command: str = "evaluate"
    process: bool = False  # run `python -m llmopt` with stdin closed
    offline: bool = False  # hub unreachable, HF_HUB_OFFLINE=1


def _fifo_json(c: Ctx) -> list[str]:
    fifo = c.out / "results.json"
    os.mkfifo(fifo)

    def still_fifo():
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"

    c.checks.append(still_fifo)
    return ["--json", str(fifo)]


def _save_overwrite_dataset_folder(c: Ctx) -> list[str]:
    folder = c.dir("project")
    data = folder / "reviews.csv"
    data.write_text(GOOD_ROWS)
    c.keep(data)
    return ["--dataset", str(data), "--sparsity", "0.5", "--save-model", str(folder),
            "--overwrite"]  # fmt: skip


def _json_readonly(c: Ctx) -> list[str]:
    target = c.readonly_target("r.json")
    c.absent.append(target)
    return ["--json", str(target)]


def _pred_readonly(c: Ctx) -> list[str]:
    target = c.readonly_target("p.csv")
    c.absent.append(target)
    return ["--predictions", str(target)]


def _custom_code_args(c: Ctx) -> list[str]:
    marker = c.broken["markers"] / "custom_code_ran"
    c.checks.append(lambda: _assert_absent(marker, "the checkpoint's custom code ran"))
    return ["--model", str(c.broken["custom_code"])]


def _pickle_args(c: Ctx) -> list[str]:
    marker = c.broken["markers"] / "pickle_ran"
    c.checks.append(lambda: _assert_absent(marker, "the pickle's code ran"))
    return ["--model", str(c.broken["pickle"])]


def _assert_absent(path: Path, what: str) -> None:
    assert not path.exists(), what


SPARSE = ["--sparsity", "0.5"]
OFFLINE_MSG = r"cannot be reached|not in the local hub cache"

NOT_A_MODEL = r"not a model this tool can load"

CASES: list[Case] = [
    # --- model sources
    Case("model-missing-dir", lambda c: ["--model", str(c.tmp / "no" / "such" / "dir")],
         r"not found"),
    Case("model-is-a-file", lambda c: ["--model", str(c.file("model.bin", "x"))],
         r"is a (regular )?file, not a folder"),
    Case("model-is-a-fifo", lambda c: ["--model", str(c.fifo("model"))], r"FIFO"),
    Case("model-is-dev-zero", lambda c: ["--model", "/dev/zero"], r"device"),
    Case("model-dir-without-config", lambda c: ["--model", str(c.broken["no_config"])],
         r"no config\.json"),
    Case("model-config-not-json", lambda c: ["--model", str(c.broken["config_not_json"])],
         r"config\.json is not valid JSON"),
    Case("model-config-empty", lambda c: ["--model", str(c.broken["config_empty"])],
         r"config\.json is not valid JSON"),
    Case("model-config-json-list", lambda c: ["--model", str(c.broken["config_list"])],
         r"config|could not load"),
    Case("model-custom-code-process", _custom_code_args, r"custom Python code", process=True),
    Case("model-custom-code", _custom_code_args, r"custom Python code"),
    Case("encoder-custom-code",
         lambda c: ["--model", f"encoder:{c.broken['custom_code']}"], r"custom Python code"),
    Case("model-not-a-classifier", lambda c: ["--model", str(c.broken["base_model"])],
         r"not a sequence classifier"),
    Case("model-classifier-weights-missing", lambda c: ["--model", str(c.broken["no_head"])],
         r"no trained classification head"),
    Case("model-truncated-weights", lambda c: ["--model", str(c.broken["truncated_weights"])],
         r"could not load model"),
    Case("model-code-in-pickle", _pickle_args, r"pickle|could not load"),
    Case("save-with-partial-marker", lambda c: ["--model", str(c.broken["partial"])],
         r"incomplete save"),
    Case("save-pooled-without-marker", lambda c: ["--model", str(c.broken["pooled_no_marker"])],
         r"incomplete save"),
    Case("save-file-sizes-differ", lambda c: ["--model", str(c.broken["size_mismatch"])],
         r"incomplete save"),
    Case("save-listed-file-missing", lambda c: ["--model", str(c.broken["listed_missing"])],
         r"incomplete save"),
    Case("save-marker-garbage", lambda c: ["--model", str(c.broken["marker_garbage"])],
         r"incomplete save"),
    Case("encoder-nothing-after", lambda c: ["--model", "encoder:"], r"encoder: needs a source"),
    Case("encoder-only-spaces", lambda c: ["--model", "encoder:   "],
         r"encoder: needs a source"),
    Case("encoder-dir-without-config",
         lambda c: ["--model", f"encoder:{c.broken['no_config']}"], r"no config\.json"),
    Case("encoder-missing-dir", lambda c: ["--model", f"encoder:{c.tmp / 'no_encoder'}"],
         r"not found"),
    Case("encoder-is-a-file", lambda c: ["--model", f"encoder:{c.file('enc.txt', 'x')}"],
         r"is a (regular )?file, not a folder"),
    Case("hub-id-offline", lambda c: ["--model", "llmopt-tests-nonexistent/tiny-model-xyz"],
         OFFLINE_MSG, offline=True),
    Case("encoder-hub-id-offline",
         lambda c: ["--model", "encoder:llmopt-tests-nonexistent/tiny-encoder-xyz"],
         OFFLINE_MSG, offline=True),
    Case("model-malformed-source", lambda c: ["--model", "not a model!"], NOT_A_MODEL),
    Case("model-empty-source", lambda c: ["--model", ""], NOT_A_MODEL),
    Case("model-too-many-slashes", lambda c: ["--model", "org/name/extra"], NOT_A_MODEL),
    Case("prepare-model-missing", lambda c: ["--model", str(c.tmp / "nope")], r"not found",
         command="prepare"),
    Case("prepare-encoder-empty", lambda c: ["--model", "encoder:"], r"encoder: needs a source",
         command="prepare"),
    # --- datasets
    Case("csv-missing", lambda c: ["--dataset", str(c.tmp / "missing.csv")], r"not found"),
    Case("csv-is-a-directory", lambda c: ["--dataset", str(c.dir("folder.csv"))], r"folder"),
    Case("csv-is-a-fifo-process", lambda c: ["--dataset", str(c.fifo("pipe.csv"))], r"FIFO",
         process=True),
    Case("csv-is-a-fifo", lambda c: ["--dataset", str(c.fifo("pipe.csv"))], r"FIFO"),
    Case("csv-is-dev-zero", lambda c: ["--dataset", "/dev/zero"], r"device"),
    Case("csv-symlink-to-dev-zero",
         lambda c: ["--dataset", str(_symlink(c.tmp / "zero.csv", "/dev/zero"))], r"device"),
    Case("csv-empty", lambda c: ["--dataset", str(c.file("e.csv", b""))], r"is empty"),
    Case("csv-whitespace-only", lambda c: ["--dataset", str(c.file("w.csv", " \n\t\r\n  \n"))],
         r"is empty"),
    Case("csv-header-only", lambda c: ["--dataset", str(c.file("h.csv", "text,label\n"))],
         r"no rows with both a text and a label"),
    Case("csv-single-class",
         lambda c: ["--dataset", str(c.file("one.csv", _labelled_csv(["pos"])))],
         r"single class"),
    Case("csv-not-utf8",
         lambda c: ["--dataset", str(c.file("latin.csv", LATIN1))],
         r"not valid UTF-8"),
    Case("csv-nul-bytes",
         lambda c: ["--dataset", str(c.file("nul.csv", GOOD_ROWS.encode() + b"a\x00b,pos\n"))],
         r"NUL bytes"),
    Case("csv-ragged-rows",
         lambda c: ["--dataset", str(c.file("rag.csv", GOOD_ROWS + "x,pos,extra,more\n"))],
         r"not a well-formed CSV"),
    Case("csv-unclosed-quote",
         lambda c: ["--dataset", str(c.file("q.csv", GOOD_ROWS + '"never closed,pos\nx,neg\n'))],
         r"not a well-formed CSV"),
    Case("csv-missing-text-column", lambda c: ["--text-column", "review"],
         r"'review' not found"),
    Case("csv-missing-label-column", lambda c: ["--label-column", "score"],
         r"'score' not found"),
    Case("csv-same-column-twice", lambda c: ["--text-column", "label", "--label-column", "label"],
         r"both 'label'"),
    Case("csv-empty-column-name", lambda c: ["--text-column", ""],
         r"text column must be a column name"),
    Case("csv-all-rows-blank",
         lambda c: ["--dataset", str(c.file("b.csv", "text,label\n ,\n,pos\nhello,\n\t, \n"))],
         r"no rows with both a text and a label"),
    Case("csv-one-labelled-row",
         lambda c: ["--dataset", str(c.file("1.csv", "text,label\nhello there,pos\n,neg\nx,\n"))],
         r"single class|1 labelled row"),
    Case("tsv-named-csv",
         lambda c: ["--dataset", str(c.file("tabs.csv", GOOD_ROWS.replace(",", "\t")))],
         r"single column: its header looks separated by tabs"),
    Case("dataset-unknown-source", lambda c: ["--dataset", "my-reviews"],
         r"unknown dataset source"),
    Case("dataset-hf-without-name", lambda c: ["--dataset", "hf:"], r"needs a dataset name"),
    Case("dataset-hf-offline", lambda c: ["--dataset", "hf:llmopt-tests-nonexistent-xyz"],
         r"could not load Hugging Face dataset", offline=True),
    Case("labels-unknown-to-named-model", lambda c: ["--model", str(c.broken["named"])],
         r"not labels of model"),
    Case("labels-more-than-model",
         lambda c: ["--dataset", str(c.file("3.csv", _labelled_csv(["a", "b", "c"], 60)))],
         r"3 labels"),
    # --- flags
    Case("limit-zero", lambda c: ["--limit", "0"], r"--limit"),
    Case("limit-negative", lambda c: ["--limit", "-3"], r"--limit"),
    Case("limit-not-a-number", lambda c: ["--limit", "abc"], r"--limit"),
    Case("seed-negative", lambda c: ["--seed", "-1"], r"--seed"),
    Case("seed-not-a-number", lambda c: ["--seed", "x"], r"--seed"),
    Case("batch-size-zero", lambda c: ["--batch-size", "0"], r"--batch-size"),
    Case("batch-size-not-a-number", lambda c: ["--batch-size", "many"], r"--batch-size"),
    Case("sparsity-one", lambda c: ["--sparsity", "1.0"], r"sparsity 1\.0"),
    Case("sparsity-negative", lambda c: ["--sparsity", "-0.1"], r"sparsity -0\.1"),
    Case("sparsity-nan", lambda c: ["--sparsity", "nan"], r"sparsity"),
    Case("sparsity-inf", lambda c: ["--sparsity", "inf"], r"sparsity"),
    Case("sparsity-not-a-number", lambda c: ["--sparsity", "half"], r"--sparsity"),
    Case("bits-one", lambda c: ["--bits", "1"], r"bits 1"),
    Case("bits-nine", lambda c: ["--bits", "9"], r"bits 9"),
    Case("bits-fraction", lambda c: ["--bits", "4.5"], r"--bits"),
    Case("group-size-zero", lambda c: ["--bits", "4", "--group-size", "0"], r"group[_ -]size 0"),
    Case("group-size-not-dividing", lambda c: ["--bits", "4", "--group-size", "7"],
         r"group[_ -]size 7 does not divide"),
    Case("group-size-without-bits", lambda c: ["--group-size", "8"],
         r"--group-size change nothing"),
    Case("rank-zero", lambda c: ["--rank", "0"], r"rank 0"),
    Case("rank-negative", lambda c: ["--rank", "-2"], r"rank -2"),
    Case("rank-larger-than-layer", lambda c: ["--rank", "33"], r"rank 33 is larger"),
    Case("sparsity-pattern-5-4", lambda c: ["--sparsity-pattern", "5:4"], r"--sparsity-pattern"),
    Case("sparsity-pattern-0-4", lambda c: ["--sparsity-pattern", "0:4"], r"--sparsity-pattern"),
    Case("sparsity-scope-global-with-wanda",
         lambda c: [*SPARSE, "--sparsity-method", "wanda", "--sparsity-scope", "global"],
         r"sparsity[_-]scope 'global'"),
    Case("bits-with-int8-dynamic", lambda c: ["--bits", "8", "--int8-dynamic"],
         r"--bits 8 and --int8-dynamic"),
    Case("sparsity-method-alone", lambda c: ["--sparsity-method", "wanda"],
         r"--sparsity-method change nothing"),
    Case("sparsity-zero-alone", lambda c: ["--sparsity", "0"], r"change nothing"),
    Case("sparsity-scope-alone", lambda c: ["--sparsity-scope", "global"], r"change nothing"),
    Case("include-head-alone", lambda c: ["--include-head"], r"change nothing"),
    Case("calibration-samples-zero", lambda c: [*SPARSE, "--calibration-samples", "0"],
         r"--calibration-samples"),
    Case("overwrite-without-save-model", lambda c: [*SPARSE, "--overwrite"],
         r"--overwrite applies to --save-model"),
    Case("save-model-without-compression",
         lambda c: ["--save-model", str(c.out / "saved")],
         r"--save-model saves a compressed model"),
    Case("save-model-with-int8-dynamic",
         lambda c: ["--int8-dynamic", "--save-model", str(c.out / "saved")],
         r"--int8-dynamic models cannot be saved"),
    Case("unknown-flag", lambda c: ["--frobnicate", "3"], r"unrecognized arguments: --frobnicate"),
    Case("split-validation", lambda c: ["--split", "validation"], r"--split.*validation"),
    Case("no-command", lambda c: [], r"required: command", command=""),
    Case("unknown-command", lambda c: [], r"invalid choice: 'evalute'", command="evalute"),
    # --- output paths
    Case("json-into-missing-folder", lambda c: ["--json", str(c.out / "no" / "r.json")],
         r"--json.*does not exist"),
    Case("json-is-a-directory", lambda c: ["--json", str(c.dir("out/sub"))],
         r"--json.*is a folder"),
    Case("json-into-readonly-folder", _json_readonly,
         r"--json.*(not writable|does not exist|is a file, not a folder)"),
    Case("predictions-into-missing-folder",
         lambda c: ["--predictions", str(c.out / "no" / "p.csv")],
         r"--predictions.*does not exist"),
    Case("predictions-is-a-directory", lambda c: ["--predictions", str(c.dir("out/sub"))],
         r"--predictions.*is a folder"),
    Case("predictions-into-readonly-folder", _pred_readonly,
         r"--predictions.*(not writable|does not exist|is a file, not a folder)"),
    Case("predictions-is-the-dataset", lambda c: ["--predictions", str(c.keep(c.csv))],
         r"--predictions.*is the dataset itself"),
    Case("json-is-the-dataset", lambda c: ["--json", str(c.keep(c.csv))],
         r"--json.*is the dataset itself"),
    Case("json-is-a-symlink-to-the-dataset",
         lambda c: ["--json", str(_symlink(c.out / "r.json", c.keep(c.csv)))],
         r"--json.*is the dataset itself"),
    Case("json-and-predictions-same-path",
         lambda c: ["--json", str(c.out / "same"), "--predictions", str(c.out / "same")],
         r"--json and --predictions name the same file"),
    Case("json-and-predictions-same-file-other-spelling",
         lambda c: ["--json", str(c.out / "same"),
                    "--predictions", str(c.out / ".." / "out" / "same")],
         r"--json and --predictions name the same file"),
    Case("json-is-a-fifo", _fifo_json, r"FIFO|named pipe|regular file"),
    Case("save-model-into-model-folder",
         lambda c: [*SPARSE, "--model", str(m := c.bert_copy()), "--save-model", str(m)],
         r"holds the model being compressed"),
    Case("save-model-into-model-parent-with-overwrite",
         lambda c: [*SPARSE, "--model", str(c.bert_copy()),
                    "--save-model", str(c.tmp / "models"), "--overwrite"],
         r"holds the model being compressed"),
    Case("save-model-into-encoder-folder",
         lambda c: [*SPARSE, "--model", f"encoder:{(m := c.bert_copy())}", "--save-model",
                    str(m), "--overwrite"],
         r"holds the model being compressed"),
    Case("save-model-into-non-empty-folder",
         lambda c: [*SPARSE, "--save-model", str(c.keep(_nonempty(c.dir("out/full"))))],
         r"is not empty"),
    Case("save-model-is-a-file",
         lambda c: [*SPARSE, "--save-model", str(c.keep(c.file("model.txt", "mine")))],
         r"is a file"),
    Case("save-model-is-the-dataset",
         lambda c: [*SPARSE, "--save-model", str(c.keep(c.csv)), "--overwrite"], r"is a file"),
    Case("save-model-under-a-file",
         lambda c: [*SPARSE, "--save-model", str(c.under_file("model"))],
         r"not writable|does not exist|is a file"),
    Case("save-model-same-path-as-json",
         lambda c: [*SPARSE, "--save-model", str(c.out / "x"), "--json", str(c.out / "x")],
         r"same|--save-model.*--json|--json.*--save-model"),
    Case("save-model-overwrite-folder-holding-the-dataset", _save_overwrite_dataset_folder,
         r"dataset"),
    # --- issue 18: every output path gets the one check; run ids; recipes
    Case("runs-export-output-char-device", lambda c: ["export", "1", "-o", "/dev/null"],
         r"--output.*device", command="runs"),
    Case("runs-export-predictions-fifo", lambda c: ["export", "1", "--predictions",
                                                    str(_fifo_kept(c, "p.csv"))],
         r"--predictions.*FIFO", command="runs"),
    Case("runs-export-output-symlink-to-device",
         lambda c: ["export", "1", "-o", str(_symlink(c.out / "null.json", "/dev/null"))],
         r"--output.*device", command="runs"),
    Case("runs-export-output-in-proc", lambda c: ["export", "1", "-o", "/proc/llmopt-x.json"],
         r"--output.*cannot be written", command="runs"),
    Case("json-in-proc", lambda c: ["--json", "/proc/llmopt-x.json"],
         r"--json.*cannot be written"),
    Case("predictions-symlink-to-fifo",
         lambda c: ["--predictions", str(_symlink(c.out / "p.csv", _fifo_kept(c, "q.csv")))],
         r"--predictions.*FIFO"),
    Case("save-model-in-proc", lambda c: [*SPARSE, "--save-model", "/proc/llmopt-model"],
         r"--save-model.*cannot be written|not writable"),
    Case("runs-show-id-overflow", lambda c: ["show", "99999999999999999999"],
         r"run id is a whole number from 1", command="runs"),
    Case("runs-delete-id-overflow", lambda c: ["delete", "99999999999999999999"],
         r"run id is a whole number from 1", command="runs"),
    Case("runs-export-id-overflow", lambda c: ["export", "99999999999999999999"],
         r"run id is a whole number from 1", command="runs"),
    Case("runs-show-superscript-id", lambda c: ["show", "\u00b2"], r"run id is a whole number",
         command="runs"),
    Case("recipe-nested-100000-deep",
         lambda c: ["--recipe", str(c.file("deep.json", "[" * 100_000 + "]" * 100_000))],
         r"nested too deeply"),
    Case("recipe-model-is-a-number",
         lambda c: ["--recipe", str(c.file("r.json", '{"config": {}, "model": 123}'))],
         r'"model" must be text'),
    Case("recipe-rows-is-a-list",
         lambda c: ["--recipe", str(c.file("r.json", '{"config": {}, "model": "bundled", '
                                                     '"rows": [1, 2]}'))],
         r'"rows" must be an object'),
    Case("recipe-limit-is-text",
         lambda c: ["--recipe", str(c.file("r.json", '{"config": {}, "model": "bundled", '
                                                     '"rows": {"limit": "ten"}}'))],
         r'"rows.limit" must be a whole number'),
    Case("calibration-samples-above-bound",
         lambda c: [*SPARSE, "--sparsity-method", "wanda", "--calibration-samples", "10000"],
         r"--calibration-samples 10000 must be a whole number >= 1 and at most 4096"),
    Case("runs-export-predictions-is-a-folder", lambda c: ["export", "1", "--predictions",
                                                       str(c.dir("out/p.csv"))],
         r"--predictions.*folder", command="runs"),
    Case("recipe-is-a-fifo", lambda c: ["--recipe", str(c.fifo("r.json"))], r"recipe.*FIFO"),
    Case("recipe-is-dev-zero", lambda c: ["--recipe", "/dev/zero"], r"recipe.*device"),
    Case("recipe-too-big",
         lambda c: ["--recipe", str(c.file("big.json", b" " * 1_000_001 + b"{}"))],
         r"recipe.*above the limit"),
    # --- issue 16: per-layer rules (--layers FILE, --skip PATTERN)
    Case("layers-bits-out-of-range",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.query": {"bits": 9}}'))],
         r"--layers .*layer pattern '\*\.query': bits 9 is outside the allowed range 2\.\.8"),
    Case("layers-unknown-setting",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.query": {"bitz": 4}}'))],
         r"layer pattern '\*\.query': unknown setting 'bitz'; allowed: sparsity, bits"),
    Case("layers-sparsity-one",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.query": {"sparsity": 1}}'))],
         r"layer pattern '\*\.query': sparsity 1 is outside the allowed range \[0, 1\)"),
    Case("layers-skip-not-boolean",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.query": {"skip": "y"}}'))],
         r"layer pattern '\*\.query': skip must be true or false"),
    Case("layers-pattern-matches-nothing",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.attn.*": {"bits": 8}}'))],
         r"layer pattern '\*\.attn\.\*' matches no layer"),
    Case("skip-pattern-matches-nothing", lambda c: [*SPARSE, "--skip", "classifier"],
         r"skip pattern 'classifier' matches no layer"),
    Case("layers-rank-too-large-for-a-layer",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.query": {"rank": 99}}'))],
         r"rank 99 is larger than layer 'bert\.encoder\.layer\.0\.attention\.self\.query'"),
    Case("layers-not-json", lambda c: [*SPARSE, "--layers", str(c.file("l.json", "{'a': 1"))],
         r"layers file .* is not valid JSON"),
    Case("layers-bad-yaml",
         lambda c: [*SPARSE, "--layers", str(c.file("l.yaml", "a: [1, 2\nb: {"))],
         r"layers file .* is not valid YAML"),
    Case("layers-is-a-list", lambda c: [*SPARSE, "--layers", str(c.file("l.json", "[1]"))],
         r"layers file .* must hold an object"),
    Case("layers-settings-not-object",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", '{"*.query": 8}'))],
         r"layer pattern '\*\.query': its settings must be an object"),
    Case("layers-missing-file", lambda c: [*SPARSE, "--layers", str(c.tmp / "nope.json")],
         r"layers file .* not found"),
    Case("layers-is-a-fifo", lambda c: [*SPARSE, "--layers", str(c.fifo("l.json"))],
         r"layers file.*FIFO"),
    Case("layers-too-big",
         lambda c: [*SPARSE, "--layers", str(c.file("l.json", b" " * 1_000_001 + b"{}"))],
         r"layers file.*above the limit"),
    Case("layers-change-nothing",
         lambda c: ["--layers", str(c.file("l.json", '{"*.query": {"skip": true}}'))],
         r"change nothing on their own"),
]  # fmt: skip


def _symlink(link: Path, target) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def _fifo_kept(c: Ctx, name: str) -> Path:
    """A FIFO that must still be a FIFO after the run (not replaced by a regular file)."""
    fifo = c.fifo(name)
    c.checks.append(lambda: _assert_fifo(fifo))
    return fifo


def _assert_fifo(path: Path) -> None:
    assert stat.S_ISFIFO(os.lstat(path).st_mode), f"{path.name} was replaced by a regular file"


def _nonempty(folder: Path) -> Path:
    (folder / "notes.txt").write_text("keep me\n")
    return folder


N = len(CASES)


def test_matrix_size():
    print(f"CLI bad-input matrix: {N} cases")
    assert N >= 60
    assert len({c.name for c in CASES}) == N, "case names must be unique"


def _prepare(case: Case, tmp_path: Path, tiny_dirs, broken) -> tuple[list[str], Ctx]:
    out = tmp_path / "out"
    out.mkdir()
    ctx = Ctx(tmp=tmp_path, bert=tiny_dirs["bert"], broken=broken,
              csv=tmp_path / "data" / "reviews.csv", out=out)  # fmt: skip
    ctx.csv.parent.mkdir()
    ctx.csv.write_text(GOOD_ROWS)
    args = case.build(ctx)
    if case.command in ("evaluate", "prepare"):
        if "--model" not in args:
            args = ["--model", str(ctx.bert), *args]
        if "--dataset" not in args:
            args = ["--dataset", str(ctx.csv), *args]
    if case.command == "evaluate" and "--json" not in args and "--predictions" not in args:
        defaults = [out / "results.json", out / "predictions.csv"]
        args += ["--json", str(defaults[0]), "--predictions", str(defaults[1])]
        ctx.absent += defaults
    for flag in ("--json", "--predictions", "--save-model"):
        if flag in args:
            path = Path(args[args.index(flag) + 1])
            if not os.path.lexists(path):
                ctx.absent.append(path)  # it did not exist before: it must not exist after
            ctx.watch.append(path.parent)
    ctx.watch += [out, ctx.csv.parent]
    argv = [case.command, *args] if case.command else args
    return argv, ctx


def _offline(monkeypatch) -> None:
    import llmopt.head
    import llmopt.hub
    import llmopt.models

    for module in (llmopt.models, llmopt.head, llmopt.hub):
        monkeypatch.setattr(module, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    try:  # _load_hf flips these module globals; restore them after the test
        import datasets

        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    except ImportError:  # pragma: no cover
        pass


@pytest.mark.matrix("CLI bad-input matrix")
@pytest.mark.parametrize(
    "case", CASES, ids=[f"{i + 1:03d}of{N}-{c.name}" for i, c in enumerate(CASES)]
)
def test_bad_input(case, tmp_path, tiny_dirs, broken, capsys, monkeypatch):
    argv, ctx = _prepare(case, tmp_path, tiny_dirs, broken)
    before_out = sorted(p.name for p in ctx.out.iterdir())
    try:
        if case.process:
            proc = run_module(argv, timeout=240)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            if case.offline:
                _offline(monkeypatch)
            import time

            start = time.monotonic()
            rc, out, err = run_cli(argv, capsys)
            if case.offline:
                assert time.monotonic() - start < 60, "offline failure took too long"
        assert_clean_failure(rc, out, err, case.pattern, absent=ctx.absent, watch=ctx.watch,
                             context=case.name)  # fmt: skip
        after_out = sorted(p.name for p in ctx.out.iterdir())
        assert after_out == before_out, f"the output folder changed: {before_out} -> {after_out}"
        for check in ctx.checks:
            check()
    finally:
        for folder in tmp_path.rglob("*"):  # let pytest clean up a read-only test folder
            if folder.is_dir() and not folder.is_symlink():
                folder.chmod(0o700)


# ------------------------------------------------------------------ inputs that must work

FORMULA_LABELS = ["=1+2", "+SUM(A1:A9)", "-cmd|' /C calc'!A0", "@evil", "-1"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def test_formula_labels_work_and_predictions_are_neutralised(tiny_dirs, tmp_path, capsys):
    texts, _ = make_texts(60)
    data = tmp_path / "formula.csv"
    pd.DataFrame(
        {"text": texts, "label": [FORMULA_LABELS[i % len(FORMULA_LABELS)] for i in range(60)]}
    ).to_csv(data, index=False)
    preds, out = tmp_path / "p.csv", tmp_path / "r.json"
    rc, stdout, err = run_cli(
        ["evaluate", "--model", f"encoder:{tiny_dirs['bert']}", "--dataset", str(data),
         "--sparsity", "0.5", "--predictions", str(preds), "--json", str(out)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert "Traceback" not in stdout + err
    assert sorted(json.loads(out.read_text())["label_names"]) == sorted(FORMULA_LABELS)
    with preds.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 12  # header + the test split (20% of 60)
    seen = {cell for row in rows[1:] for cell in row[1:4]}
    assert seen & {"'=1+2", "'+SUM(A1:A9)", "'@evil"}, seen  # the labels are there, quoted
    for row in rows:
        for cell in row:
            assert not (cell.startswith(FORMULA_START) and not NUMBER.match(cell)), (
                f"cell {cell!r} would run as a spreadsheet formula"
            )
    assert not leftovers(tmp_path)


def test_tsv_file_works(tiny_dirs, tmp_path, capsys):
    data = tmp_path / "reviews.tsv"
    data.write_text(GOOD_ROWS.replace(",", "\t"))
    rc, out, err = run_cli(
        ["evaluate", "--model", str(tiny_dirs["bert"]), "--dataset", str(data), "--limit", "5"],
        capsys,
    )
    assert rc == 0, err
    assert "5 rows" in out


def test_failed_save_leaves_the_folders_as_they_were(tiny_dirs, tmp_path, capsys):
    """A refused --save-model --overwrite must not touch the folder it would replace."""
    model = copy_model(tiny_dirs["bert"], tmp_path / "m")
    before = _tree(model)
    rc, out, err = run_cli(
        ["evaluate", "--model", str(model), "--dataset", str(_write(tmp_path / "d.csv")),
         "--sparsity", "0.5", "--save-model", str(model), "--overwrite"],
        capsys,
    )  # fmt: skip
    assert_clean_failure(rc, out, err, r"holds the model", watch=[tmp_path])
    assert _tree(model) == before
    shutil.rmtree(model)


def _write(path: Path) -> Path:
    path.write_text(GOOD_ROWS)
    return path
