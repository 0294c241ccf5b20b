"""The Train page on a tiny model: every task's controls, a fine-tune to the end, Cancel, Save."""

from __future__ import annotations

import app_data
import numpy as np
import pytest
from app_data import figures, title
from app_settings import TINY_ROWS

import llmopt

TASKS = ["finetune", "recover", "prune", "distill"]
WAIT_S = 90  # a tiny run takes seconds; a busy shared CPU can make it much slower


def wait_for(at, done, limit=WAIT_S):
    return app_data.wait_for(at, done, limit, "the training job")


def job(at):
    return at.session_state["train_job"] if "train_job" in at.session_state else None


def finished(at):
    j = job(at)
    return j is not None and not j.running and not any(p for p in at.get("progress"))


def test_every_task_shows_its_controls_and_an_estimate(app):
    at = app.run()
    at.switch_page("pages/train.py").run()
    for task in TASKS:
        at.radio("t_task").set_value(task).run()
        assert not at.exception, (task, at.exception)
        assert not at.error, (task, [e.value for e in at.error])
        captions = " ".join(c.value for c in at.caption)
        assert "Estimated time: about" in captions, task
        titles = [title(f) for f in figures(at)]
        assert ("Pruning schedule" in titles) == (task == "prune"), (task, titles)


def test_recover_without_a_compressed_model_says_what_to_do(app):
    at = app.run()
    at.switch_page("pages/train.py").run()
    at.radio("t_task").set_value("recover").run()
    at.button("t_start").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "there is no compressed model to recover yet — compress the model on the Compress & "
        "Evaluate page first"
    ]


def test_finetune_runs_to_the_end_and_saves_a_loadable_model(app, tiny_env, tmp_path):
    at = app.run()
    at.switch_page("pages/train.py").run()
    at.number_input("t_epochs_finetune").set_value(1.0)
    at.selectbox("t_layers").set_value("all").run()
    at.button("t_start").click().run()
    wait_for(at, finished)
    j = job(at)
    assert j.status == "done", j.error
    run = j.run
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    base = llmopt.evaluate(llmopt.load_model(str(tiny_env["model"])), data)
    np.testing.assert_allclose(run.before.y_score, base.y_score, rtol=0, atol=1e-6)
    titles = [title(f) for f in figures(at)]
    assert "Training: loss and validation accuracy" in titles
    assert run.history[0]["step"] == 0 and run.history[-1]["step"] > 0
    # the accuracy change is judged on these rows: exact McNemar test, grey when it is noise
    from llmopt.stats import ALPHA, mcnemar_exact

    card = [m for m in at.metric if m.label == "Accuracy"][0]
    test = mcnemar_exact(
        run.before.y_pred == run.before.y_true, run.after.y_pred == run.after.y_true
    )
    assert f"p = {test.p_value:.3g}" in card.help
    assert card.delta.endswith("· noise") == (test.p_value >= ALPHA)
    table = [d.value for d in at.dataframe if "accuracy" in d.value.columns][0]
    assert "latency_ms_per_sample" not in table.columns  # latency: only the paired figure
    # Save under the server's roots: the folder loads back with the same predictions
    target = tmp_path / "trained"
    at.text_input("t_folder").set_value(str(target))
    at.button[[b.label for b in at.button].index("Save model")].click().run()
    assert not at.error, [e.value for e in at.error]
    back = llmopt.evaluate(llmopt.load_model(str(target)), data)
    np.testing.assert_array_equal(back.y_pred, run.after.y_pred)
    np.testing.assert_allclose(back.y_score, run.after.y_score, rtol=0, atol=1e-6)


def test_cancel_stops_the_run_and_saves_nothing(app, tiny_env, tmp_path_factory):
    at = app.run()
    at.switch_page("pages/train.py").run()
    at.number_input("t_epochs_finetune").set_value(20.0)
    at.run()
    before = set(tmp_path_factory.getbasetemp().rglob("*"))
    at.button("t_start").click().run()
    assert job(at).running
    at.button("t_cancel").click().run()
    wait_for(at, finished)
    j = job(at)
    assert j.status == "cancelled"
    assert j.run.history[-1]["step"] < 20 * 3  # stopped long before 20 epochs of 3 steps
    assert any("Cancelled after" in w.value for w in at.warning)
    assert "Save model" not in [b.label for b in at.button]
    after = set(tmp_path_factory.getbasetemp().rglob("*"))
    assert after == before  # no checkpoint, no temporary folder left behind


