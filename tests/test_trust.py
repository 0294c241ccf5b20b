"""Trust: multi-class everywhere, no remote code, confined paths, nothing half-written.

One test (or a small group) per defect that was found by probing the product as a user; each
fails on the code before its fix.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import sys

import numpy as np
import pytest
from sklearn import metrics as skm
from tinymodels import make_tiny, write_class_csv

import llmopt
from llmopt.cli import main
from llmopt.errors import LlmoptError

CLASS_COUNTS = (3, 7, 20)


@pytest.fixture(scope="module")
def class_csvs(tmp_path_factory):
    """{k: CSV path} with k classes, 12 rows per class."""
    root = tmp_path_factory.mktemp("classes")
    return {k: write_class_csv(root / f"k{k}.csv", 12 * k, k) for k in CLASS_COUNTS}


# ---------------------------------------------------------------- 1. multi-class heads


@pytest.mark.parametrize("k", CLASS_COUNTS)
def test_multiclass_encoder_head_trains_saves_and_reloads(k, class_csvs, tiny_bert_dir, tmp_path):
    from llmopt.compression import CompressionConfig, compress, save_model

    train = llmopt.load_dataset(str(class_csvs[k]), "train")
    test = llmopt.load_dataset(str(class_csvs[k]), "test")
    loaded = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    assert len(loaded.label_names) == k
    base = llmopt.evaluate(loaded, test)
    assert base.confusion.shape == (k, k) and base.y_score.shape == (len(test), k)
    assert base.metrics["accuracy"] > 1.5 / k  # the head learnt the keywords
    small, report = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    assert report.rows and llmopt.evaluate(small, test).confusion.shape == (k, k)
    save_model(small, tmp_path / "saved")
    back = llmopt.load_model(str(tmp_path / "saved"))
    np.testing.assert_allclose(
        llmopt.evaluate(back, test).y_score, llmopt.evaluate(small, test).y_score, atol=1e-6
    )


@pytest.mark.parametrize("k", CLASS_COUNTS)
def test_cli_evaluates_multiclass_csv_with_an_encoder_head(
    k, class_csvs, tiny_bert_dir, tmp_path, capsys
):
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--model", f"encoder:{tiny_bert_dir}", "--dataset",
               str(class_csvs[k]), "--sparsity", "0.5", "--json", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert len(data["label_names"]) == k
    assert np.asarray(data["compressed"]["confusion_matrix"]).shape == (k, k)
    assert data["baseline"]["metrics"]["roc_auc"] is not None


# ---------------------------------------------------------------- 2. remote code


def _custom_code_checkpoint(src, dst, sentinel):
    """A copy of a tiny checkpoint whose config asks for code shipped with it."""
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel"}
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    return dst


def test_checkpoint_needing_custom_code_is_refused_without_a_prompt(tiny_bert_dir, tmp_path):
    import subprocess

    sentinel = tmp_path / "ran.txt"
    bad = _custom_code_checkpoint(tiny_bert_dir, tmp_path / "custom", sentinel)
    for source in (str(bad), f"encoder:{bad}"):
        proc = subprocess.run(
            [sys.executable, "-m", "llmopt", "prepare", "--model", source],
            input="y\ny\n",  # were it asked, this would answer yes
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert proc.returncode == 2, proc.stderr
        assert "custom Python code" in proc.stderr and "never runs code" in proc.stderr
        assert "[y/N]" not in proc.stdout + proc.stderr
        assert not sentinel.exists()


def _pickle_checkpoint(src, dst, payload=None):
    """A copy of a tiny checkpoint whose weights are only a pickle (pytorch_model.bin)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    if payload is None:
        torch.save(weights, dst / "pytorch_model.bin")
    else:
        with open(dst / "pytorch_model.bin", "wb") as f:
            pickle.dump(payload, f)
    return dst


class _Exploit:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_tensor_only_pickle_checkpoint_loads(tiny_bert_dir, tmp_path, tiny_dataset):
    plain = _pickle_checkpoint(tiny_bert_dir, tmp_path / "plain")
    a = llmopt.evaluate(llmopt.load_model(str(plain)), tiny_dataset).y_score
    b = llmopt.evaluate(llmopt.load_model(str(tiny_bert_dir)), tiny_dataset).y_score
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_malicious_pickle_checkpoint_is_refused_with_a_complete_message(tiny_bert_dir, tmp_path):
    sentinel = tmp_path / "pwned"
    bad = _pickle_checkpoint(tiny_bert_dir, tmp_path / "bad", payload=_Exploit(sentinel))
    with pytest.raises(LlmoptError) as info:
        llmopt.load_model(str(bad))
    message = str(info.value)
    assert "pickle" in message and "refused" in message and "safetensors" in message
    assert "hub id" not in message and "\n" not in message and not message.endswith("…")
    assert not sentinel.exists()


