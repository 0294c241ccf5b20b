"""A sweep as a job: its points are tasks, recorded as they finish, skipped once recorded.

``sweep_spec`` checks a sweep's settings (before any model is loaded) and gives the job's spec;
``run_sweep_job`` runs it with an executor and returns the ``sweep --json`` object.
Points are built by ``llmopt.sweep.sweep_config``, exactly as the Sweep page builds them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from llmopt.errors import LlmoptError
from llmopt.jobs.store import JobStore

# The knob names of the command line; ``alpha`` is SmoothQuant's ``smooth_alpha``.
KNOB_NAMES = {"sparsity": "sparsity", "bits": "bits", "rank": "rank", "alpha": "smooth_alpha"}
ROW_KEYS = ("model", "dataset", "split", "limit", "seed", "text_column", "label_column")


def knob_name(text: str) -> str:
    """The sweep knob (``llmopt.sweep.KNOBS`` key) a command-line name stands for."""
    if text in KNOB_NAMES:
        return KNOB_NAMES[text]
    if text in KNOB_NAMES.values():
        return text
    raise LlmoptError(f"unknown sweep knob {text!r}; choose from {', '.join(KNOB_NAMES)}")


def sweep_spec(
    knob: str,
    values: list,
    methods: list[str] | None,
    base_config: dict | None = None,
    *,
    rows: dict | None = None,
    batch_size: int = 32,
    threads: int = 1,
) -> dict:
    """A sweep job's spec, every point checked: what the job runs, JSON-ready.

    Args:
        knob: sparsity, bits, rank or alpha (or smooth_alpha).
        values: the knob's values ('off': None, or 0 sparsity, is the base model itself).
        methods: method labels of ``llmopt.sweep.knob_methods``; default the knob's first.
        base_config: fixed settings every point keeps (``CompressionConfig.to_dict()`` keys).
        rows: model and rows: {"model", "dataset", "split", "limit", "seed", "text_column",
            "label_column"}.
        batch_size: rows per forward pass.
        threads: torch threads per task (the same in every executor: same numbers).

    Raises:
        LlmoptError: an unknown knob or method, no values, a value or combination the config
            rejects, or a fixed setting that is the knob itself.
    """
    from llmopt.compression.config import CompressionConfig
    from llmopt.sweep import KNOBS, knob_methods, sweep_config

    knob = knob_name(knob)
    if not values:
        raise LlmoptError(f"give at least one {knob} value to sweep")
    methods = list(methods or [next(iter(knob_methods(knob)))])
    fixed = dict(base_config or {})
    field = KNOBS[knob]["field"]
    if fixed.get(field) is not None:
        flag = "--" + field.replace("_", "-")
        raise LlmoptError(f"{flag} is the swept knob: give its values with --values, not {flag}")
    base = CompressionConfig.from_dict(fixed)
    for method in methods:
        for value in values:
            sweep_config(base, knob, method, value)  # raises on a bad method or value
    return {
        "kind": "sweep",
        "knob": knob,
        "values": list(values),
        "methods": methods,
        "base_config": fixed,
        "rows": {"model": "bundled", "dataset": "bundled", "split": "test", "limit": None,
                 "seed": None, "text_column": "text", "label_column": "label", **(rows or {})},
        "batch_size": int(batch_size),
        "threads": int(threads),
    }  # fmt: skip


def spec_hash(spec: dict) -> str:
    """What makes two jobs the same job (the executor is not part of it)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def recorded_tasks(store, model_fp: str, rows_fp: str) -> dict[str, int]:
    """{task key: run id} of the classification runs already recorded for this model on these
    rows, by hand or by a job (the latest run per key)."""
    from llmopt.jobs.tasks import task_key

    found = {}
    for run in store.runs(model_fingerprint=model_fp, rows_fingerprint=rows_fp):
        if run.task != "classify":
            continue
        config = run.config if run.kind == "variant" else None
        found[task_key(config, model_fp, rows_fp)] = run.id
    return found