@pytest.mark.parametrize("task", ["prune", "distill"])
def test_pruning_and_distillation_finish_on_the_page(app, task):
    at = app.run()
    at.switch_page("pages/train.py").run()
    at.radio("t_task").set_value(task).run()
    at.number_input(f"t_epochs_{task}").set_value(1.0).run()
    at.button("t_start").click().run()
    wait_for(at, finished)
    j = job(at)
    assert j.status == "done", j.error
    if task == "prune":
        assert j.run.schedule[-1]["achieved"] == pytest.approx(0.7, abs=0.02)
        assert "Pruning schedule" in [title(f) for f in figures(at)]
    else:
        assert j.run.model.model.config.num_hidden_layers == 1
        assert {m.label for m in at.metric} >= {"Speed-up vs the base", "Agreement with teacher"}
        speed = [m for m in at.metric if m.label == "Speed-up vs the base"][0]
        assert speed.value.endswith("×") and "same kernels" not in speed.value  # timed, paired


def test_recover_trains_the_model_compressed_on_the_compress_page(app):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(0.5)
    at.select_slider("c_bits").set_value(4).run()
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    assert not at.exception and not at.error
    compressed = at.session_state["compressed"]["model"]
    at.switch_page("pages/train.py").run()
    at.radio("t_task").set_value("recover").run()
    at.selectbox("t_recover").set_value("finetune")
    at.number_input("t_epochs_recover").set_value(1.0).run()
    at.button("t_start").click().run()
    wait_for(at, finished)
    j = job(at)
    assert j.status == "done", j.error
    from llmopt.training.constraints import satisfies

    assert all(satisfies(j.run.model.model, compressed.compression).values())
    assert j.run.parent == compressed.source and j.run.task == "recover-finetune"
    assert "Save model" in [b.label for b in at.button]
    # recorded: base -> the evaluated compressed run -> this recovery, for the Compare lineage
    from llmopt.experiments import ExperimentStore

    evaluated = at.session_state["evaluation"]["run_id"]
    stored = ExperimentStore().get(j.run_id)
    assert stored.parent == evaluated and stored.steps == ["prune", "quantize", "recover"]
    assert stored.metrics["compressed"]["accuracy"] == j.run.after.metrics["accuracy"]
    assert any(f"Recorded as run #{j.run_id}" in c.value for c in at.caption)


def test_a_registered_training_task_is_offered_with_its_controls(app):
    """The Train page lists the task registry: a task added there is in the selector, with
    the controls its ``Param`` list declares and an estimate."""
    from task_file import NAME, TITLE, dummy_task

    with dummy_task():
        at = app.run()
        at.switch_page("pages/train.py").run()
        assert NAME in at.radio("t_task").options or TITLE in at.radio("t_task").options
        at.radio("t_task").set_value(NAME).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.slider("t_knob").value == 3
        assert "Estimated time: about" in " ".join(c.value for c in at.caption)
    at = app.run()
    at.switch_page("pages/train.py").run()
    assert NAME not in at.radio("t_task").options and TITLE not in at.radio("t_task").options


def test_the_estimate_says_how_it_was_made_and_learns_from_a_finished_run(app, monkeypatch):
    """Before: "from one timed step", the quickest of two (41 s shown, 2 min 36 s taken). Now
    the median of several timed steps, and a finished run's actual/estimated time scales the
    next estimate, which says so."""
    from dashboard import training

    at = app.run()
    at.switch_page("pages/train.py").run()
    caption = next(c.value for c in at.caption if c.value.startswith("Estimated time"))
    assert "the median of 3 training steps timed on this machine" in caption
    est = at.session_state["train_estimate"][1]
    assert len(est["step_samples"]) == 3
    state: dict = {}
    monkeypatch.setattr(training.st, "session_state", state)
    job = training.Job("finetune", ("m", "d"), {}, status="done", estimated=dict(est))
    job.run = type("Run", (), {"seconds": est["seconds"] * 4})()
    training.learn_pace(job)
    assert state["train_pace"] == pytest.approx(4.0)
    text = training.estimate_text({**est, "seconds": est["seconds"] * 4, "pace": 4.0}, 10)
    assert "Scaled by 4×" in text and "took 4× its estimate" in text


def test_the_speed_up_gets_the_compress_pages_noise_check():
    """Before: "4.28×" with overlapping passes (22–81 vs 11–38 ms) and no verdict."""
    from dashboard.training import speedup

    def record(base, other):
        ratio = float(np.median(other) / np.median(base))
        return {"ratio": ratio, "baseline": {"samples_ms": base},
                "compressed": {"samples_ms": other}}  # fmt: skip

    value, verdict, how = speedup(record([22, 40, 50, 60, 81], [11, 12, 20, 30, 38]))
    assert value.endswith("×") and verdict.startswith("noise") and "overlap" in how
    value, verdict, _ = speedup(record([40, 41, 42, 43, 44], [20, 21, 22, 23, 24]))
    assert value == "1.91×" and verdict is None  # 42 / 22 ms
    assert speedup({})[0] == "not measured"
