"""What makes a decoding step cheap: the output head on the last position only, and the
thread count the steps are timed faster with (restored afterwards)."""

from __future__ import annotations

import time

import torch

from llmopt.lm.generate import PROBE_EVERY, StepThreads, continue_prompt


def test_each_step_computes_the_output_head_on_the_last_position_only(lms):
    """Before, the prompt step (and every cache-free step) ran the head on every position."""
    model = lms["gpt2"].model
    ids = lms["gpt2"].tokenizer("good coffee, the beans were")["input_ids"]
    assert len(ids) > 1
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[1]))
    try:
        for use_cache in (True, False):
            continue_prompt(model, ids, max_new_tokens=3, use_cache=use_cache)
    finally:
        handle.remove()
    assert seen == [1] * 6


def test_steps_run_with_the_thread_count_timed_faster_and_it_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        used = []

        def step():  # slower with more threads, as on a busy shared CPU
            used.append(torch.get_num_threads())
            time.sleep(0.02 if used[-1] > 1 else 0.001)

        with StepThreads(torch.device("cpu")) as threads:
            for _ in range(PROBE_EVERY + 6):
                threads.run(step)
        assert used[0] == 2  # the prompt step: torch's count
        assert sorted(used[1:5]) == [1, 1, 2, 2]  # the trial
        assert set(used[5 : PROBE_EVERY + 1]) == {1}  # then the faster
        assert sorted(used[PROBE_EVERY + 1 : PROBE_EVERY + 5]) == [1, 1, 2, 2]  # tried again
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_nothing_changes_off_the_cpu_or_with_one_thread():
    calls = []
    with StepThreads(torch.device("meta")) as threads:
        for _ in range(6):
            threads.run(lambda: calls.append(torch.get_num_threads()))
    assert len(set(calls)) == 1
