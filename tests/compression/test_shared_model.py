"""A base model shared between threads (the dashboard's sessions): one thread's temporary
calibration hooks never touch another thread's forward passes, and are never copied into a
compressed copy made meanwhile."""

from __future__ import annotations

import threading

import torch

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.compression.calibrate import _Hooks
from llmopt.loaded import model_lock

LAYER = "bert.encoder.layer.0.attention.self.query"


def _inputs(loaded):
    return loaded.tokenizer(["a short review", "another one"], return_tensors="pt", padding=True)


def test_hooks_of_one_thread_ignore_another_threads_forward_passes(tiny_models):
    loaded = tiny_models["bert"]
    hooks = _Hooks(loaded.model, [LAYER], ("hessian",))
    failures = []

    def other_session():  # evaluates the same model, as evaluate() does: in inference mode
        try:
            with torch.inference_mode():
                loaded.model(**_inputs(loaded))
        except Exception as exc:  # noqa: BLE001 - the failure is what the test reports
            failures.append(exc)

    try:
        thread = threading.Thread(target=other_session)
        thread.start()
        thread.join()
        assert not failures, failures
        assert hooks.stats[LAYER].tokens == 0  # nothing of the other thread was measured
        with torch.no_grad():
            loaded.model(**_inputs(loaded))
        assert hooks.stats[LAYER].tokens > 0  # this thread's pass is
    finally:
        hooks.close()


def test_a_copy_waits_for_temporary_hooks_and_carries_none(tiny_models):
    loaded = tiny_models["bert"]
    done: dict = {}
    lock = model_lock(loaded.model)
    lock.acquire()  # as explain.layer_statistics holds it while its hooks hang on the model
    hooks = _Hooks(loaded.model, [LAYER], ("hessian",))
    worker = threading.Thread(
        target=lambda: done.setdefault("copy", compress(loaded, CompressionConfig(bits=4))[0])
    )
    try:
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive()  # the copy waits for the hooks to go
    finally:
        hooks.close()
        lock.release()
    worker.join()
    copied = done["copy"].model
    assert not any(m._forward_hooks for m in copied.modules())
    assert isinstance(done["copy"], llmopt.LoadedModel)


def test_a_sweeps_shared_statistics_give_the_same_model_as_none(tiny_models, tiny_dataset):
    """The statistics a sweep shares between its points (tokenized texts, the first block's
    inputs, the uncompressed model's statistics) are reused, and change no weight."""
    from llmopt.compression.calibrate import StatsCache
    from llmopt.compression.targets import get_weight

    loaded = tiny_models["bert"]
    cache = StatsCache()
    for sparsity in (0.3, 0.5):
        config = CompressionConfig(sparsity=sparsity, sparsity_method="wanda")
        shared, _ = compress(loaded, config, calibration=tiny_dataset, cache=cache)
        alone, _ = compress(loaded, config, calibration=tiny_dataset)
        for name, module in alone.model.named_modules():
            if isinstance(module, torch.nn.Linear):
                other = get_weight(shared.model.get_submodule(name))
                assert torch.equal(get_weight(module), other), name
    assert cache.hits > 0  # the second point read the first one's statistics
