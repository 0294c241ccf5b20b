"""Helpers for the bad-input, property and fault-injection tests.

- ``run_cli`` / ``assert_clean_failure``: run ``llmopt.cli.main`` in-process and check the
  "bad input exits 2 with one line" contract, and that nothing was written.
- ``make_*``: broken model folders built from the tiny test models.
- ``ForkServer``: a helper process that imports torch, transformers and llmopt once and then
  forks one real child process per command, so fault-injection tests can SIGKILL real processes
  at chosen points without paying seconds of imports per process on a slow machine.

Only the standard library is imported at module level (the fork server's child code imports
llmopt lazily).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TMP_PREFIX = ".llmopt-tmp-"
ERROR_PREFIX = "llmopt: error:"


# ------------------------------------------------------------------ in-process CLI runs


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``llmopt.cli.main(argv)`` in-process: (exit status, stdout, stderr).

    argparse errors leave through ``SystemExit``; its code is the exit status.
    """
    from llmopt.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def leftovers(folder: Path) -> list[str]:
    """Names of unfinished-write temporaries (``.llmopt-tmp-*``) directly in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX))


def assert_clean_failure(
    rc,
    out: str,
    err: str,
    pattern: str,
    *,
    absent: list[Path] = (),
    watch: list[Path] = (),
    context: str = "",
) -> None:
    """The bad-input contract: status 2, exactly one ``llmopt: error:`` line naming the
    problem, no traceback, no output file and no ``.llmopt-tmp-*`` leftover."""
    where = f"[{context}] " if context else ""
    assert "Traceback" not in out + err, f"{where}traceback printed:\n{err}"
    lines = error_lines(err)
    assert rc == 2, f"{where}exit status {rc!r}, expected 2; stderr:\n{err}\nstdout:\n{out[-500:]}"
    assert len(lines) == 1, f"{where}expected exactly one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(ERROR_PREFIX), f"{where}stderr line: {lines[0]!r}"
    assert re.search(pattern, lines[0], re.IGNORECASE), (
        f"{where}message does not name the problem (/{pattern}/): {lines[0]!r}"
    )
    for path in absent:
        assert not os.path.lexists(path), f"{where}{path} was written despite the failure"
    for folder in watch:
        assert not leftovers(folder), f"{where}temporary leftovers in {folder}: {leftovers(folder)}"


def run_module(args: list[str], *, env: dict | None = None, timeout: float = 300, cwd=None):
    """``python -m llmopt ARGS`` in a real process with stdin closed (no prompt can wait)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llmopt", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )


# ------------------------------------------------------------------ broken model folders


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def make_custom_code(src: Path, dst: Path, marker: Path) -> Path:
    """A checkpoint whose config asks for code shipped beside it (``auto_map``); importing
    that code would create ``marker``."""
    copy_model(src, dst)
    (dst / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('custom code ran')\n"
        "from transformers import BertForSequenceClassification\n"
        "class EvilModel(BertForSequenceClassification):\n    pass\n"
    )
    (dst / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('custom code ran')\n"
        "from transformers import BertConfig\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil'\n"
    )
    return edit_config(
        dst,
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
        },
    )


def make_base_model(tiny_bert: Path, dst: Path) -> Path:
    """A BertModel (no classification head at all) saved as a checkpoint."""
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(str(tiny_bert))
    model.save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(dst)
    return dst