# ---------------------------------------------------------------- 3. confined server paths


@pytest.fixture()
def confine(tmp_path, monkeypatch):
    from llmopt.paths import Confinement

    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("LLMOPT_ROOTS", str(root))
    monkeypatch.setenv("LLMOPT_MAX_FILE_MB", "0.01")
    return Confinement.from_env()


def test_confined_paths_refuse_files_outside_the_roots(confine, tiny_csv, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password,label\nhunter2-is-secret,x\nother,y\n")
    link = confine.roots[0] / "link.csv"
    link.symlink_to(secret)
    for path in (secret, link, "/etc/passwd"):
        with pytest.raises(LlmoptError, match="outside the folders") as info:
            llmopt.load_dataset(str(path), confine=confine)
        assert "hunter2" not in str(info.value) and "root:" not in str(info.value)


def test_confined_paths_refuse_fifos_devices_folders_and_big_files(confine):
    root = confine.roots[0]
    os.mkfifo(root / "pipe.csv")
    (root / "folder.csv").mkdir()
    (root / "big.csv").write_text("text,label\n" + "a long text,x\n" * 2000)
    cases = {"pipe.csv": "FIFO", "folder.csv": "folder", "big.csv": "above this server's limit"}
    for name, match in cases.items():
        with pytest.raises(LlmoptError, match=match):
            llmopt.load_dataset(str(root / name), confine=confine)
    with pytest.raises(LlmoptError, match="outside"):
        llmopt.load_dataset("/dev/zero", confine=confine)
    with pytest.raises(LlmoptError, match="device"):  # the command line: not confined, yet safe
        llmopt.load_csv("/dev/zero")


def test_confined_model_folders(confine, tiny_bert_dir):
    for source in (str(tiny_bert_dir), f"encoder:{tiny_bert_dir}"):
        with pytest.raises(LlmoptError, match="outside the folders"):
            llmopt.load_model(source, confine=confine)
    with pytest.raises(LlmoptError, match="outside the folders"):
        llmopt.load_dataset(f"hf:{tiny_bert_dir}", confine=confine)


# ---------------------------------------------------------------- 4. crash-safe cache


@pytest.mark.parametrize("damage", ["empty meta", "garbage meta", "truncated head", "no head"])
def test_unreadable_cached_head_is_rebuilt_with_a_note(
    damage, tiny_bert_dir, tmp_path, monkeypatch
):
    from tinymodels import make_texts

    monkeypatch.setenv("LLMOPT_HOME", str(tmp_path / "home"))  # this test's own cache only

    texts, labels = make_texts(30, seed=11)
    train = llmopt.TextDataset(texts, np.array(labels), ["a", "b"], name="t", split="train")
    first = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    folder = next(
        p
        for p in (llmopt.paths.llmopt_home() / "heads").iterdir()
        if json.loads((p / "meta.json").read_text())["dataset_fingerprint"] == train.fingerprint
    )
    meta, head = folder / "meta.json", folder / "head.safetensors"
    if damage == "empty meta":
        meta.write_text("")
    elif damage == "garbage meta":
        meta.write_text("{not json")
    elif damage == "truncated head":
        head.write_bytes(head.read_bytes()[:40])
    else:
        head.unlink()
    again = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    assert any("trained again" in n for n in again.notes)
    w1, w2 = first.model.classifier.weight, again.model.classifier.weight
    np.testing.assert_allclose(w1.detach().numpy(), w2.detach().numpy(), atol=1e-5)
    third = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    assert not any("trained again" in n for n in third.notes)  # the rebuilt entry is whole


# ---------------------------------------------------------------- 5. saving a model


def test_save_refuses_the_source_folder_and_non_empty_folders(tiny_bert_dir, tmp_path):
    import shutil

    from llmopt.compression import CompressionConfig, compress, save_model

    src = tmp_path / "src"
    shutil.copytree(tiny_bert_dir, src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    small, _ = compress(llmopt.load_model(str(src)), CompressionConfig(sparsity=0.5))
    for overwrite in (False, True):
        with pytest.raises(LlmoptError, match="destroy"):
            save_model(small, src, overwrite=overwrite)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(LlmoptError, match="not empty"):
        save_model(small, busy)
    assert (busy / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_an_earlier_save_entirely(tiny_bert_dir, tmp_path, tiny_dataset):
    from tinymodels import make_texts

    from llmopt.compression import CompressionConfig, compress, save_model

    texts, labels = make_texts(30, seed=3)
    train = llmopt.TextDataset(texts, np.array(labels), ["LABEL_0", "LABEL_1"], name="t")
    pooled = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    plain, _ = compress(llmopt.load_model(str(tiny_bert_dir)), CompressionConfig(sparsity=0.5))
    target = tmp_path / "out"
    save_model(pooled, target)
    save_model(plain, target, overwrite=True)  # an HF checkpoint replaces the pooled save
    assert not (target / "llmopt_pooled.json").exists()
    back = llmopt.load_model(str(target))
    np.testing.assert_allclose(
        llmopt.evaluate(back, tiny_dataset).y_score,
        llmopt.evaluate(plain, tiny_dataset).y_score,
        atol=1e-6,
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmopt-tmp-")]


@pytest.mark.parametrize("damage", ["partial marker", "no marker", "size changed"])
def test_incomplete_save_is_refused(damage, tiny_bert_dir, tmp_path):
    from tinymodels import make_texts

    from llmopt.compression import save_model

    texts, labels = make_texts(30, seed=4)
    train = llmopt.TextDataset(texts, np.array(labels), ["LABEL_0", "LABEL_1"], name="t")
    target = save_model(
        llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train), tmp_path / "s"
    )
    if damage == "partial marker":
        (target / ".llmopt-partial").write_text("")
    elif damage == "no marker":
        (target / "llmopt_save.json").unlink()
    else:
        with open(target / "head.safetensors", "ab") as f:
            f.write(b"\0")
    with pytest.raises(LlmoptError, match="incomplete save"):
        llmopt.load_model(str(target))


# ---------------------------------------------------------------- 6. and 7. predictions CSV


def test_predictions_index_is_the_csv_data_row_and_dropped_rows_are_reported(
    tiny_bert_dir, tmp_path, capsys
):
    from tinymodels import make_texts

    texts, labels = make_texts(40, seed=5)
    rows = [[t, "pos" if y == 0 else "neg"] for t, y in zip(texts, labels, strict=True)]
    blanks = [0, 3, 4, 17, 30]
    for r in blanks:
        rows.insert(r, ["   ", "pos"] if r % 2 else ["some text", ""])
    path = tmp_path / "gaps.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *rows])
    out, preds = tmp_path / "r.json", tmp_path / "p.csv"
    rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(path),
               "--json", str(out), "--predictions", str(preds)])  # fmt: skip
    assert rc == 0
    assert "5 row(s)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["dropped_rows"] == {"count": 5, "rows": blanks}
    for row in csv.DictReader(preds.open()):  # the tiny model names labels by position
        source = rows[int(row["index"])]
        assert f"LABEL_{['neg', 'pos'].index(source[1])}" == row["label"] and source[0].strip()


def test_predictions_csv_neutralises_formulas_and_keeps_full_precision(tiny_bert_dir, tmp_path):
    from tinymodels import make_texts

    texts, labels = make_texts(60, seed=6)
    evil = ["=cmd|' /C calc'!A0", "@SUM(1+1)"]
    path = tmp_path / "evil.csv"
    body = [[t, evil[y]] for t, y in zip(texts, labels, strict=True)]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *body])
    out, preds = tmp_path / "r.json", tmp_path / "p.csv"
    assert main(["evaluate", "--model", f"encoder:{tiny_bert_dir}", "--dataset", str(path),
                 "--json", str(out), "--predictions", str(preds)]) == 0  # fmt: skip
    with preds.open(newline="") as f:
        table = list(csv.reader(f))
    for cell in [c for row in table for c in row]:
        assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
        assert not (cell.startswith("-") and not cell.lstrip("-").replace(".", "").isdigit())
    assert {row[1] for row in table[1:]} == {"'" + e for e in evil}
    data = json.loads(out.read_text())
    assert data["label_names"] == evil  # sorted: "=" before "@"; class 1 is "@SUM(1+1)"
    header, body = table[0], table[1:]
    y_true = np.array([row[1] == "'" + evil[1] for row in body], dtype=int)
    scores = np.array([float(row[header.index(f"prob_baseline_{evil[1]}")]) for row in body])
    assert skm.roc_auc_score(y_true, scores) == data["baseline"]["metrics"]["roc_auc"]


