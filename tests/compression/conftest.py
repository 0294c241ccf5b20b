"""Tiny models loaded once per module, and a bit-exact state_dict snapshot for the tests."""

from __future__ import annotations

import pytest

import llmopt


@pytest.fixture(scope="module")
def tiny_models(tiny_dirs):
    """{family: LoadedModel} of the tiny bert, distilbert and gpt2 classifiers."""
    return {family: llmopt.load_model(str(path)) for family, path in tiny_dirs.items()}


def _state_bytes(model) -> dict[str, bytes]:
    return {
        k: v.detach().cpu().contiguous().numpy().tobytes() for k, v in model.state_dict().items()
    }


@pytest.fixture()
def state_bytes():
    """A function: model -> {state_dict key: raw bytes}, for bit-exact comparisons."""
    return _state_bytes
