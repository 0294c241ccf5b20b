"""Fault injection: processes killed (SIGKILL) while they cache a head or save a model, and
corrupted caches. Nothing half-written may ever load silently, and the next run must work.

Kills hit real processes. To make them cheap on a slow machine, most run as children forked
from a helper that imported torch/transformers/llmopt once (``badinputs.ForkServer``); each
child runs ``llmopt.cli.main(argv)`` exactly as ``python -m llmopt`` does. A few kills hit
``python -m llmopt`` itself. Deterministic kill points are made by stalling the child at a
chosen step (it writes a flag file, then sleeps until killed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from badinputs import (
    ROOT,
    TMP_PREFIX,
    ForkServer,
    assert_clean_failure,
    head_folder_problems,
    leftovers,
    run_cli,
)
from tinymodels import make_texts

import llmopt
from llmopt.errors import LlmoptError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    import pandas as pd

    texts, labels = make_texts(50)
    path = tmp_path_factory.mktemp("fault_data") / "reviews.csv"
    pd.DataFrame({"text": texts, "label": ["pos" if y == 0 else "neg" for y in labels]}).to_csv(
        path, index=False
    )
    return path


@dataclass
class Scenario:
    """One child process and when to kill it."""

    name: str
    delay: float | None = None  # kill this many seconds after it started
    fault: str | None = None  # kill when it stalls at this fault point (badinputs.FAULTS)
    watch: Path | None = None  # kill as soon as a .llmopt-tmp-* entry appears in this folder
    extra: list[str] = field(default_factory=list)
    # filled in by run_scenarios
    home: Path | None = None
    pid: int | None = None
    start: float = 0.0
    flag: Path | None = None
    log: Path | None = None
    killed: bool = False
    status: int | None = None

    def output(self) -> str:
        return (
            self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
        )


def run_scenarios(
    server: ForkServer, scenarios: list[Scenario], argv, tmp: Path, timeout: float = 240
) -> None:
    """Start every scenario's child at once, kill each at its point, reap them all."""
    for s in scenarios:
        s.home = s.home or tmp / s.name / "home"
        s.home.mkdir(parents=True, exist_ok=True)
        s.flag = tmp / s.name / "stalled.flag"
        s.log = tmp / s.name / "log.txt"
        env = {"LLMOPT_HOME": str(s.home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        s.pid = server.run(argv(s), env=env, log=s.log, fault=s.fault, flag=s.flag)
        s.start = time.monotonic()
    deadline = time.monotonic() + timeout
    last_poll = 0.0
    pending = list(scenarios)
    while pending:
        now = time.monotonic()
        for s in list(pending):
            trigger = (
                (s.delay is not None and now - s.start >= s.delay)
                or (s.fault is not None and s.flag.exists())
                or (s.watch is not None and leftovers(s.watch))
            )
            if trigger or now > deadline:
                s.status = server.kill(s.pid)
                s.killed = True
                pending.remove(s)
                assert now <= deadline, f"{s.name}: still running after {timeout} s\n{s.output()}"
        if pending and now - last_poll > 0.05:
            last_poll = now
            for s in list(pending):
                status = server.poll(s.pid)
                if status is not None:
                    s.status = status
                    pending.remove(s)
        time.sleep(0.001)
    for s in scenarios:
        if s.killed:  # SIGKILL, or its own exit status if it finished just before the kill
            assert s.status is not None
        else:
            assert s.status == 0, f"{s.name}: exited {s.status}\n{s.output()}"
        if s.fault is not None:
            assert s.killed and s.flag.exists(), f"{s.name}: never reached {s.fault}\n{s.output()}"


# ------------------------------------------------------------------ (a) killed head training


def _prepare_argv(bert: Path, reviews: Path):
    return lambda s: ["prepare", "--model", f"encoder:{bert}", "--dataset", str(reviews)]


def _rerun_prepare(home: Path, bert: Path, reviews: Path, capsys, monkeypatch) -> list[str]:
    monkeypatch.setenv("LLMOPT_HOME", str(home))
    rc, out, err = run_cli(
        ["prepare", "--model", f"encoder:{bert}", "--dataset", str(reviews)], capsys
    )
    assert rc == 0, f"the run after the kill failed:\n{err}"
    assert "ready:" in out
    return sorted(p.name for p in (home / "heads").iterdir())


def test_python_m_llmopt_killed_early_then_rerun_works(
    tiny_bert_dir, reviews, tmp_path, capsys, monkeypatch
):
    """``python -m llmopt prepare`` killed 0.2, 0.5 and 1 s after it started."""
    for delay in (0.2, 0.5, 1.0):
        home = tmp_path / f"home-{delay}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmopt", "prepare", "--model", f"encoder:{tiny_bert_dir}",
             "--dataset", str(reviews)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "LLMOPT_HOME": str(home)}, cwd=ROOT,
        )  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        entries = _rerun_prepare(home, tiny_bert_dir, reviews, capsys, monkeypatch)
        assert len(entries) == 1, entries
        assert head_folder_problems(home / "heads") == []