# ---------------------------------------------------------------- 9. API arguments


def test_public_api_rejects_bad_arguments_with_clear_errors(tiny_bert_dir, tiny_dataset):
    loaded = llmopt.load_model(str(tiny_bert_dir))
    bad_calls = [
        lambda: llmopt.evaluate(loaded, tiny_dataset, batch_size=-1),
        lambda: llmopt.evaluate(loaded, tiny_dataset, batch_size=0),
        lambda: llmopt.evaluate(loaded, tiny_dataset, batch_size=2.5),
        lambda: llmopt.evaluate(loaded, tiny_dataset, progress="yes"),
        lambda: llmopt.evaluate("bundled", tiny_dataset),
        lambda: llmopt.evaluate(loaded, ["a text"]),
        lambda: llmopt.load_model(42),
        lambda: llmopt.load_model(str(tiny_bert_dir), train_limit=-1),
        lambda: llmopt.load_dataset(None),
        lambda: llmopt.load_dataset("bundled", text_column=None),
        lambda: llmopt.load_csv(12345),
        lambda: llmopt.compress(loaded, {"sparsity": 0.5}),
        lambda: llmopt.compress("model", llmopt.CompressionConfig(sparsity=0.5)),
        lambda: llmopt.compare("a", "b"),
        lambda: tiny_dataset.subset(0),
        lambda: tiny_dataset.subset(5, seed=-1),
    ]
    for call in bad_calls:
        with pytest.raises(LlmoptError):
            call()


