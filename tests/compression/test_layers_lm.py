"""Per-layer rules on a causal LM's decoder blocks: a calibrated method (Wanda, block by block)
and quantization honour each matrix's own sparsity and bits, read back from the weights; a
skipped matrix is bit-identical; a save reloads the same weights.

Fails on the code before per-layer rules: ``CompressionConfig`` had no ``layers``/``skip``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lmtiny import make_docs, make_tiny_lm  # noqa: E402

from llmopt.compression import CompressionConfig, compress, save_model  # noqa: E402
from llmopt.compression.targets import get_weight  # noqa: E402
from llmopt.data import TextDataset  # noqa: E402
from llmopt.lm.load import load_causal_lm  # noqa: E402

TRAIN = TextDataset(make_docs(60, seed=1), np.zeros(60), ["text"], name="tiny-train", split="train")
L = "model.layers"
CONFIG = CompressionConfig(
    sparsity=0.5,
    sparsity_method="wanda",
    bits=4,
    calibration_samples=8,
    layers={
        f"{L}.0.*": {"bits": 8},
        "*.self_attn.*": {"sparsity": 0.25},
        f"{L}.1.mlp.up_proj": {"bits": None, "sparsity": 0.75},
        f"{L}.1.mlp.down_proj": {"skip": True},
    },
)


def expected(name: str) -> tuple[float, int | None]:
    """(sparsity, bits) the rules give ``name``: block 0 → 8-bit at 50%; block 1's attention →
    4-bit at 25%; its up_proj → float at 75%; the rest → 4-bit at 50%."""
    if name.startswith(f"{L}.0."):
        return 0.5, 8
    if ".self_attn." in name:
        return 0.25, 4
    if name.endswith("up_proj"):
        return 0.75, None
    return 0.5, 4


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_lm_layers")
    return load_causal_lm(str(make_tiny_lm("llama", root / "llama")), dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def compressed(llama):
    return compress(llama, CONFIG, calibration=TRAIN, seq_len=16)


def state_bytes(model) -> dict[str, bytes]:
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in model.state_dict().items()}


def test_each_decoder_matrix_has_its_own_sparsity_and_bits(llama, compressed):
    lm, report = compressed
    state = lm.compression
    rows = {r["name"]: r for r in report.rows}
    assert f"{L}.1.mlp.down_proj" not in rows
    assert len(rows) == 13  # 7 matrices a block, one skipped
    for name, row in rows.items():
        sparsity, bits = expected(name)
        assert row["bits"] == bits, name
        w = get_weight(lm.model.get_submodule(name))
        cols = w.shape[1]
        mask = state["masks"][name]
        assert (mask.sum(1) == cols - round(sparsity * cols)).all(), name  # Wanda: per row
        assert (w[~mask] == 0).all()
        if bits is None:
            assert name not in state["scales"]
            assert torch.equal(w[mask], get_weight(llama.model.get_submodule(name))[mask])
        else:
            assert state["matrix_bits"][name] == bits
            scales = state["scales"][name]
            k = w / scales
            assert torch.allclose(k, k.round(), atol=1e-4)
            assert k.abs().max() <= 2 ** (bits - 1) - 1
            assert (k.abs().max() > 7) == (bits == 8), name


def test_skipped_matrix_is_bit_identical_and_the_base_untouched(llama, compressed):
    lm, _ = compressed
    before, after = state_bytes(llama.model), state_bytes(lm.model)
    key = f"{L}.1.mlp.down_proj.weight"
    assert after[key] == before[key]
    assert after[f"{L}.0.mlp.down_proj.weight"] != before[f"{L}.0.mlp.down_proj.weight"]
    again = compress(llama, CONFIG, calibration=TRAIN, seq_len=16)[0]
    assert state_bytes(again.model) == after  # deterministic, and the base was not changed


def test_save_and_reload_are_identical(compressed, tmp_path):
    lm, _ = compressed
    path = save_model(lm, tmp_path / "saved")
    reloaded = load_causal_lm(str(path), dtype="fp32", device="cpu")
    assert state_bytes(reloaded.model) == state_bytes(lm.model)
