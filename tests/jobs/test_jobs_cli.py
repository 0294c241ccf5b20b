"""``llmopt sweep`` and ``llmopt jobs`` as users run them: resume after the driver is killed,
Cancel from the command line, two jobs writing one store, unreachable clusters, bad input."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from jobhelpers import cli, start_slow_cli, sweep_argv

from llmopt.experiments import ExperimentStore
from llmopt.jobs.store import JobStore


def _wait_for(check, timeout: float = 120, what: str = "the job"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _jobs(store_path):
    if not store_path.exists():
        return []
    return JobStore(ExperimentStore(store_path)).list()


def _variants(store_path) -> list[str]:
    runs = ExperimentStore(store_path).runs(kind="variant")
    return [json.dumps(r.config, sort_keys=True) for r in runs]


def test_a_killed_driver_resumes_where_it_stopped(tiny_bert_dir, tiny_csv, store_path, tmp_path):
    """SIGKILL the driver after two points are recorded; the same command then evaluates only
    the rest and reports the recorded ones as skipped; no point is recorded twice."""
    values = "0.1,0.2,0.3,0.4,0.5,0.6"
    argv = sweep_argv(tiny_bert_dir, tiny_csv, values)
    driver = start_slow_cli(argv, seconds=1.0)
    try:
        _wait_for(lambda: (jobs := _jobs(store_path)) and jobs[0].done >= 2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    (job,) = _jobs(store_path)
    assert job.status == "failed" and 2 <= job.done < 6  # shown as failed: its driver is gone
    recorded = len(_variants(store_path))
    out = tmp_path / "again.json"
    rerun = cli(*argv, "--json", str(out))
    assert rerun.returncode == 0, rerun.stderr
    payload = json.loads(out.read_text())
    assert payload["job_id"] == job.id  # the same job, resumed
    assert payload["skipped"] == recorded and payload["evaluated"] == 6 - recorded
    assert set(payload) == {"job_id", "executor", "evaluated", "skipped", "seconds", "points"}
    assert all(p["run_id"] is not None for p in payload["points"])
    variants = _variants(store_path)
    assert len(variants) == len(set(variants)) == 6
    assert _jobs(store_path)[0].status == "done"
    # the same sweep once more: everything recorded, nothing evaluated
    again = cli(*argv, "--json", str(out))
    assert again.returncode == 0, again.stderr
    assert (json.loads(out.read_text())["evaluated"], json.loads(out.read_text())["skipped"]) == (
        0,
        6,
    )


def test_cancel_from_the_command_line_stops_the_job(tiny_bert_dir, tiny_csv, store_path):
    argv = sweep_argv(tiny_bert_dir, tiny_csv, "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    driver = start_slow_cli(argv, seconds=1.0)
    try:
        job = _wait_for(lambda: (jobs := _jobs(store_path)) and jobs[0].done >= 1 and jobs[0])
        cancel = cli("jobs", "cancel", str(job.id), "--json")
        assert cancel.returncode == 0, cancel.stderr
        assert json.loads(cancel.stdout)["cancel_requested"] is True
        _, stderr = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 3, stderr  # the sweep's 'cancelled' status
    assert f"job {job.id} was cancelled" in stderr
    shown = json.loads(cli("jobs", "show", str(job.id), "--json").stdout)
    assert shown["status"] == "cancelled" and 1 <= shown["progress"]["done"] < 8
    assert len(_variants(store_path)) == shown["progress"]["done"]
    listed = json.loads(cli("jobs", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [job.id]
    again = cli("jobs", "cancel", str(job.id))
    assert again.returncode == 2 and "already cancelled" in again.stderr


def test_two_jobs_at_once_write_one_store(tiny_bert_dir, tiny_csv, store_path):
    """Two drivers with overlapping points run together on one store: both finish, and the
    base run and the shared point are recorded once."""
    first = start_slow_cli(sweep_argv(tiny_bert_dir, tiny_csv, "0,0.2,0.4"), seconds=0.5)
    second = start_slow_cli(sweep_argv(tiny_bert_dir, tiny_csv, "0,0.4,0.6"), seconds=0.5)
    for driver in (first, second):
        _, stderr = driver.communicate(timeout=240)
        assert driver.returncode == 0, stderr
    store = ExperimentStore(store_path)
    assert len(store.runs(kind="base")) == 1
    variants = _variants(store_path)
    assert len(variants) == len(set(variants)) == 3  # 0.2, 0.4 and 0.6
    assert [j.status for j in _jobs(store_path)] == ["done", "done"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unreachable_cluster_fails_in_seconds_naming_it(how, store_path):
    address = f"127.0.0.1:{_free_port()}"
    args = ["sweep", "--knob", "sparsity", "--values", "0.5", "--executor", "ray"]
    env = {}
    if how == "flag":
        args += ["--ray-address", address]
    else:
        env["LLMOPT_RAY_ADDRESS"] = address
    start = time.monotonic()
    done = cli(*args, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "cannot reach" in lines[0]
    assert time.monotonic() - start < 60  # python start and imports; the check itself is ~0 s


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--knob", "nope", "--values", "1"], "unknown sweep knob"),
        (["--knob", "sparsity", "--values", "0.5,x"], "--values"),
        (["--knob", "bits", "--values", "4.5"], "whole number"),
        (["--knob", "sparsity", "--values", ","], "at least one value"),
        (["--knob", "sparsity", "--values", "0.5", "--methods", "nope"], "does not apply"),
        (["--knob", "sparsity", "--values", "0.5", "--sparsity", "0.2"], "swept knob"),
        (["--knob", "sparsity", "--values", "1.5"], "sparsity"),
        (["--knob", "sparsity", "--values", "0.5", "--ray-address", "auto"], "--executor ray"),
        (["--knob", "sparsity", "--values", "0.5", "--json", "/nonexistent/dir/x.json"], "--json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, says, capsys, store_path):
    from llmopt.cli import main

    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not store_path.exists() or _jobs(store_path) == []  # refused before any work


def test_jobs_show_of_an_unknown_job_is_one_line(store_path):
    from llmopt.cli import main

    assert main(["jobs", "show", "41"]) == 2
    assert main(["jobs", "cancel", "x"]) == 2
    assert main(["jobs", "list"]) == 0