# ---------------------------------------------------------------- 10. outputs checked first


def test_unwritable_outputs_fail_before_any_work(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch,
                                                 capsys):  # fmt: skip
    def must_not_run(*_a, **_k):
        raise AssertionError("evaluated before checking the outputs")

    monkeypatch.setattr(sys.modules["llmopt.evaluation"], "evaluate", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        ["--json", str(blocker / "r.json")],
        ["--predictions", str(tmp_path / "missing" / "p.csv")],
        ["--json", str(tmp_path)],
        ["--predictions", str(tiny_csv)],
        ["--json", str(tmp_path / "same"), "--predictions", str(tmp_path / "same")],
        ["--sparsity", "0.5", "--save-model", str(tiny_bert_dir)],
        ["--sparsity", "0.5", "--save-model", str(blocker)],
    ]
    for extra in cases:
        rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and err.startswith("llmopt: error:"), (extra, err)


# ---------------------------------------------------------------- 11. and 12. words


def test_columns_are_guessed_by_content():
    import pandas as pd

    from llmopt.data import guess_columns

    frame = pd.DataFrame(
        {
            "code": [f"X{i % 33}" for i in range(99)],
            "review": [f"this product was really quite something number {i}" for i in range(99)],
            "stars": [str(1 + i % 5) for i in range(99)],
        }
    )
    assert guess_columns(frame) == ("review", "stars")


def test_display_text_strips_tags_and_entities():
    from llmopt.data import display_text

    raw = 'Great!<br /><br />Would buy <span class="a">again</span> &amp; again'
    assert display_text(raw) == "Great! Would buy again & again"
    assert display_text("x" * 50, max_chars=10) == "x" * 9 + "…"


def test_errors_speak_the_dashboards_words_in_the_dashboard(tiny_bert_dir):
    texts = ["good", "bad", "meh", "fine"]
    data = llmopt.TextDataset(texts, np.array([0, 1, 2, 0]), ["great", "awful", "odd"], name="x")
    named = llmopt.load_model(str(tiny_bert_dir))
    named.label_names = ["positive", "negative"]
    with pytest.raises(LlmoptError) as info:
        llmopt.evaluate(named, data)
    assert "--model encoder:" in str(info.value)
    app = info.value.render("app")
    assert "--" not in app and "Encoder + trained head" in app