def test_killed_head_training_leaves_no_partial_head(
    server, tiny_bert_dir, reviews, tmp_path, capsys, monkeypatch
):
    scenarios = [
        Scenario("after-0.2s", delay=0.2),
        Scenario("after-0.5s", delay=0.5),
        Scenario("after-1s", delay=1.0),
        Scenario("after-2s", delay=2.0),
        Scenario("head-file-written", fault="head_save"),
        Scenario("head-folder-complete-not-renamed", fault="head_rename"),
    ]
    polled = Scenario("staging-folder-appears")
    polled.home = tmp_path / polled.name / "home"
    polled.watch = polled.home / "heads"
    scenarios.append(polled)
    run_scenarios(server, scenarios, _prepare_argv(tiny_bert_dir, reviews), tmp_path)
    problems = {}
    for s in scenarios:
        heads = s.home / "heads"
        if s.fault is not None:  # killed mid-write: only the temporary folder exists
            names = sorted(p.name for p in heads.iterdir())
            assert len(names) == 1 and names[0].startswith(TMP_PREFIX), (s.name, names)
        entries = _rerun_prepare(s.home, tiny_bert_dir, reviews, capsys, monkeypatch)
        found = head_folder_problems(heads)
        if found or len(entries) != 1:
            problems[s.name] = found or entries
    assert not problems, f"head cache after kill + rerun: {problems}"


# ------------------------------------------------------------------ (b) corrupted head cache


@pytest.fixture(scope="module")
def train_split():
    texts, labels = make_texts(40)
    return llmopt.TextDataset(texts, np.array(labels), ["neg", "pos"], name="tiny", split="train")


@pytest.fixture(scope="module")
def cached_home(tmp_path_factory, tiny_bert_dir, train_split):
    """A home whose heads/ holds one good head for the tiny encoder; returns (home, logits)."""
    home = tmp_path_factory.mktemp("good_home")
    old = os.environ.get("LLMOPT_HOME")
    os.environ["LLMOPT_HOME"] = str(home)
    try:
        loaded = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train_split)
    finally:
        os.environ["LLMOPT_HOME"] = old if old is not None else ""
        if old is None:
            del os.environ["LLMOPT_HOME"]
    return home, _head(loaded)


def _head(loaded) -> dict:
    return {k: v.detach().clone() for k, v in loaded.model.classifier.state_dict().items()}


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


