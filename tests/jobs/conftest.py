"""Jobs tests: one local Ray cluster per test session (2 CPUs, no dashboard), tiny models."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_address():
    """The address of a local Ray cluster started once for the session (2 CPUs, no dashboard);
    this process stays connected to it, so in-process jobs use it too."""
    try:
        import ray
    except ImportError as exc:  # the only reason to skip: Ray cannot be installed here
        pytest.skip(f"Ray is not installed ({exc}); pip install -e .[ray]")
    import logging

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture()
def store_path(tmp_path, monkeypatch):
    """A fresh experiment store for this test (subprocesses inherit it)."""
    path = tmp_path / "experiments.sqlite"
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(path))
    return path
