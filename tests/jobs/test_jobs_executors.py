"""The same job in-process, in a process pool and on Ray: the same numbers, the same runs;
a worker killed mid-task is retried and nothing is recorded twice."""

from __future__ import annotations

import numpy as np
import pytest
from jobhelpers import DieOnce

from llmopt.experiments import ExperimentStore
from llmopt.jobs.store import JobStore
from llmopt.jobs.sweepjob import run_sweep_job, sweep_spec

VALUES = [0.0, 0.3, 0.6]


def _spec(tiny_bert_dir, tiny_csv, values=VALUES):
    rows = {"model": str(tiny_bert_dir), "dataset": str(tiny_csv)}
    return sweep_spec("sparsity", values, ["magnitude", "wanda"], rows=rows)


def _predictions(store: ExperimentStore, payload: dict) -> list[bytes]:
    out = []
    for point in payload["points"]:
        y_true, y_score = store.predictions(point["run_id"])
        out.append(y_true.tobytes() + y_score.tobytes())
    return out


def test_inline_local_and_ray_give_bit_identical_metrics(
    tiny_bert_dir, tiny_csv, tmp_path, ray_address
):
    """Every executor records the same metrics, fidelity and probabilities (bit for bit) and
    the same run ids and lineage; wanda's calibration texts travel with the shared inputs."""
    results = {}
    for executor in ("inline", "local", "ray"):
        store = ExperimentStore(tmp_path / f"{executor}.sqlite")
        payload = run_sweep_job(_spec(tiny_bert_dir, tiny_csv), executor=executor, store=store)
        assert payload["executor"] == executor
        assert (payload["evaluated"], payload["skipped"]) == (5, 0)  # base + 2 methods x 2
        runs = store.runs()
        results[executor] = (
            [(p["method"], p["value"], p["run_id"], p["metrics"], p["fidelity"])
             for p in payload["points"]],
            _predictions(store, payload),
            sorted((r.id, r.parent, r.kind, r.method) for r in runs),
        )  # fmt: skip
        assert len(runs) == 5  # the 'off' points of both methods are the one base run
    assert results["inline"] == results["local"] == results["ray"]
    points = results["inline"][0]
    assert points[0][2] == points[3][2]  # sparsity 0: the base run, for either method
    assert points[1][3]["accuracy"] is not None and points[1][4]["agreement"] <= 1.0


@pytest.mark.parametrize("executor", ["ray"])
def test_a_worker_killed_mid_task_is_retried_and_nothing_is_recorded_twice(
    executor, tiny_bert_dir, tiny_csv, tmp_path, ray_address
):
    """The first task to run kills its own process (os._exit, as kill -9 would); Ray retries
    it (max_retries), the pool is rebuilt; the job completes with each point recorded once.
    Fails without the retries: the job would end with 'worker died'."""
    if executor == "ray":
        import jobhelpers
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(jobhelpers)  # Ray workers need not import it
    marker = tmp_path / "died"
    store = ExperimentStore(tmp_path / "store.sqlite")
    payload = run_sweep_job(
        _spec(tiny_bert_dir, tiny_csv, [0.3, 0.6]), executor=executor, store=store,
        task_fn=DieOnce(marker),
    )  # fmt: skip
    assert marker.exists()  # a worker did die
    assert payload["evaluated"] == 4
    variants = [r for r in store.runs() if r.kind == "variant"]
    configs = [str(sorted(r.config.items())) for r in variants]
    assert len(configs) == len(set(configs)) == 4
    job = JobStore(store).get(payload["job_id"])
    assert job.status == "done" and job.done == job.total == 4


def test_rerunning_a_job_skips_every_recorded_point(tiny_bert_dir, tiny_csv, tmp_path):
    store = ExperimentStore(tmp_path / "store.sqlite")
    spec = _spec(tiny_bert_dir, tiny_csv)
    first = run_sweep_job(spec, store=store)
    again = run_sweep_job(spec, store=store)
    assert (again["evaluated"], again["skipped"]) == (0, 5)
    assert [p["run_id"] for p in again["points"]] == [p["run_id"] for p in first["points"]]
    assert again["points"] == first["points"]
    assert store.count() == 5
    assert np.all([p["metrics"] is not None for p in again["points"]])