CORRUPTIONS = {
    "empty-meta": lambda f: (f / "meta.json").write_text(""),
    "garbage-meta": lambda f: (f / "meta.json").write_bytes(b"\x00\xff{not json"),
    "meta-is-a-list": lambda f: (f / "meta.json").write_text("[1, 2]"),
    "meta-other-key": lambda f: (f / "meta.json").write_text(
        json.dumps({**json.loads((f / "meta.json").read_text()), "key": "0123456789abcdef"})
    ),
    "meta-missing": lambda f: (f / "meta.json").unlink(),
    "truncated-head": lambda f: _truncate(f / "head.safetensors", 40),
    "empty-head": lambda f: _truncate(f / "head.safetensors", 0),
    "head-missing": lambda f: (f / "head.safetensors").unlink(),
    "head-wrong-shape": lambda f: __import__("safetensors.torch").torch.save_file(
        {"weight": torch.zeros(3, 32), "bias": torch.zeros(3)}, str(f / "head.safetensors")
    ),
    "empty-folder": lambda f: [p.unlink() for p in f.iterdir()],
    "folder-is-a-file": lambda f: (shutil.rmtree(f), f.write_text("oops")),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_cached_head_is_rebuilt(
    kind, cached_home, tiny_bert_dir, train_split, tmp_path, monkeypatch
):
    good_home, good_head = cached_home
    home = tmp_path / "home"
    shutil.copytree(good_home, home)
    monkeypatch.setenv("LLMOPT_HOME", str(home))
    (folder,) = (home / "heads").iterdir()
    CORRUPTIONS[kind](folder)
    loaded = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train_split)
    notes = " ".join(loaded.notes)
    assert "trained again" in notes or "rebuilt" in notes, loaded.notes
    for name, tensor in _head(loaded).items():
        torch.testing.assert_close(tensor, good_head[name])
    assert head_folder_problems(home / "heads") == []
    assert [p.name for p in (home / "heads").iterdir()] == [folder.name]
    again = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train_split)
    assert not any("trained again" in n for n in again.notes), "the rebuilt head was not cached"


# ------------------------------------------------------------------ (c) killed --save-model


@pytest.fixture(scope="module")
def reference_save(tmp_path_factory, tiny_bert_dir, reviews):
    """A complete save of the tiny model compressed with --sparsity 0.5, made in-process."""
    from llmopt.cli import main

    target = tmp_path_factory.mktemp("reference") / "saved"
    assert main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(reviews),
                 "--sparsity", "0.5", "--save-model", str(target)]) == 0  # fmt: skip
    return target


def _state(folder: Path) -> dict:
    return {
        k: v.detach().clone() for k, v in llmopt.load_model(str(folder)).model.state_dict().items()
    }


def _assert_loads_fully(folder: Path, reference: dict, what: str) -> None:
    try:
        state = _state(folder)
    except LlmoptError as exc:
        raise AssertionError(f"{what}: {folder.name} exists but does not load: {exc}") from None
    assert state.keys() == reference.keys(), what
    for k in reference:
        torch.testing.assert_close(state[k], reference[k], msg=f"{what}: {k} differs")


