"""Tiny random causal LMs of four families, saved as safetensors checkpoints once per session
and loaded through ``load_causal_lm``."""

from __future__ import annotations

import pytest
from lmtiny import FAMILIES, make_tiny_lm

from llmopt.lm.load import load_causal_lm


@pytest.fixture(scope="session")
def lm_dirs(tmp_path_factory):
    """{family: checkpoint folder} of tiny random causal LMs."""
    root = tmp_path_factory.mktemp("tiny_lms")
    return {f: make_tiny_lm(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session")
def lms(lm_dirs):
    """{family: LoadedLM} in fp32 on the CPU."""
    return {f: load_causal_lm(str(d), dtype="fp32", device="cpu") for f, d in lm_dirs.items()}
