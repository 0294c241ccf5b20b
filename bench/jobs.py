"""Sweeps as jobs: the Ray executor's overhead per task against in-process, and a simulated
two-node Ray cluster against one node, with a projection for more nodes.

Usage: PYTHONPATH=. python bench/jobs.py [--limit 16] [--points 16]

1. Overhead: the same ``--points``-point sparsity sweep (magnitude) of the bundled model on the
   first ``--limit`` test rows, in-process and on a local one-CPU Ray, each into a fresh store.
   The overhead per task is the time between tasks (task phase less the tasks' own time, per
   task) on Ray beyond in-process; the one-off cluster start (``ray.init`` and a first worker
   importing torch) is reported apart.
2. Two nodes: ``ray.cluster_utils.Cluster`` on this machine, one CPU per node; the same sweep on
   one node and on two. Each task notes the node it ran on; throughput is tasks per second of
   the task phase (first task start to last task end).
3. Projection for 1/4/16/64 nodes from the measured task time t, Ray's overhead o per task and
   the driver's recording time r per task (serial): min(N / (t + o), 1 / r) tasks/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import machine

SPEC_VALUES = 16


class Timed:
    """The job's task, noting where and when it ran (one JSON file per call)."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, shared, item):
        from llmopt.jobs.tasks import evaluate_point

        start = time.time()
        out = evaluate_point(shared, item)
        node = "local"
        try:
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()[:8]
        except ImportError:
            pass
        record = {"start": start, "end": time.time(), "node": node, "pid": os.getpid()}
        name = f"{time.time_ns()}-{os.getpid()}.json"
        Path(self.folder, name).write_text(json.dumps(record))
        return out


def run(spec, executor: str, folder: Path, recording: list) -> dict:
    from llmopt.experiments import ExperimentStore
    from llmopt.jobs.sweepjob import run_sweep_job

    folder.mkdir(parents=True)
    store = ExperimentStore(folder / "experiments.sqlite")
    payload = run_sweep_job(spec, executor=executor, store=store, task_fn=Timed(str(folder)))
    records = [json.loads(p.read_text()) for p in folder.glob("*-*.json")]
    phase = max(r["end"] for r in records) - min(r["start"] for r in records)
    compute = sum(r["end"] - r["start"] for r in records) / len(records)
    nodes = sorted({r["node"] for r in records})
    gap = (phase - sum(r["end"] - r["start"] for r in records)) / len(records)
    return {"phase": phase, "task": compute, "gap": gap, "nodes": nodes, "n": len(records),
            "evaluated": payload["evaluated"], "job": payload["seconds"]}  # fmt: skip


def timed_recording(recording: list):
    """Time every ``record_evaluation`` the driver makes (the serial part of a job)."""
    import llmopt.recording as rec

    original = rec.record_evaluation

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            recording.append(time.perf_counter() - start)

    rec.record_evaluation = wrapper


def warm_up(ray) -> float:
    """A first task that imports what every task imports: a worker's one-off start."""

    @ray.remote(num_cpus=1)
    def ready():
        import torch  # noqa: F401

        import llmopt.jobs.tasks  # noqa: F401

        return True

    start = time.perf_counter()
    ray.get(ready.remote())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16, help="test rows per evaluation")
    parser.add_argument("--points", type=int, default=SPEC_VALUES, help="sweep points")
    args = parser.parse_args()
    print(machine.describe())
    import logging

    import ray
    from ray.cluster_utils import Cluster

    from llmopt.jobs.sweepjob import sweep_spec

    values = [round(0.05 * (i + 1), 2) for i in range(args.points)]
    spec = sweep_spec("sparsity", values, ["magnitude"], rows={"limit": args.limit})
    recording: list[float] = []
    timed_recording(recording)
    root = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}

    inline = run(spec, "inline", root / "inline", recording)
    record_s = sum(recording) / len(recording)
    start = time.perf_counter()
    ray.init(address="local", num_cpus=1, include_dashboard=False, **quiet)
    init_s = time.perf_counter() - start
    warm_s = warm_up(ray)
    on_ray = run(spec, "ray", root / "ray", recording)
    ray.shutdown()
    overhead = on_ray["gap"] - inline["gap"]  # time between tasks: scheduling, transfer
    print(f"\n{args.points}-point sparsity sweep, bundled model, {args.limit} rows per evaluation")
    print(f"inline: task phase {inline['phase']:.2f} s, {inline['task']:.3f} s per task")
    print(f"ray (1 CPU): task phase {on_ray['phase']:.2f} s, {on_ray['task']:.3f} s per task")
    print(f"one-off cluster start: ray.init {init_s:.2f} s + first worker {warm_s:.2f} s")
    print(f"between tasks: inline {inline['gap'] * 1000:.0f} ms, ray {on_ray['gap'] * 1000:.0f} ms")
    print(f"Ray overhead per task (time between tasks, beyond in-process): "
          f"{overhead * 1000:+.0f} ms = {100 * overhead / inline['task']:+.1f}% of the "
          "evaluation it runs")  # fmt: skip
    print(
        f"(task phases: inline {inline['phase']:.1f} s, ray {on_ray['phase']:.1f} s; a task "
        "runs slower or faster with the machine's load, which this does not count)"
    )
    print(f"driver recording per task: {record_s * 1000:.0f} ms (serial, in the driver)")

    results = {}
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, **quiet)
        warm_up(ray)
        results[nodes] = run(spec, "ray", root / f"cluster{nodes}", recording)
        ray.shutdown()
        cluster.shutdown()
    one, two = results[1], results[2]
    print("\nsimulated cluster (ray.cluster_utils.Cluster, 1 CPU per node, one machine):")
    for nodes, r in results.items():
        print(f"  {nodes} node(s): {r['n']} tasks on {len(r['nodes'])} node(s) "
              f"{', '.join(r['nodes'])}; {r['n'] / r['phase']:.2f} tasks/s")  # fmt: skip
    print(f"  two nodes vs one: {one['phase'] / two['phase']:.2f}x throughput "
          f"(this machine has {os.cpu_count()} cores, shared)")  # fmt: skip

    t, o, r = inline["task"], max(overhead, 0.0), record_s
    print("\nprojected throughput (tasks/s) = min(N / (t + o), 1 / r), with")
    print(f"  t = {t:.3f} s per task (measured in-process), o = {o * 1000:.0f} ms Ray overhead, "
          f"r = {r * 1000:.0f} ms driver recording per task")  # fmt: skip
    print("  assumptions: identical 1-CPU nodes, every task the same size, the model and rows")
    print("  already on every node (the one-off start and transfer are not in it), and the")
    print("  driver's recording is the only serial part; nothing beyond two nodes was measured.")
    print("  nodes  tasks/s  16-point sweep")
    for n in (1, 4, 16, 64):
        rate = min(n / (t + o), 1 / r)
        print(f"  {n:>5}  {rate:7.2f}  {args.points / rate:6.1f} s")


if __name__ == "__main__":
    main()