def test_fifo_is_reported_as_a_fifo_and_seed_names_its_flag(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.csv")
    assert main(["evaluate", "--dataset", str(tmp_path / "pipe.csv")]) == 2
    err = capsys.readouterr().err
    assert "FIFO" in err and "not found" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_make_tiny_is_used_for_multiclass_checkpoints(tmp_path, tiny_dataset):
    """A checkpoint with 5 named labels evaluates 5-class data by name (no head training)."""
    names = {i: f"class {i}" for i in range(5)}
    folder = make_tiny("distilbert", tmp_path / "five", num_labels=5, id2label=names)
    texts = ["good", "bad", "tea", "salt", "rice"] * 4
    data = llmopt.TextDataset(texts, np.arange(20) % 5, list(names.values()), name="five")
    result = llmopt.evaluate(llmopt.load_model(str(folder)), data)
    assert result.confusion.shape == (5, 5) and len(result.roc) == 5


# ---------------------------------------------------------------- issue 18: hostile run


def _copy_into(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_files_inside_a_confined_model_folder_are_confined(confine, tiny_bert_dir, tmp_path):
    """Before: only the folder was checked, so a ``vocab.txt`` linking to /etc/passwd loaded
    with its lines as the vocabulary, and a FIFO named ``vocab.txt`` would block the loader."""
    model = _copy_into(tiny_bert_dir, confine.roots[0] / "model")
    vocab = model / "vocab.txt"
    if not vocab.exists():
        pytest.skip("the tiny model has no vocab.txt")
    secret = tmp_path / "outside.txt"
    secret.write_text(vocab.read_text())
    vocab.unlink()
    vocab.symlink_to(secret)  # the same words, so only the confinement can refuse it
    for source in (str(model), f"encoder:{model}"):
        with pytest.raises(LlmoptError, match="'vocab.txt' points outside") as info:
            llmopt.load_model(source, confine=confine)
        assert "outside.txt" not in str(info.value)  # names the file, not where it points
        assert str(confine.roots[0]) not in info.value.render("app")  # nor the server's roots
    vocab.unlink()
    os.mkfifo(vocab)
    with pytest.raises(LlmoptError, match="'vocab.txt' is a named pipe"):
        llmopt.load_model(str(model), confine=confine)


def test_a_link_inside_the_roots_still_loads(confine, tiny_bert_dir):
    """Links are fine while they stay under the roots (resolved, regular files)."""
    model = _copy_into(tiny_bert_dir, confine.roots[0] / "model")
    config = model / "config.json"
    (confine.roots[0] / "config.json").write_bytes(config.read_bytes())
    config.unlink()
    config.symlink_to(confine.roots[0] / "config.json")
    assert llmopt.load_model(str(model), confine=confine).model is not None


def test_runs_list_and_show_print_control_characters_escaped(
    tiny_bert_dir, tiny_dataset, tmp_path, monkeypatch, capsys
):
    """Before: a run name with ESC sequences (typed on the Compare page) reached the terminal
    raw, so it could recolour, retitle or rewrite the screen of whoever listed the runs."""
    from llmopt.experiments import ExperimentStore

    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(tmp_path / "exp.sqlite"))
    store = ExperimentStore()
    _record_one(store, tiny_bert_dir, tiny_dataset)
    run_id = store.runs()[-1].id
    evil = "ok\x1b]0;owned\x07\x1b[2J\rname\x9b"
    store.rename(run_id, evil)
    for argv in (["runs", "list"], ["runs", "show", str(run_id)]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\x9b" not in out
        assert "ok\\x1b]0;owned\\x07\\x1b[2J\\rname\\x9b" in out


def _record_one(store, model_dir, data) -> None:
    """One small run in ``store`` (the tiny model on the tiny rows)."""
    from llmopt.recording import record_evaluation

    model = llmopt.load_model(str(model_dir))
    base = llmopt.evaluate(model, data)
    record_evaluation(store, base_model=model, dataset=data, base=base, origin="cli",
                      model_source=str(model_dir), dataset_source="tiny")  # fmt: skip


def test_every_output_is_written_with_one_file_mode(tmp_path, monkeypatch):
    """Before: JSON outputs were 0600 (``mkstemp``) and predictions CSVs 0644; now every file
    gets the mode a new file of the user's gets (0666 less the umask)."""
    from llmopt import atomic

    old = os.umask(0o022)
    try:
        monkeypatch.setattr(atomic, "FILE_MODE", 0o666 & ~0o022)
        a = atomic.write_text(tmp_path / "a.json", "{}")
        with atomic.staged_file(tmp_path / "b.csv") as tmp:
            tmp.write_text("x\n")
        with atomic.staged_dir(tmp_path / "saved") as folder:
            (folder / "weights.bin").write_bytes(b"w")
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in
             (a, tmp_path / "b.csv", tmp_path / "saved" / "weights.bin")}  # fmt: skip
    assert set(modes.values()) == {"0o644"}, modes


def test_save_model_onto_a_full_disk_is_one_line(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Before: safetensors' own error (``SafetensorError``) ended the command as an internal
    error, exit 1. Simulated: the writer raises what safetensors raises on ENOSPC."""
    import transformers

    class SafetensorError(Exception):  # the shape of safetensors' error on a full disk
        pass

    def full(self, *a, **k):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(10)))
    out = tmp_path / "saved"
    rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(data),
               "--sparsity", "0.5", "--save-model", str(out), "--no-record"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("llmopt:")]
    assert len(lines) == 1 and "disk is full" in lines[0], err
    assert "internal error" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmopt-tmp-")]


def test_save_model_onto_a_full_disk_as_oserror(tmp_path):
    """The same through ``staged_dir`` with a plain ``OSError(ENOSPC)``: one clear message."""
    import errno

    from llmopt import atomic

    with pytest.raises(LlmoptError, match="disk is full"), atomic.staged_dir(tmp_path / "m"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_calibration_samples_has_an_upper_bound():
    """Before: 1e30 calibration samples were accepted, then calibration ran for minutes."""
    from llmopt.compression import CompressionConfig
    from llmopt.compression.config import MAX_CALIBRATION_SAMPLES

    CompressionConfig(sparsity=0.5, calibration_samples=MAX_CALIBRATION_SAMPLES)
    for n in (MAX_CALIBRATION_SAMPLES + 1, 10**30):
        with pytest.raises(LlmoptError, match="calibration_samples"):
            CompressionConfig(sparsity=0.5, calibration_samples=n)


def test_train_page_save_refusal_does_not_name_the_servers_folders(confine, tmp_path):
    """Before: 'this server saves only under /srv/...' told every visitor the server's
    folder names (the other confinement errors deliberately do not)."""
    from dashboard import training

    with pytest.raises(LlmoptError) as info:
        training.save(None, str(tmp_path / "elsewhere"), False)
    shown = info.value.render("app")
    assert "outside the folders this server may write" in shown
    assert str(confine.roots[0]) not in shown


def test_plain_shows_markdown_as_text():
    """The one escaping helper: no link, image, autolink, HTML or formula survives."""
    from markdown_it import MarkdownIt

    from dashboard.text import plain

    md = MarkdownIt("commonmark")
    for text in ("[Click here](https://evil.example/login)", "![r](http://127.0.0.1:1/x)",
                 "<https://evil.example>", "<img src=x>", "$x$", "`code`", "**bold**",
                 "[a]: https://evil.example\n\n[a]"):  # fmt: skip
        html = md.render(plain(text))
        assert "<a " not in html and "<img" not in html and "<code>" not in html, html
        assert "<strong>" not in html, html
    assert plain("no_such_dataset") == "no_such_dataset"  # readable names stay as they are
    assert plain(None) == ""


def test_store_on_a_read_only_mount_can_be_listed(tiny_bert_dir, tiny_dataset, tmp_path,
                                                  monkeypatch):  # fmt: skip
    """Before: the lock file (created beside the store on every open) failed on a read-only
    mount, so not even ``runs list`` worked. Simulated: creating the lock file raises EROFS
    (tests run as root, which ignores permission bits)."""
    import errno

    import llmopt.experiments as experiments

    path = tmp_path / "exp.sqlite"
    _record_one(experiments.ExperimentStore(path), tiny_bert_dir, tiny_dataset)

    def read_only_mount(_path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(experiments, "file_lock", read_only_mount)
    store = experiments.ExperimentStore(path)
    assert store.read_only and "read-only" in store.notice
    assert len(store.runs()) == 1  # listed
    with pytest.raises(LlmoptError, match="read-only") as info:
        store.rename(store.runs()[0].id, "x")
    assert "aside" not in str(info.value)
    assert path.is_file()  # never renamed aside


def test_store_on_a_full_disk_says_so(tmp_path):
    """Before: SQLite's 'database or disk is full' was reported as a store that 'cannot be
    read', with the advice to move it aside although it was healthy."""
    import sqlite3

    from llmopt.experiments import ExperimentStore

    store = ExperimentStore(tmp_path / "exp.sqlite")
    for message in ("database or disk is full", "attempt to write a readonly database"):
        with pytest.raises(LlmoptError) as info, store._connect():
            raise sqlite3.OperationalError(message)
        text = info.value.render("cli")
        assert "aside" not in text and "cannot be read" not in text, text
        assert ("disk is full" in text) or ("read-only" in text), text
    assert (tmp_path / "exp.sqlite").is_file()
