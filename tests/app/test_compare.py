"""The Compare page and the address: three recorded runs compared against the store's own
numbers, a link's settings restored, sweeps recorded, noise shown as noise."""

from __future__ import annotations

import numpy as np
import pytest
from app_data import decode, figure, figures, title
from app_settings import APP, TIMEOUT

from llmopt.experiments import ExperimentStore, store_path

SETTINGS = [(0.5, "off", 0), (0.7, 4, 0), (0.3, 8, 8)]  # sparsity, bits, rank


@pytest.fixture()
def fresh_store(tmp_path, monkeypatch):
    """An empty experiment store for this test."""
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(tmp_path / "experiments.sqlite"))
    return tmp_path / "experiments.sqlite"


@pytest.fixture()
def sensitive_env(tiny_env, sensitive_bert, monkeypatch):
    """The sidebar on a tiny BERT whose predictions compression flips (disagreements exist)."""
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(sensitive_bert))
    return {**tiny_env, "model": sensitive_bert}


def evaluate(at, sparsity, bits, rank):
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(sparsity)
    at.select_slider("c_bits").set_value(bits)
    at.slider("c_rank").set_value(rank).run()
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at.session_state["evaluation"]["run_id"]


def test_three_runs_compared_as_the_store_has_them(sensitive_env, fresh_store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    ids = [evaluate(at, *s) for s in SETTINGS]
    store = ExperimentStore(store_path())
    runs = {r.id: r for r in store.runs(full=True)}
    assert set(ids) < set(runs) and len(runs) == 4  # one base run, three variants
    assert all(runs[i].parent in runs for i in ids)

    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    scatter = figure(at, "Accuracy against Size (MB)")
    points = [t for t in scatter["data"] if t.get("mode") == "markers" and t["name"] != "selected"]
    shown = sorted(int(c[0]) for t in points for c in t["customdata"])
    assert shown == sorted(runs)  # every run is a point carrying its id
    assert any(t["name"] == "Pareto front" for t in scatter["data"])
    lineage = figure(at, "Lineage")
    assert sorted(int(c[0]) for c in lineage["data"][1]["customdata"]) == sorted(runs)

    at.multiselect("cmp_runs").set_value(ids).run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert at.query_params["runs"] == ",".join(map(str, ids))
    picked = [runs[i] for i in ids]
    labels = [r.label for r in picked]
    roc = figure(at, "ROC curve")
    curves = {
        t["name"].split(" (AUC")[0]: t for t in roc["data"] if not t["name"].startswith("chance")
    }
    assert sorted(curves) == sorted(labels)
    for r in picked:
        y_true, y_score = store.predictions(r.id)
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(y_true == 1, y_score[:, 1])
        np.testing.assert_allclose(decode(curves[r.label]["x"]), fpr)
        np.testing.assert_allclose(decode(curves[r.label]["y"]), tpr)
    confusion = figure(at, "Confusion matrices")
    heatmaps = [t for t in confusion["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 3
    for heat, r in zip(heatmaps, picked, strict=True):
        np.testing.assert_array_equal(decode(heat["z"]), np.array(r.confusion_matrix))

    preds = np.stack([store.predictions(r.id)[1].argmax(1) for r in picked])
    differ = np.flatnonzero((preds != preds[0]).any(axis=0))
    assert len(differ) > 0  # compression flips some of this model's predictions
    (disagree,) = [
        d.value
        for d in at.main.dataframe
        if "true label" in d.value.columns and "text" in d.value.columns
    ]
    rows = store.row_set(picked[0].rows_fingerprint)
    assert sorted(disagree["row"]) == sorted(int(rows.indices[i]) for i in differ)
    for r, row_preds in zip(picked, preds, strict=True):
        names = r.label_names
        by_row = dict(zip(rows.indices[differ], [names[p] for p in row_preds[differ]], strict=True))
        assert [by_row[i] for i in disagree["row"]] == list(disagree[f"#{r.id} says"])
    (per_class,) = [d.value for d in at.main.dataframe if "all agree" in d.value.columns]
    assert per_class["rows"].sum() == picked[0].n

    (side,) = [d.value for d in at.main.dataframe if "Accuracy" in list(d.value.index)]
    assert list(side.columns) == labels
    ref = at.selectbox("cmp_ref").value
    assert side.loc["McNemar vs reference", runs[ref].label] == "reference"
    for r in picked:
        assert side.loc["Accuracy", r.label].startswith(f"{r.own_metrics['accuracy']:.3f} [")
    assert any(title(f).startswith("Per layer") for f in figures(at))
    zeros = figure(at, "Zeros shared by")  # two of the three runs pruned with masks
    assert len(zeros["data"][0]["x"]) > 0


def test_a_link_restores_settings_and_results(tiny_env, fresh_store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    run_id = evaluate(at, 0.7, 4, 0)
    params = dict(at.query_params)
    assert params["c_sparsity"] == "0.7" and params["c_bits"] == "4" and "c_rank" not in params
    assert params["run"] == str(run_id) and params["model"] == str(tiny_env["model"])

    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a new session: a reload
    reloaded.query_params.update(params)
    reloaded.switch_page("pages/compress.py").run()
    assert not reloaded.exception and not reloaded.error
    assert reloaded.slider("c_sparsity").value == pytest.approx(0.7)
    assert reloaded.select_slider("c_bits").value == 4
    first, again = at.session_state["evaluation"], reloaded.session_state["evaluation"]
    assert again["run_id"] == run_id
    np.testing.assert_array_equal(again["other"].y_score, first["other"].y_score)
    assert again["other"].metrics == first["other"].metrics
    assert any(title(f).startswith("ROC curve") for f in figures(reloaded))
    assert not reloaded.warning  # the results shown belong to the settings shown

    compare = AppTest.from_file(APP, default_timeout=TIMEOUT)
    compare.query_params.update({**params, "runs": f"{run_id}", "x": "latency_ms"})
    compare.switch_page("pages/compare.py").run()
    assert not compare.exception and not compare.error
    assert compare.multiselect("cmp_runs").value == [run_id]
    assert compare.selectbox("cmp_x").value == "latency_ms"
    compare.multiselect("cmp_runs").set_value([]).run()
    assert "runs" not in compare.query_params
    compare.query_params["runs"] = str(run_id)  # the Compress page's "Compare run #N" link
    compare.run()
    assert compare.multiselect("cmp_runs").value == [run_id]


@pytest.mark.parametrize(
    "params",
    [
        {"c_sparsity": "5"},
        {"c_sparsity": "abc"},
        {"c_rank": "100000"},
        {"c_bits": "99"},
        {"rows": "-3"},
        {"c_sparsity": "0.97"},
    ],
)
def test_a_link_with_values_the_controls_cannot_take_is_ignored_with_a_warning(tiny_env, params):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.switch_page("pages/compress.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert at.slider("c_sparsity").value == pytest.approx(0.5) or params.get("c_bits") == "99"
    assert at.slider("c_rank").value == 0
    assert at.select_slider("c_bits").value in ("off", 4)
    if params != {"c_bits": "99"}:  # a select box drops an unknown choice by itself
        assert any("partly ignored" in w.value for w in at.warning), [w.value for w in at.warning]


def test_sweep_points_are_recorded_and_noise_is_shown_as_noise(tiny_env, fresh_store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/sweep.py").run()
    at.multiselect("s_values_sparsity").set_value([0.0, 0.2, 0.6])
    at.multiselect("s_methods_sparsity").set_value(["magnitude"]).run()
    [b for b in at.button if b.label == "Run sweep"][0].click().run()
    assert not at.exception and not at.error
    runs = ExperimentStore(store_path()).runs()
    sweep = [r for r in runs if r.origin == "sweep" and r.kind == "variant"]
    assert sorted(r.config["sparsity"] for r in sweep) == [
        0.2,
        0.6,
    ]  # the "off" point is the base run
    assert all(r.parent == runs[0].id and runs[0].kind == "base" for r in sweep)

    evaluate(at, 0.1, "off", 0)  # 10 % pruning of a tiny model on 10 rows changes nothing real
    cards = {m.label: m for m in at.metric}
    for name in ("Accuracy", "F1 (macro)", "ROC AUC"):
        assert cards[name].delta.endswith("· noise"), cards[name].delta
    assert cards["Latency"].delta == "same kernels"  # pruning keeps the baseline's kernels
    evaluate(at, 0.0, "off", 4)  # rank 4 runs smaller matrices: timed, paired
    latency = {m.label: m for m in at.metric}["Latency"]
    assert "×" in latency.delta and "passes" in latency.help


def test_picked_runs_are_renamed_tagged_deleted_and_their_recipe_loaded(tiny_env, fresh_store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    first, second = evaluate(at, 0.7, 4, 0), evaluate(at, 0.3, "off", 0)
    at.switch_page("pages/compare.py").run()
    at.multiselect("cmp_runs").set_value([first]).run()
    at.text_input("cmp_name").set_value("seventy, four bits")
    [b for b in at.button if b.label == "Rename"][0].click().run()
    at.text_input("cmp_tags").set_value("keep, 4-bit, keep")
    [b for b in at.button if b.label == "Set tags"][0].click().run()
    store = ExperimentStore(store_path())
    assert (store.get(first).name, store.get(first).tags) == (
        "seventy, four bits",
        ["keep", "4-bit"],
    )

    at.selectbox("cmp_export").set_value(first)
    load = [b for b in at.button if b.label.startswith("Load its recipe")][0]
    load.click().run()
    assert not at.exception, at.exception
    assert at.slider("c_sparsity").value == pytest.approx(0.7)  # now on the Compress page
    assert at.select_slider("c_bits").value == 4

    at.switch_page("pages/compare.py").run()
    at.multiselect("cmp_runs").set_value([second]).run()
    delete = [b for b in at.button if b.label == "Delete"][0]
    assert delete.disabled  # not before "Yes, delete them" is ticked
    at.checkbox("cmp_sure").check().run()
    [b for b in at.button if b.label == "Delete"][0].click().run()
    assert not at.exception, at.exception
    assert [r.id for r in store.runs()] == [first - 1, first]  # the base run and the renamed one
    assert at.multiselect("cmp_runs").value == []


def test_different_models_share_the_table_and_other_rows_are_flagged(
    tiny_env, tiny_dirs, fresh_store
):
    """A BERT and a GPT-2 (and a compressed GPT-2) on the same rows sit in one table and one
    scatter and compare without a warning; a run on other rows is flagged as not comparable."""
    from streamlit.testing.v1 import AppTest

    import llmopt
    from llmopt.compression import CompressionConfig, compress
    from llmopt.recording import record_evaluation

    store = ExperimentStore(store_path())
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test")
    ids = []
    for family in ("bert", "gpt2"):
        loaded = llmopt.load_model(str(tiny_dirs[family]))
        base = llmopt.evaluate(loaded, data)
        ids.append(record_evaluation(store, base_model=loaded, dataset=data, base=base).run_id)
    variant, report = compress(loaded, CompressionConfig(bits=4))
    other = llmopt.evaluate(variant, data)
    ids.append(
        record_evaluation(
            store,
            base_model=loaded,
            dataset=data,
            base=base,
            other=other,
            variant=variant,
            config=CompressionConfig(bits=4),
            report=report,
        ).run_id
    )
    fewer = data.subset(6)
    ids.append(
        record_evaluation(
            store, base_model=loaded, dataset=fewer, base=llmopt.evaluate(loaded, fewer)
        ).run_id
    )

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["runs"] = ",".join(map(str, ids[:3]))
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error
    assert not [w for w in at.warning if "not comparable" in w.value]
    scatter = figure(at, "Accuracy against Size (MB)")
    groups = {t["name"] for t in scatter["data"] if t.get("mode") == "markers"} - {"selected"}
    assert groups == {"bert", "gpt2"}  # coloured by model, one scatter
    curves = [t for t in figure(at, "ROC curve")["data"] if not t["name"].startswith("chance")]
    assert len(curves) == 3
    at.multiselect("cmp_runs").set_value(ids).run()
    assert any("not comparable" in w.value for w in at.warning)
    assert not at.exception


def test_training_runs_sit_in_the_lineage_and_every_view_draws(tiny_env, tiny_dirs, fresh_store):
    """base -> pruned -> recovered, and a distilled student of the base: the lineage names each
    step, and picking all three draws every view (a student has no layer report)."""
    from streamlit.testing.v1 import AppTest

    import llmopt
    from llmopt.compression import CompressionConfig, compress
    from llmopt.recording import record_evaluation, record_training
    from llmopt.training.distill import distill
    from llmopt.training.finetune import recover

    store = ExperimentStore(store_path())
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test")
    train = llmopt.load_dataset(str(tiny_env["csv"]), "train")
    loaded = llmopt.load_model(str(tiny_dirs["bert"]))
    base = llmopt.evaluate(loaded, data)
    config = CompressionConfig(sparsity=0.5)
    pruned, report = compress(loaded, config)
    done = record_evaluation(
        store, base_model=loaded, dataset=data, base=base, other=llmopt.evaluate(pruned, data),
        variant=pruned, config=config, report=report,
    )  # fmt: skip
    back = recover(pruned, train, "head", eval_data=data)
    kept = record_training(store, back, base_model=loaded, dataset=data, base=base,
                           parent=done.run_id)  # fmt: skip
    student = distill(loaded, train, n_layers=1, eval_data=data)
    small = record_training(store, student, base_model=loaded, dataset=data, base=base)
    assert store.get(kept.run_id).steps == ["prune", "recover"]
    assert store.get(small.run_id).parent == done.base_id

    picked = [done.run_id, kept.run_id, small.run_id]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["runs"] = ",".join(map(str, picked))
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    lineage = figure(at, "Lineage")
    hover = " ".join(str(c[1]) for t in lineage["data"] for c in t.get("customdata") or [])
    assert "head re-fitted" in hover and "distilled to 1 layer" in hover
    assert len([t for t in figure(at, "ROC curve")["data"] if not t["name"].startswith("chance")])
    assert len(figures(at)) >= 5


def test_compare_shows_the_sidebars_dataset_and_one_front_per_set_of_rows(tiny_env, fresh_store):
    """Issue 18 item 11: runs on the bundled reviews (2 classes) and on a 7-class CSV shared one
    scatter and one Pareto front. Compare now first shows the sidebar's dataset and rows; with
    the filter cleared, points are coloured by dataset and each set of rows gets its own front."""
    from stored_runs import fill_store
    from streamlit.testing.v1 import AppTest

    names = [f"class {c}" for c in range(7)]
    ids = fill_store(
        fresh_store,
        {
            str(tiny_env["csv"]): (["negative", "positive"], 10),  # the sidebar's dataset
            "bundled": (["negative", "positive"], 93),
            "other.csv": (names, 300),
        },
    )
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]

    def points(fig: dict) -> list[int]:
        marks = [t for t in fig["data"] if t.get("mode") == "markers" and t["name"] != "selected"]
        return sorted(int(c[0]) for t in marks for c in t["customdata"])

    def fronts(fig: dict) -> int:
        return sum(t["name"] == "Pareto front" for t in fig["data"])

    scatter = figure(at, "Accuracy against Size (MB)")
    assert points(scatter) == sorted(ids[str(tiny_env["csv"])])  # the sidebar's runs only
    assert fronts(scatter) == 1
    assert at.multiselect("cmp_data").value == [str(tiny_env["csv"])]
    at.multiselect("cmp_data").set_value([]).run()  # every dataset
    assert not at.exception, at.exception
    scatter = figure(at, "Accuracy against Size (MB)")
    assert points(scatter) == sorted(i for run_ids in ids.values() for i in run_ids)
    assert fronts(scatter) == 3  # one per set of comparable runs
    assert at.selectbox("cmp_colour").value == "dataset_short"
    coloured = [
        t for t in scatter["data"] if t.get("mode") == "markers" and t["name"] != "selected"
    ]
    assert len(coloured) == 3  # one colour per dataset