def run_sweep_job(
    spec: dict,
    *,
    executor: str = "inline",
    address: str | None = None,
    store=None,
    progress: Callable[[float, str], None] | None = None,
    task_fn: Callable | None = None,
    loaded=None,
) -> dict:
    """Run (or resume) a sweep job and record every point in the experiment store.

    Args:
        spec: from ``sweep_spec``.
        executor: inline, local or ray.
        address: the Ray cluster's address (None: a local Ray with this machine's cores).
        store: the ``ExperimentStore``; default the user's.
        progress: called with (fraction of the tasks done, message).
        task_fn: what runs each task (default ``tasks.evaluate_point``; tests wrap it).
        loaded: the base model if already loaded (else loaded from ``spec["rows"]["model"]``).

    Returns:
        ``{"job_id", "executor", "evaluated", "skipped", "seconds", "points": [{"method",
        "value", "run_id", "metrics", "fidelity"}]}``; ``"status"`` (done or cancelled) is
        only in the job table (``jobs show``), and a cancelled job's unfinished points have
        ``run_id`` None.

    Raises:
        LlmoptError: bad settings (before any work), an unreachable Ray address, a task's own
            error; the job is then marked failed and running the same spec resumes it.
        JobCancelled: Cancel was asked for; the points finished so far stay recorded.
    """
    from llmopt.compression import check_config, needs_calibration
    from llmopt.compression.config import CompressionConfig
    from llmopt.data import load_dataset
    from llmopt.evaluation import evaluate
    from llmopt.experiments import ExperimentStore
    from llmopt.jobs.executors import make_executor
    from llmopt.jobs.tasks import evaluate_point, task_key, torch_threads
    from llmopt.models import load_model
    from llmopt.recording import model_fingerprint, record_evaluation
    from llmopt.sweep import sweep_config

    start = time.perf_counter()
    say = progress or (lambda _f, _m: None)
    store = store if store is not None else ExperimentStore()
    if store.read_only:
        raise LlmoptError(f"the experiment store is read-only ({store.notice}): jobs record there")
    jobs = JobStore(store)
    rows = spec["rows"]
    pool = make_executor(executor, address)  # an unreachable address fails here, in seconds
    try:
        say(0.0, "loading the model and rows")
        train = None
        fixed = CompressionConfig.from_dict(spec["base_config"])
        configs = [
            (m, v, sweep_config(fixed, spec["knob"], m, v))
            for m in spec["methods"]
            for v in spec["values"]
        ]
        if any(needs_calibration(c) for _, _, c in configs) or rows["model"].startswith("encoder:"):
            train = load_dataset(rows["dataset"], "train", text_column=rows["text_column"],
                                 label_column=rows["label_column"])  # fmt: skip
        dataset = load_dataset(
            rows["dataset"], rows["split"], text_column=rows["text_column"],
            label_column=rows["label_column"], limit=rows["limit"], seed=rows["seed"],
        )  # fmt: skip
        if loaded is None:
            loaded = load_model(rows["model"], train_data=train)
        for _, _, config in configs:
            if not config.is_identity:
                check_config(loaded, config)
        model_fp, rows_fp = model_fingerprint(loaded), dataset.fingerprint

        def key_of(config) -> str:
            acting = None if config.is_identity else config.acting().to_dict()
            return task_key(acting, model_fp, rows_fp)

        points = [{"method": m, "value": v, "task_key": key_of(c)} for m, v, c in configs]
        job = jobs.create("sweep", spec, spec_hash(spec), pool.name, points)
        jobs.set_status(job.id, "running")
        outcome = _drive(
            spec, job.id, jobs, store, pool, configs, key_of, loaded, dataset, train,
            task_fn or evaluate_point, say, record_evaluation, evaluate, torch_threads,
            model_fp, rows_fp,
        )  # fmt: skip
    except JobCancelled as stop:
        stop.payload["seconds"] = time.perf_counter() - start
        raise
    finally:
        pool.close()
    outcome["seconds"] = time.perf_counter() - start
    return outcome


class JobCancelled(Exception):
    """A job stopped by Cancel; ``payload`` is what it finished (the ``sweep --json`` shape)."""

    def __init__(self, payload: dict):
        super().__init__(f"job {payload['job_id']} was cancelled")
        self.payload = payload


