"""Where a job's tasks run: in this process, in a local process pool, or on Ray.

Every executor has ``run(fn, shared, items, resources)``: it sends ``shared`` (the base model,
the rows) to its workers once, runs ``fn(shared, item)`` for each ``(key, item)`` and yields
``(key, outcome)`` as tasks finish, in any order, and ``(None, None)`` now and then while it
waits, so the driver can poll for Cancel. Closing the iterator early (Cancel) stops the tasks
still queued. Workers never touch the experiment store; the driver records each outcome.

A worker that dies (killed, out of memory) is retried a bounded number of times: Ray retries
the task (``max_retries``), the pool is rebuilt and the unfinished tasks resubmitted. An
outcome is yielded once per key, so nothing is recorded twice.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmopt.errors import Fix, LlmoptError

EXECUTORS = ("inline", "local", "ray")
RAY_ADDRESS_ENV = "LLMOPT_RAY_ADDRESS"
RETRIES = 2  # times a task whose worker died is tried again
TICK_S = 0.5  # how often a waiting executor hands control back to the driver
CONNECT_TIMEOUT_S = 5.0

Item = tuple[str, Any]  # (task key, what fn gets)


class InlineExecutor:
    """Tasks one after another in this process (the default: today's behaviour)."""

    name = "inline"

    def run(self, fn: Callable, shared: dict, items: list[Item], resources: dict) -> Iterator:
        for key, item in items:
            yield key, fn(shared, item)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- a local process pool

_SHARED: dict | None = None  # a pool worker's copy of the shared inputs


def _init_worker(blob: bytes) -> None:
    global _SHARED
    _SHARED = pickle.loads(blob)  # noqa: S301 - bytes this driver pickled a moment ago


def _call_in_worker(fn: Callable, item: Any) -> Any:
    return fn(_SHARED, item)


class LocalExecutor:
    """A pool of fresh (spawned) processes on this machine, one task per process at a time.

    Args:
        workers: processes; default the machine's cores divided by the threads per task.
        retries: pool rebuilds allowed after a worker died.
    """

    name = "local"

    def __init__(self, workers: int | None = None, retries: int = RETRIES):
        self.workers = workers
        self.retries = retries

    def run(self, fn: Callable, shared: dict, items: list[Item], resources: dict) -> Iterator:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        blob = pickle.dumps(shared)  # once; each worker unpickles it once
        todo = dict(items)
        per_task = max(1, int(resources.get("num_cpus", 1)))
        workers = self.workers or max(1, (os.cpu_count() or 1) // per_task)
        deaths = 0
        while todo:
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(todo)),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(blob,),
            )
            futures = {pool.submit(_call_in_worker, fn, item): key for key, item in todo.items()}
            broken = False
            try:
                pending = set(futures)
                while pending and not broken:
                    done, pending = wait(pending, timeout=TICK_S, return_when=FIRST_COMPLETED)
                    if not done:
                        yield None, None
                    for future in done:
                        try:
                            outcome = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        key = futures[future]
                        del todo[key]
                        yield key, outcome
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
                _kill_workers(pool)
            if broken:
                deaths += 1
                if deaths > self.retries:
                    raise LlmoptError(
                        f"a worker process died {deaths} times (killed, or out of memory); "
                        f"{len(todo)} tasks did not finish",
                        fix=Fix(cli="run the same command again to resume, with --executor "
                                "inline or a smaller --batch-size", app="start the job again"),
                    )  # fmt: skip

    def close(self) -> None:
        pass


def _kill_workers(pool) -> None:
    """End a pool's processes now (a cancelled job must not keep computing)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


# ---------------------------------------------------------------- Ray


def check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, when a Ray address cannot be reached.

    ``auto`` (the cluster this machine belongs to) and ``local`` are left to Ray; a
    ``ray://host:port`` or ``host:port`` address gets a TCP connection within a few seconds.

    Raises:
        LlmoptError: the address is malformed, or nothing answers there.
    """
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise LlmoptError(
            f"the Ray address {address!r} is not auto, ray://HOST:PORT or HOST:PORT",
            fix=Fix(cli=f"pass --ray-address or set {RAY_ADDRESS_ENV}", app="fix the address"),
        )
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__.replace("Error", " error").lower()
        raise LlmoptError(
            f"cannot reach the Ray cluster at {address}: {why}",
            fix=Fix(cli=f"check that the cluster runs and the address (--ray-address, "
                    f"{RAY_ADDRESS_ENV}) is right", app="check the cluster's address"),
        ) from None  # fmt: skip