def test_killed_save_never_leaves_a_folder_that_loads_half(
    server, tiny_bert_dir, reviews, reference_save, tmp_path, capsys
):
    reference = _state(reference_save)
    scenarios = [
        Scenario("after-0.3s", delay=0.3),
        Scenario("after-1s", delay=1.0),
        Scenario("after-2s", delay=2.0),
        Scenario("weights-written", fault="save_weights"),
        Scenario("staging-complete-not-renamed", fault="save_rename"),
        Scenario(
            "replacing-staging-complete-not-renamed", fault="save_rename", extra=["--overwrite"]
        ),  # fmt: skip
    ]
    polled = Scenario("staging-folder-appears")
    polled.watch = tmp_path / polled.name / "out"
    scenarios.append(polled)
    for s in scenarios:
        out = tmp_path / s.name / "out"
        out.mkdir(parents=True)
        if "--overwrite" in s.extra:
            shutil.copytree(reference_save, out / "saved")

    def argv(s):
        return ["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(reviews),
                "--sparsity", "0.5", "--save-model", str(tmp_path / s.name / "out" / "saved"),
                *s.extra]  # fmt: skip

    run_scenarios(server, scenarios, argv, tmp_path)
    failures = []
    for s in scenarios:
        out = tmp_path / s.name / "out"
        target = out / "saved"
        if target.exists():
            _assert_loads_fully(target, reference, s.name)
        for name in leftovers(out):  # what a crash left behind must never load
            try:
                llmopt.load_model(str(out / name))
            except LlmoptError as exc:
                if "incomplete save" not in str(exc):
                    failures.append(f"{s.name}: {name} refused, but not as incomplete: {exc}")
            else:
                failures.append(f"{s.name}: the leftover staging folder {name} loads silently")
        if s.fault is not None:
            assert leftovers(out), f"{s.name}: no staging folder at the fault point"
        # the next save to the same folder works and cleans up after the killed one
        rc, _, err = run_cli(
            ["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(reviews),
             "--sparsity", "0.5", "--save-model", str(target), "--overwrite"],
            capsys,
        )  # fmt: skip
        assert rc == 0, f"{s.name}: the save after the kill failed: {err}"
        _assert_loads_fully(target, reference, f"{s.name} (saved again)")
        assert not leftovers(out), f"{s.name}: leftovers after saving again: {leftovers(out)}"
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ (d) failed head training


def _boom(*args, **kwargs):
    raise ValueError("the solver did not converge (injected)")


def test_failed_head_training_leaves_no_folder(tiny_bert_dir, train_split, tmp_path, monkeypatch):
    import llmopt.head

    monkeypatch.setenv("LLMOPT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(llmopt.head, "fit_head", _boom)
    with pytest.raises(ValueError, match="injected"):
        llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train_split)
    heads = tmp_path / "home" / "heads"
    assert not heads.exists() or not any(heads.iterdir()), list(heads.iterdir())


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "ctrl-c"],
)
def test_failed_head_write_leaves_no_folder(
    error, tiny_bert_dir, reviews, tmp_path, capsys, monkeypatch
):
    """The head file is half written when the write fails: nothing may stay under heads/."""
    import llmopt.head

    def half_written(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
        raise error

    monkeypatch.setenv("LLMOPT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(llmopt.head, "save_file", half_written)
    rc, out, err = run_cli(
        ["prepare", "--model", f"encoder:{tiny_bert_dir}", "--dataset", str(reviews)], capsys
    )
    assert "Traceback" not in out + err
    if isinstance(error, KeyboardInterrupt):
        assert rc == 130
    else:
        assert_clean_failure(rc, out.replace("\r", ""), err.split("\r")[-1], r"No space left")
    heads = tmp_path / "home" / "heads"
    assert not heads.exists() or not any(heads.iterdir()), list(heads.iterdir())


def test_internal_error_in_head_training_is_one_line_not_a_traceback(
    tiny_bert_dir, reviews, tmp_path, capsys, monkeypatch
):
    """A bug (here: a RuntimeError that is not about memory) is reported as one
    ``llmopt: internal error`` line with exit status 1, and leaves no head folder."""
    import llmopt.head

    def crash(*args, **kwargs):
        raise RuntimeError("injected failure inside the solver")

    monkeypatch.delenv("LLMOPT_DEBUG", raising=False)
    monkeypatch.setenv("LLMOPT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(llmopt.head, "fit_head", crash)
    try:
        rc, out, err = run_cli(
            ["prepare", "--model", f"encoder:{tiny_bert_dir}", "--dataset", str(reviews)], capsys
        )
    except RuntimeError as exc:
        pytest.fail(f"llmopt.cli.main let a RuntimeError escape (a traceback for the user): {exc}")
    lines = [line for line in err.split("\r")[-1].splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("llmopt: internal error"), err
    heads = tmp_path / "home" / "heads"
    assert not heads.exists() or not any(heads.iterdir())