def _drive(spec, job_id, jobs, store, pool, configs, key_of, loaded, dataset, train, task_fn,
           say, record_evaluation, evaluate, torch_threads, model_fp, rows_fp) -> dict:  # fmt: skip
    """The driver's loop: skip what is recorded, evaluate the rest, record as tasks finish."""
    from llmopt.compression.config import CompressionConfig

    rows = spec["rows"]
    where = {
        "origin": "sweep",
        "model_source": rows["model"],
        "dataset_source": rows["dataset"],
        "rows": {k: rows[k] for k in ("split", "limit", "seed", "text_column", "label_column")},
    }
    unique = {key_of(c): c for _, _, c in configs}
    recorded = recorded_tasks(store, model_fp, rows_fp)
    skipped = evaluated = 0
    for key in unique:
        if key in recorded:
            jobs.point_done(job_id, key, recorded[key], "skipped")
            skipped += 1
    todo = [(k, c.to_dict()) for k, c in unique.items() if k not in recorded]
    total = len(unique)
    status = "done"
    try:
        if todo:
            say(skipped / total, "evaluating the base model")
            with torch_threads(spec["threads"]):
                base = evaluate(loaded, dataset, batch_size=spec["batch_size"])
            base_key = key_of(CompressionConfig())
            if base_key in unique and base_key not in recorded:  # the 'off' point: the base run
                with recording_lock(store):
                    already = recorded_tasks(store, model_fp, rows_fp).get(base_key)
                    if already is None:
                        done = record_evaluation(store, base_model=loaded, dataset=dataset,
                                                 base=base, model_fp=model_fp, **where)  # fmt: skip
                        jobs.point_done(job_id, base_key, done.base_id, "evaluated")
                        evaluated += 1
                    else:
                        jobs.point_done(job_id, base_key, already, "skipped")
                        skipped += 1
                todo = [(k, c) for k, c in todo if k != base_key]
            shared = {"loaded": loaded, "dataset": dataset, "calibration": train,
                      "batch_size": spec["batch_size"], "threads": spec["threads"]}  # fmt: skip
            resources = {"num_cpus": spec["threads"], "num_gpus": _gpus(loaded)}
            tasks = pool.run(task_fn, shared, todo, resources) if todo else iter(())
            configs_by_key = dict(todo)
            # Outcomes are recorded in the job's order (one finished early waits for those
            # before it), so run ids and parents are the same whatever the executor.
            order, finished = [k for k, _ in todo], {}
            try:
                for key, out in tasks:
                    if key is not None:
                        finished[key] = out
                    while order and order[0] in finished:
                        key = order.pop(0)
                        with recording_lock(store):  # one job records a task, never two
                            already = recorded_tasks(store, model_fp, rows_fp).get(key)
                            if already is not None:  # another job recorded it meanwhile
                                jobs.point_done(job_id, key, already, "skipped")
                                skipped += 1
                            else:
                                out = finished.pop(key)
                                done = record_evaluation(
                                    store, base_model=loaded, dataset=dataset, base=base,
                                    other=out["result"], config=configs_by_key[key],
                                    report=out["report"], latency=out["latency"],
                                    model_fp=model_fp, **where,
                                )  # fmt: skip
                                jobs.point_done(job_id, key, done.run_id, "evaluated")
                                evaluated += 1
                        say((skipped + evaluated) / total, f"{skipped + evaluated} of {total}")
                    if jobs.cancel_requested(job_id):
                        status = "cancelled"
                        break
            finally:
                close = getattr(tasks, "close", None)
                if close is not None:
                    close()  # stops queued tasks (Cancel, or an error)
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0]
        jobs.set_status(job_id, "failed", error=f"{why[:300]}; run the same command to resume")
        raise
    jobs.set_status(job_id, status)
    say(1.0, status)
    payload = {
        "job_id": job_id,
        "executor": pool.name,
        "evaluated": evaluated,
        "skipped": skipped,
        "seconds": 0.0,
        "points": job_points(store, jobs, job_id),
    }
    if status == "cancelled":
        raise JobCancelled(payload)
    return payload


def recording_lock(store):
    """A lock beside the store held while a driver checks that a task is not recorded and
    records it, so two jobs on this machine never record the same task (or base run) twice."""
    from llmopt.sqlitefile import file_lock

    return file_lock(store.path.with_name(store.path.name + ".jobs"))


def _gpus(loaded) -> float:
    """1 when the model is on CUDA (each task then needs a GPU), else 0."""
    try:
        return 1.0 if next(loaded.model.parameters()).is_cuda else 0.0
    except StopIteration:
        return 0.0


def job_points(store, jobs: JobStore, job_id: int) -> list[dict]:
    """The points of a job with each one's run id, metrics and fidelity to the base model
    (read back from the store, so a skipped point shows what was recorded)."""
    job = jobs.get(job_id)
    ids = [p["run_id"] for p in job.points if p["run_id"] is not None]
    runs = {r.id: r for r in store.runs(ids=ids)} if ids else {}
    out = []
    for point in job.points:
        run = runs.get(point["run_id"])
        metrics = fidelity = None
        if run is not None:
            metrics = run.own_metrics
            if run.kind == "variant":
                fidelity = {"agreement": run.agreement, "mean_kl": run.mean_kl,
                            "flipped": run.flipped}  # fmt: skip
            else:
                fidelity = {"agreement": 1.0, "mean_kl": 0.0, "flipped": 0}
        out.append({"method": point["method"], "value": point["value"],
                    "run_id": point["run_id"] if run is not None else None,
                    "metrics": metrics, "fidelity": fidelity})  # fmt: skip
    return out