def make_headless_classifier(tiny_bert: Path, dst: Path) -> Path:
    """A sequence-classification checkpoint whose classifier weights were removed."""
    from safetensors.torch import load_file, save_file

    copy_model(tiny_bert, dst)
    weights = load_file(str(dst / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if "classifier" not in k}
    assert len(kept) < len(weights)
    save_file(kept, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def make_pickle_checkpoint(tiny_bert: Path, dst: Path, marker: Path) -> Path:
    """A checkpoint whose only weights are a pickle that runs code when unpickled."""
    copy_model(tiny_bert, dst)
    (dst / "model.safetensors").unlink()
    import torch

    class Evil:  # unpickling calls exec(code)
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pickle ran')",))

    torch.save({"bert.embeddings.word_embeddings.weight": Evil()}, dst / "pytorch_model.bin")
    return dst


def write_save_marker(folder: Path, *, tweak: dict | None = None) -> Path:
    """Write an ``llmopt_save.json`` listing the folder's files (sizes changed by ``tweak``)."""
    files = {
        str(f.relative_to(folder)): f.stat().st_size
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }
    files.update(tweak or {})
    marker = {"format": 1, "llmopt": "0.1.0", "name": "x", "files": files}
    (folder / "llmopt_save.json").write_text(json.dumps(marker))
    return folder


# ------------------------------------------------------------------ head cache checks


def head_folder_problems(heads: Path) -> list[str]:
    """What is wrong in ``$LLMOPT_HOME/heads``: anything that is not a complete head folder
    (both files, meta.json valid JSON object, a non-empty safetensors file)."""
    problems = []
    if not heads.exists():
        return problems
    for entry in sorted(heads.iterdir()):
        if not entry.is_dir():
            problems.append(f"{entry.name}: not a folder")
            continue
        if entry.name.startswith(TMP_PREFIX):
            problems.append(f"{entry.name}: unfinished-write leftover")
            continue
        names = sorted(p.name for p in entry.iterdir())
        if names != ["head.safetensors", "meta.json"]:
            problems.append(f"{entry.name}: holds {names}")
            continue
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
            assert isinstance(meta, dict) and meta.get("key") == entry.name
        except Exception as exc:  # noqa: BLE001 - any failure is a problem to report
            problems.append(f"{entry.name}: bad meta.json ({type(exc).__name__})")
            continue
        try:
            from safetensors.torch import load_file

            load_file(str(entry / "head.safetensors"))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{entry.name}: bad head.safetensors ({type(exc).__name__})")
    return problems


# ------------------------------------------------------------------ fork server

# Fault points a forked child can stall at (it writes its flag file, then sleeps until killed).
FAULTS = (
    "head_save",  # heads/<tmp>/head.safetensors written, meta.json not yet
    "head_rename",  # heads/<tmp> complete, not yet renamed into place
    "save_weights",  # --save-model staging folder: weights written, marker files not yet
    "save_rename",  # --save-model staging folder complete, not yet renamed into place
)


class ForkServer:
    """A process that imports llmopt's heavy dependencies once and forks a child per ``run``.

    Children are real processes running ``llmopt.cli.main(argv)`` with their own environment,
    stdout/stderr in a log file and stdin on /dev/null; the test kills them with SIGKILL.
    """

    def __init__(self, timeout: float = 240):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
                "import badinputs; badinputs._serve()",
            ],  # fmt: skip
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.children: set[int] = set()
        line = self._readline(timeout)
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"fork server did not start: {line!r}")

    def _readline(self, timeout: float) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise TimeoutError("fork server did not answer")
        finally:
            sel.close()
        return self.proc.stdout.readline()

    def _ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self._readline(60)
        if not line:
            raise RuntimeError("fork server exited")
        return json.loads(line)

    def run(self, argv: list[str], *, env: dict, log: Path, fault: str | None = None,
            flag: Path | None = None) -> int:  # fmt: skip
        """Start ``llmopt.cli.main(argv)`` in a forked child; returns its pid."""
        pid = self._ask(op="run", argv=argv, env=env, log=str(log), fault=fault,
                        flag=str(flag) if flag else None)["pid"]  # fmt: skip
        self.children.add(pid)
        return pid

    def poll(self, pid: int) -> int | None:
        """The child's exit code (negative: killed by that signal), or None while it runs.
        A finished child is reaped, so its pid is free afterwards."""
        status = self._ask(op="poll", pid=pid)["status"]
        if status is not None:
            self.children.discard(pid)
        return status

    def wait(self, pid: int, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while True:
            status = self.poll(pid)
            if status is not None:
                return status
            if time.monotonic() > deadline:
                self.kill(pid)
                raise TimeoutError(f"child {pid} still running after {timeout} s")
            time.sleep(0.02)

    def kill(self, pid: int) -> int:
        """SIGKILL the child and reap it; returns its exit code."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait(pid, timeout=60)

    def close(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve() -> None:  # pragma: no cover - runs in the fork server process
    import threading

    import pandas  # noqa: F401
    import safetensors.torch  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import tqdm  # noqa: F401
    from transformers import (  # noqa: F401
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertForSequenceClassification,
        BertModel,
        BertTokenizerFast,
    )

    # Everything the children would import lazily, so a fork starts working at once.
    import llmopt.cli  # noqa: F401
    import llmopt.compression  # noqa: F401
    import llmopt.compression.engine  # noqa: F401
    import llmopt.evaluation  # noqa: F401
    import llmopt.head  # noqa: F401
    import llmopt.models  # noqa: F401

    assert threading.active_count() == 1, "threads before fork"
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "run":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(cmd)
            print(json.dumps({"pid": pid}), flush=True)
        elif cmd["op"] == "poll":
            try:
                done, status = os.waitpid(cmd["pid"], os.WNOHANG)
            except ChildProcessError:
                print(json.dumps({"status": -999}), flush=True)
                continue
            code = os.waitstatus_to_exitcode(status) if done else None
            print(json.dumps({"status": code}), flush=True)


def _child(cmd: dict) -> None:  # pragma: no cover - runs in a forked child
    rc = 98
    try:
        fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.environ.update(cmd["env"])
        _install_fault(cmd.get("fault"), cmd.get("flag"))
        from llmopt.cli import main

        rc = main(cmd["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        rc = 97
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def _stall(flag: str) -> None:  # pragma: no cover - runs in a forked child
    with open(flag, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)  # the test kills us here


def _install_fault(fault: str | None, flag: str | None) -> None:  # pragma: no cover
    if fault is None:
        return
    if fault not in FAULTS:
        raise ValueError(fault)
    if fault == "head_save":
        import llmopt.head

        original = llmopt.head.save_file

        def save_file(tensors, filename, *a, **k):
            original(tensors, filename, *a, **k)
            if Path(filename).parent.parent.name == "heads":
                _stall(flag)

        llmopt.head.save_file = save_file
    elif fault in ("head_rename", "save_rename"):
        original_rename = os.rename

        def rename(src, dst, *a, **k):
            src_p, dst_p = Path(src), Path(dst)
            heads = dst_p.parent.name == "heads"
            if src_p.name.startswith(TMP_PREFIX) and heads == (fault == "head_rename"):
                _stall(flag)
            return original_rename(src, dst, *a, **k)

        os.rename = rename
    elif fault == "save_weights":
        from transformers import modeling_utils

        original_save = modeling_utils.PreTrainedModel.save_pretrained

        def save_pretrained(self, directory, *a, **k):
            result = original_save(self, directory, *a, **k)
            if Path(directory).name.startswith(TMP_PREFIX):
                _stall(flag)
            return result

        modeling_utils.PreTrainedModel.save_pretrained = save_pretrained