_RAY_SHARED: dict[str, Any] = {}  # a Ray worker's shared inputs, by object id (one job's)


def use_token_auth(environ=os.environ, home: Path | None = None) -> bool:
    """Send Ray's authentication token when one is configured and no mode is chosen.

    ``ray start`` (Ray 2.59 and later) turns token authentication on and writes the token to
    ``~/.ray/auth_token``, but a driver sends it only with ``RAY_AUTH_MODE=token``; without it
    connecting to that cluster fails after half a minute with a message that does not say why.
    An explicit ``RAY_AUTH_MODE`` is left alone. Returns whether token mode was switched on.
    """
    if environ.get("RAY_AUTH_MODE"):
        return False
    token_file = (home or Path.home()) / ".ray" / "auth_token"
    if environ.get("RAY_AUTH_TOKEN") or environ.get("RAY_AUTH_TOKEN_PATH") or token_file.is_file():
        environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def _ray_call(fn: Callable, boxed: list, item: Any) -> Any:
    """Run a task on a Ray worker; the shared inputs are fetched and unpickled once per worker
    (boxed in a list, Ray passes the reference instead of a fresh copy for every task)."""
    import ray

    ref = boxed[0]
    key = ref.hex()
    if key not in _RAY_SHARED:
        _RAY_SHARED.clear()  # another job's model: let it go
        _RAY_SHARED[key] = ray.get(ref)
    return fn(_RAY_SHARED[key], item)


class RayExecutor:
    """Tasks as Ray tasks: on the cluster at ``address``, or a local Ray started with this
    machine's cores (no dashboard) and stopped at ``close``.

    The shared inputs go to the object store once (``ray.put``); each task declares its CPUs
    (and a GPU when the model is on CUDA) and is retried ``retries`` times if its worker dies.

    Raises:
        LlmoptError: Ray is not installed, or the address cannot be reached.
    """

    name = "ray"

    def __init__(self, address: str | None = None, retries: int = RETRIES):
        if address:
            use_token_auth()  # before Ray is imported: it reads the mode then
        try:
            import ray
        except ImportError:
            raise LlmoptError(
                "--executor ray needs Ray: pip install 'llmopt[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        self.retries = retries
        self.started = False
        self.address = address
        if ray.is_initialized():  # a caller's Ray (a test session, a notebook): use it
            return
        quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address:
            check_reachable(address)
            try:
                ray.init(address=address, **quiet)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise LlmoptError(
                    f"cannot connect to the Ray cluster at {address}: {first}",
                    fix=Fix(
                        cli="check the address; a cluster with token authentication needs its "
                        "token here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)",
                        app="check the cluster's address and token",
                    ),
                ) from None
        else:
            ray.init(
                address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet
            )  # a new one, never a cluster found running on this machine
        self.started = True

    def run(self, fn: Callable, shared: dict, items: list[Item], resources: dict) -> Iterator:
        ray = self.ray
        shared_ref = ray.put(shared)  # once per job, whatever the number of tasks
        remote = ray.remote(_ray_call).options(
            num_cpus=resources.get("num_cpus", 1),
            num_gpus=resources.get("num_gpus", 0),
            max_retries=self.retries,
            retry_exceptions=False,  # a task's own error (a bad setting) is not retried
        )
        refs = {remote.remote(fn, [shared_ref], item): key for key, item in items}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=TICK_S)
                if not ready:
                    yield None, None
                for ref in ready:
                    yield refs[ref], self._get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _get(self, ref) -> Any:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (LlmoptError, ValueError, MemoryError)):
                raise cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            raise LlmoptError(
                f"a Ray worker died {self.retries + 1} times on one task ({type(exc).__name__})",
                fix=Fix(cli="run the same command again to resume", app="start the job again"),
            ) from None

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def make_executor(name: str, address: str | None = None):
    """The executor called ``name`` (inline, local or ray); ``address`` is Ray's.

    Raises:
        LlmoptError: an unknown name, an address without Ray, or an unreachable address.
    """
    if name not in EXECUTORS:
        raise LlmoptError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if address and name != "ray":
        raise LlmoptError(f"a Ray address applies to --executor ray, not {name}")
    if name == "ray":
        return RayExecutor(address)
    return LocalExecutor() if name == "local" else InlineExecutor()
