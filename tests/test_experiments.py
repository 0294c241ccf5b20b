"""The experiment store: every field round trip, migration, concurrent writers, damaged files,
lineage, recipes re-run exactly, and the ``llmopt runs`` contract."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import llmopt
from llmopt import stats
from llmopt.cli import main
from llmopt.compression import CompressionConfig, compress
from llmopt.experiments import MIGRATIONS, SCHEMA_VERSION, ExperimentStore, Run, _plain
from llmopt.recording import (
    describe_config,
    is_ancestor,
    model_fingerprint,
    record_evaluation,
    run_result,
)

ROOT = Path(__file__).resolve().parents[1]
LIST_KEYS = {"id", "created", "name", "tags", "parent", "model", "dataset", "rows_fingerprint"}
LIST_KEYS |= {"n", "config", "metrics", "intervals"}


@pytest.fixture()
def runs_db(tmp_path):
    return ExperimentStore(tmp_path / "experiments.sqlite")


def three_class(tmp_path):
    """A tiny 3-class BERT and 3-class rows whose label names it knows by position."""
    from tinymodels import make_class_texts, make_tiny

    directory = make_tiny("bert", tmp_path / "bert3", num_labels=3)
    texts, labels = make_class_texts(30, 3)
    names = sorted(set(labels))
    data = llmopt.TextDataset(
        texts,
        np.array([names.index(x) for x in labels]),
        ["0", "1", "2"],
        name="three",
        split="test",
    )
    return directory, data


@pytest.mark.parametrize("classes", [2, 3])
def test_every_field_survives_the_round_trip(
    classes, runs_db, tiny_bert_dir, tiny_dataset, tmp_path
):
    model_dir, data = (tiny_bert_dir, tiny_dataset) if classes == 2 else three_class(tmp_path)
    loaded = llmopt.load_model(str(model_dir))
    config = CompressionConfig(sparsity=0.5, bits=4)
    variant, report = compress(loaded, config)
    base, other = llmopt.evaluate(loaded, data), llmopt.evaluate(variant, data)
    done = record_evaluation(
        runs_db,
        base_model=loaded,
        dataset=data,
        base=base,
        other=other,
        variant=variant,
        config=config,
        report=report,
        origin="test",
        rows={"limit": 40},
    )
    run = runs_db.get(done.run_id)
    base_run = runs_db.get(done.base_id)
    assert (base_run.kind, run.kind, run.parent) == ("base", "variant", done.base_id)
    assert run.model_fingerprint == base_run.model_fingerprint == model_fingerprint(loaded)
    assert run.rows_fingerprint == data.fingerprint and run.n == len(data)
    assert run.config == config.to_dict() and run.method == config.describe()
    assert run.steps == ["prune", "quantize"] and run.origin == "test"
    assert run.rows == {"split": "test", "limit": 40, "seed": None}
    assert run.metrics["baseline"] == pytest.approx(base.metrics, nan_ok=True)
    assert run.metrics["compressed"] == pytest.approx(other.metrics, nan_ok=True)
    assert base_run.metrics["compressed"] is None
    expected = stats.bootstrap_intervals(other.y_true, other.y_score)
    assert run.intervals == _plain(expected)  # JSON keeps every digit; NaN is null
    deltas = stats.paired_delta_intervals(base.y_true, base.y_score, other.y_score)
    assert run.delta_intervals == _plain(deltas)
    test = stats.mcnemar_exact(base.y_pred == base.y_true, other.y_pred == other.y_true)
    assert run.mcnemar == test.to_dict()
    assert run.confusion_matrix == other.confusion.tolist()
    assert (run.size_bytes, run.params_nonzero) == (other.size_bytes, other.params_nonzero)
    fidelity = llmopt.compare(base, other)
    assert run.fidelity == fidelity and run.agreement == fidelity["agreement"]
    assert run.report == json.loads(json.dumps(report.to_dict()))
    assert run.latency_simulated and run.latency["method"] == "simulated"
    assert set(run.versions) >= {"llmopt", "torch", "transformers", "numpy", "scikit-learn"}
    y_true, y_score = runs_db.predictions(run.id)
    np.testing.assert_array_equal(y_true, other.y_true)
    np.testing.assert_array_equal(y_score, other.y_score)  # every bit: float64
    redrawn = run_result(runs_db, run)
    np.testing.assert_array_equal(redrawn.y_pred, other.y_pred)
    assert redrawn.roc.keys() == other.roc.keys()
    masks = runs_db.masks(run.id)
    assert list(masks) == list(variant.compression["masks"])
    for name, kept in variant.compression["masks"].items():
        bits = np.unpackbits(masks[name]["bits"])[: kept.numel()].astype(bool)
        np.testing.assert_array_equal(bits.reshape(kept.shape), kept.numpy())
        assert masks[name]["zeros"] == int((~kept).sum())
    rows = runs_db.row_set(run.rows_fingerprint)
    assert rows.texts == data.texts and rows.label_names == data.label_names
    np.testing.assert_array_equal(rows.labels, data.labels)
    np.testing.assert_array_equal(rows.indices, data.indices)
    assert Run.from_json(run.to_json(full=True)) == run
    again = record_evaluation(runs_db, base_model=loaded, dataset=data, base=base)
    assert again.base_id == done.base_id  # one base run per model and rows


def test_a_store_of_the_first_layout_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    summary = {"metrics": {"baseline": {"accuracy": 0.75}, "compressed": None}, "method": "x"}
    conn.execute(
        "INSERT INTO runs (created, parent, kind, origin, model, model_fingerprint, dataset, "
        "rows_fingerprint, n, config, summary, details) VALUES "
        "('2025-01-01T00:00:00Z', NULL, 'base', 'cli', 'bundled', 'm', 'bundled', 'r', 4, NULL, "
        "?, '{}')",
        (json.dumps(summary),),
    )
    conn.execute(
        "INSERT INTO predictions VALUES (1, 2, ?, ?)",
        (np.zeros(4, "<i4").tobytes(), np.full((4, 2), 0.5).tobytes()),
    )
    conn.execute(f"PRAGMA application_id = {0x6C6C6D6F}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = ExperimentStore(path)
    assert store.notice is None
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    (old,) = store.runs()
    assert (old.id, old.name, old.tags, old.own_metrics) == (1, "", [], {"accuracy": 0.75})
    assert store.predictions(1)[1].shape == (4, 2) and store.masks(1) == {}
    store.rename(1, "from v1")
    store.set_tags(1, ["old", " old ", ""])
    assert (store.get(1).name, store.get(1).tags) == ("from v1", ["old"])


WRITER = textwrap.dedent(
    """
    import sys, time, types
    from pathlib import Path
    import numpy as np
    # The store needs only the standard library and numpy: skip the package's torch imports.
    package = types.ModuleType("llmopt")
    package.__path__ = [sys.argv[4]]
    sys.modules["llmopt"] = package
    from llmopt.experiments import ExperimentStore, Run
    path, who, other = sys.argv[1], sys.argv[2], sys.argv[3]
    store = ExperimentStore(path)
    Path(path + "." + who).touch()  # ready; start when the other one is ready too
    while not Path(path + "." + other).exists():
        time.sleep(0.002)
    for i in range(200):
        run = Run(model=who, model_fingerprint=who, dataset="d", rows_fingerprint="r", n=3,
                  label_names=["a", "b"], metrics={"baseline": {"accuracy": i / 200}},
                  name=f"{who}-{i}")
        store.add(run, y_true=np.array([0, 1, 1]), y_score=np.full((3, 2), 0.5))
    """
)


def test_two_processes_writing_200_runs_each_end_with_400(tmp_path):
    path = tmp_path / "shared.sqlite"
    env = {"PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), who, other, str(ROOT / "llmopt")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who, other in (("first", "second"), ("second", "first"))
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    runs = ExperimentStore(path).runs()
    assert len(runs) == 400 and len({r.id for r in runs}) == 400
    for who in ("first", "second"):
        names = [r.name for r in runs if r.model == who]
        assert names == [f"{who}-{i}" for i in range(200)]  # each writer's runs, in its order


def _sqlite_of_another_program(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another program's database"])
def test_a_damaged_or_foreign_file_is_moved_aside_never_overwritten(damage, tmp_path):
    path = tmp_path / "experiments.sqlite"
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot a database" * 100)
    elif damage == "truncated":
        good = ExperimentStore(path)
        good.add(
            Run(
                model="m",
                model_fingerprint="m",
                dataset="d",
                rows_fingerprint="r",
                n=1,
                label_names=["a"],
                metrics={},
            )
        )
        path.write_bytes(path.read_bytes()[:5000])
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    else:
        _sqlite_of_another_program(path)
    original = path.read_bytes()
    store = ExperimentStore(path)
    assert store.notice and str(path) in store.notice and "moved to" in store.notice
    aside = [
        p
        for p in tmp_path.iterdir()
        if ".damaged-" in p.name and not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == 1 and aside[0].name in store.notice
    assert aside[0].read_bytes() == original  # kept as it was
    assert store.count() == 0
    store.add(
        Run(
            model="m",
            model_fingerprint="m",
            dataset="d",
            rows_fingerprint="r",
            n=1,
            label_names=["a"],
            metrics={},
        )
    )
    assert ExperimentStore(path).count() == 1 and ExperimentStore(path).notice is None
    path.write_bytes(b"garbage again")  # a second move never overwrites the first
    ExperimentStore(path)
    assert len([p for p in tmp_path.iterdir() if ".damaged-" in p.name]) >= 2
    assert aside[0].read_bytes() == original


def test_a_store_of_a_newer_llmopt_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "experiments.sqlite"
    ExperimentStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(llmopt.LlmoptError, match="newer llmopt"):
        ExperimentStore(path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.damaged-*"))


def test_a_variant_s_parent_is_the_stored_run_it_extends(runs_db, tiny_bert_dir, tiny_dataset):
    loaded = llmopt.load_model(str(tiny_bert_dir))
    base = llmopt.evaluate(loaded, tiny_dataset)
    ids = {}
    for name, config in [
        ("rank", CompressionConfig(rank=8)),
        ("rank+prune", CompressionConfig(rank=8, sparsity=0.5)),
        ("prune", CompressionConfig(sparsity=0.5)),
        ("rank+prune+bits", CompressionConfig(rank=8, sparsity=0.5, bits=4)),
        ("rank+wanda", CompressionConfig(rank=8, sparsity=0.5, sparsity_method="wanda")),
    ]:
        variant, report = compress(loaded, config, calibration=tiny_dataset)
        other = llmopt.evaluate(variant, tiny_dataset)
        ids[name] = record_evaluation(
            runs_db,
            base_model=loaded,
            dataset=tiny_dataset,
            base=base,
            other=other,
            variant=variant,
            config=config,
            report=report,
        )
    base_id = ids["rank"].base_id
    parents = {k: runs_db.get(v.run_id).parent for k, v in ids.items()}
    assert parents == {
        "rank": base_id,
        "rank+prune": ids["rank"].run_id,
        "prune": base_id,  # not a continuation of rank 8: it skips the low-rank step
        "rank+prune+bits": ids["rank+prune"].run_id,
        "rank+wanda": ids["rank"].run_id,  # another pruning method after the same rank
    }
    runs_db.delete(ids["rank+prune"].run_id)  # its child moves up to its parent
    assert runs_db.get(ids["rank+prune+bits"].run_id).parent == ids["rank"].run_id


def test_ancestry_follows_the_order_of_the_steps():
    rank = CompressionConfig(rank=8).to_dict()
    rank_prune = CompressionConfig(rank=8, sparsity=0.5).to_dict()
    prune_bits = CompressionConfig(sparsity=0.5, bits=4).to_dict()
    assert is_ancestor(rank, rank_prune) and not is_ancestor(rank_prune, rank)
    assert not is_ancestor(rank, rank) and not is_ancestor(None, rank)
    assert not is_ancestor(CompressionConfig(bits=4).to_dict(), prune_bits)  # not a prefix
    assert is_ancestor(CompressionConfig(sparsity=0.5).to_dict(), prune_bits)
    head = CompressionConfig(sparsity=0.5, bits=4, include_head=True).to_dict()
    assert not is_ancestor(CompressionConfig(sparsity=0.5).to_dict(), head)
    assert describe_config({"sparsity": 0.5, "future_knob": 3}) == "future_knob=3, sparsity=0.5"


def _evaluate(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["evaluate", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_run_re_run_from_its_recipe_reproduces_its_metrics_exactly(
    tiny_bert_dir, tiny_csv, tmp_path, capsys
):
    source = ["--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    rc, out, _ = _evaluate(
        [*source, "--sparsity", "0.6", "--bits", "4", "--json", str(first)], capsys
    )
    assert rc == 0 and "recorded as run" in out
    a = json.loads(first.read_text())
    recipe = tmp_path / "recipe.json"
    assert main(["runs", "export", str(a["run_id"]), "-o", str(recipe)]) == 0
    rc, _, err = _evaluate(["--recipe", str(recipe), "--json", str(second)], capsys)
    assert rc == 0, err
    b = json.loads(second.read_text())
    assert b["run_id"] != a["run_id"]
    for key in ("model", "dataset", "n", "config", "label_names"):
        assert b[key] == a[key], key
    for side in ("baseline", "compressed"):
        assert b[side]["metrics"] == a[side]["metrics"]  # exactly
        assert b[side]["confusion_matrix"] == a[side]["confusion_matrix"]
    runs = {r["id"]: r for r in json.loads(_runs_json(["list"], capsys))}
    assert runs[b["run_id"]]["rows_fingerprint"] == runs[a["run_id"]]["rows_fingerprint"]
    assert runs[b["run_id"]]["intervals"] == runs[a["run_id"]]["intervals"]

    config_only = tmp_path / "config.json"  # a config object: flags give the rest and win
    config_only.write_text(json.dumps({"sparsity": 0.6, "bits": 4, "rank": 16}))
    third = tmp_path / "third.json"
    rc, _, err = _evaluate(
        [*source, "--recipe", str(config_only), "--bits", "8", "--json", str(third)], capsys
    )
    assert rc == 0, err
    c = json.loads(third.read_text())
    assert (c["config"]["bits"], c["config"]["sparsity"], c["config"]["rank"]) == (8, 0.6, 16)
    assert c["baseline"]["metrics"] == a["baseline"]["metrics"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"sparsity": 0.5, "speed": 3}', "unknown compression settings 'speed'"),
        ('{"bits": 11}', "bits 11 is outside"),
    ],
)
def test_a_bad_recipe_exits_2_with_one_line(
    content, match, tiny_bert_dir, tiny_csv, tmp_path, capsys
):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(content)
    rc, _, err = _evaluate(
        ["--model", str(tiny_bert_dir), "--dataset", str(tiny_csv), "--recipe", str(recipe)], capsys
    )
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1, err


def _runs_json(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(["runs", *args, "--json"]) == 0
    return capsys.readouterr().out


def test_runs_commands_follow_the_contract(tiny_bert_dir, tiny_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(tmp_path / "own.sqlite"))
    source = ["--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    assert _evaluate([*source, "--sparsity", "0.5", "--no-record"], capsys)[0] == 0
    assert json.loads(_runs_json(["list"], capsys)) == []  # --no-record recorded nothing
    assert _evaluate([*source, "--sparsity", "0.5"], capsys)[0] == 0
    listed = json.loads(_runs_json(["list"], capsys))
    assert [r["parent"] for r in listed] == [None, listed[0]["id"]]
    for run in listed:
        assert set(run) >= LIST_KEYS
    assert set(listed[1]["metrics"]) == {"baseline", "compressed"}
    assert listed[1]["metrics"]["compressed"].keys() == listed[1]["intervals"].keys()
    shown = json.loads(_runs_json(["show", str(listed[1]["id"])], capsys))
    assert set(shown) >= LIST_KEYS | {"confusion_matrix", "report", "latency", "fidelity"}
    assert shown["report"]["rows"] and shown["config"]["sparsity"] == 0.5
    preds = tmp_path / "p.csv"
    assert main(["runs", "export", str(shown["id"]), "--predictions", str(preds)]) == 0
    lines = preds.read_text().splitlines()
    assert lines[0].startswith("index,label,pred,prob_") and len(lines) == 1 + shown["n"]
    assert json.loads(_runs_json(["delete", str(listed[0]["id"])], capsys)) == {
        "deleted": listed[0]["id"]
    }
    (left,) = json.loads(_runs_json(["list"], capsys))
    assert left["id"] == listed[1]["id"] and left["parent"] is None
    capsys.readouterr()
    assert main(["runs", "show", "999"]) == 2
    err = capsys.readouterr().err
    assert "no run 999" in err and len(err.strip().splitlines()) == 1
    assert main(["runs", "show", "abc"]) == 2
    assert "whole number" in capsys.readouterr().err


def test_shared_zeros_and_disagreements_equal_direct_counts():
    from llmopt.comparison import class_agreement, disagreements, shared_zeros
    from llmopt.experiments import RowSet, _pack_masks

    rng = np.random.default_rng(0)
    a, b = rng.random((7, 13)) < 0.6, rng.random((7, 13)) < 0.3  # kept weights
    unpacked = {}
    for key, mask in (("a", a), ("b", b)):
        (row,) = _pack_masks({"w": mask})
        import zlib

        unpacked[key] = {
            "w": {
                "shape": (7, 13),
                "zeros": row[3],
                "bits": np.frombuffer(zlib.decompress(row[4]), np.uint8),
            }
        }
    (shared,) = shared_zeros(unpacked["a"], unpacked["b"]).to_dict("records")
    assert shared["zeros in both"] == int((~a & ~b).sum())
    assert shared["if independent"] == pytest.approx((~a).sum() * (~b).sum() / a.size)
    assert shared["overlap (Jaccard)"] == pytest.approx((~a & ~b).sum() / (~a | ~b).sum())

    y = np.array([0, 1, 2, 0, 1, 2, 2])
    preds = [np.array([0, 1, 2, 0, 1, 2, 2]), np.array([0, 2, 2, 1, 1, 2, 0])]
    runs, results = [], {}
    for i, pred in enumerate(preds, start=1):
        score = np.eye(3)[pred] * 0.7 + 0.1
        runs.append(
            Run(
                model="m",
                model_fingerprint="m",
                dataset="d",
                rows_fingerprint="r",
                n=7,
                label_names=["x", "y", "z"],
                metrics={},
                id=i,
            )
        )
        results[i] = llmopt.EvalResult(
            y, score, pred, ["x", "y", "z"], {}, np.eye(3), {}, 0, 0, 0, 0
        )
    rows = RowSet([f"<b>text {i}</b>" for i in range(7)], y, np.arange(10, 17), ["x", "y", "z"])
    table, count = disagreements(runs, results, rows)
    differ = np.flatnonzero(preds[0] != preds[1])
    assert count == len(differ) == len(table) == 3
    assert list(table["row"]) == [13, 11, 16]  # by true label (x, y, z), then position
    assert list(table["text"]) == ["text 3", "text 1", "text 6"]  # HTML removed
    assert list(table["#2 says"]) == ["y", "z", "x"]
    per_class = class_agreement(runs, results).set_index("true label")
    assert per_class.loc["z", "rows"] == 3
    assert per_class.loc["z", "all agree"] == pytest.approx(2 / 3)
    assert per_class.loc["y", "accuracy #2"] == pytest.approx(0.5)


def test_what_differs_lists_only_the_settings_that_differ():
    """A base run (no config), a pruned variant and a distilled student on the same rows: the
    fields a config leaves out are at their defaults, so only what really differs is listed."""
    from llmopt.comparison import what_differs
    from llmopt.compression import CompressionConfig
    from llmopt.experiments import Run

    common = {"model": "bundled", "model_fingerprint": "m", "dataset": "bundled",
              "rows_fingerprint": "r", "n": 10}  # fmt: skip
    pruned = CompressionConfig(sparsity=0.5, sparsity_method="wanda").to_dict()
    student = {"training": {"task": "distill", "n_layers": 3, "temperature": 2.0, "alpha": 0.5}}
    runs = [
        Run(**common, id=1),
        Run(**common, id=2, kind="variant", config=pruned, method="50% wanda pruning"),
        Run(**common, id=3, kind="variant", config=student, method="student"),
    ]
    table = what_differs(runs)
    assert list(table.index) == ["sparsity", "sparsity_method", "training"]
    assert table.loc["sparsity"].tolist() == ["0.0", "0.5", "0.0"]
    assert table.loc["training"].tolist()[2].startswith("distilled to 3 layers")
    assert what_differs(runs[:1] * 2).empty


def test_runs_with_other_labels_on_the_same_rows_are_not_compared_row_by_row():
    """A 3-label model beside a 2-label one on the same rows: their probability columns mean
    different things, so no paired difference or McNemar test is computed between them."""
    from llmopt import comparison
    from llmopt.experiments import Run

    common = {"model": "m", "model_fingerprint": "f", "dataset": "d", "rows_fingerprint": "r",
              "n": 4, "metrics": {"baseline": {"accuracy": 0.5}}}  # fmt: skip
    two = Run(**common, id=1, label_names=["negative", "positive"])
    three = Run(**common, id=2, label_names=["negative", "neutral", "positive"])
    assert comparison.comparable([two, two]) and not comparison.comparable([two, three])
    cells, _ = comparison.side_by_side([two, three], {1: object(), 2: object()}, reference=1)
    assert cells.loc["McNemar vs reference", three.label] == "other rows: not comparable"
