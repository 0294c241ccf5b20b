"""Every registry method on the decoder blocks of causal LMs of four families: the base model is
never changed, only the blocks' Linear/Conv1D layers are, calibration runs block by block on
token windows with the keyword inputs the model gives each block, and a saved compressed LM
reloads with the same perplexity."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from lmtiny import FAMILIES, make_docs

from llmopt.compression import CompressionConfig, compress, registry, save_model
from llmopt.compression.calibrate import Feeder, window_batches, window_ids
from llmopt.compression.lowrank import LowRankLinear
from llmopt.compression.methods.gptq import quantize_layer
from llmopt.compression.methods.int8 import SmoothedLinear
from llmopt.compression.methods.sparsegpt import prune_layer
from llmopt.compression.quantize import is_dynamic_int8
from llmopt.compression.targets import block_list, get_weight, replace
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.lm.load import LoadedLM, load_causal_lm
from llmopt.lm.perplexity import perplexity
from llmopt.lm.windows import paper_windows

SEQ_LEN = 16
SAMPLES = 8
TRAIN = TextDataset(make_docs(60, seed=1), np.zeros(60), ["text"], name="tiny-train", split="train")
TEST = make_docs(20, seed=2)
# one config per registry method, at the level the papers report: 50%, 4 bits, half the rank
METHODS = {
    "magnitude": {"sparsity": 0.5},
    "wanda": {"sparsity": 0.5, "sparsity_method": "wanda"},
    "sparsegpt": {"sparsity": 0.5, "sparsity_method": "sparsegpt"},
    "rtn": {"bits": 4},
    "gptq": {"bits": 4, "quant_method": "gptq"},
    "svd": {"rank": 16},
    "activation-aware": {"rank": 16, "lowrank_method": "activation-aware"},
    "int8": {"int8_dynamic": True},
    "smoothquant": {"int8_dynamic": True, "smooth_alpha": 0.5},
    "bf16": {"precision": "bf16"},
}
# the layers of one decoder block that get compressed: attention q/k/v/o and the MLP
BLOCK_LAYERS = {
    "gpt2": {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"},
    "opt": {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
        "fc1",
        "fc2",
    },
    "llama": {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    },
}
BLOCK_LAYERS["qwen2"] = BLOCK_LAYERS["llama"]
FIRST_LAYER = {"gpt2": "attn.c_attn", "opt": "self_attn.q_proj"}  # the block's first Linear


def config(method: str, **extra) -> CompressionConfig:
    return CompressionConfig(calibration_samples=SAMPLES, **METHODS[method], **extra)


def state_bytes(model) -> dict[str, bytes]:
    return {
        k: v.detach().cpu().contiguous().float().numpy().tobytes()
        for k, v in model.state_dict().items()
    }


def ppl(lm: LoadedLM) -> float:
    return perplexity(lm, TEST, protocol="paper", seq_len=SEQ_LEN).perplexity


@pytest.fixture(scope="module")
def compressed(lms):
    """A function (family, method) -> (base state bytes before, compressed LM, report),
    compressing each pair once for the tests of this module."""
    done = {}

    def get(family: str, method: str):
        if (family, method) not in done:
            base = lms[family]
            before = state_bytes(base.model)
            out, report = compress(base, config(method), calibration=TRAIN, seq_len=SEQ_LEN)
            done[family, method] = (before, out, report)
        return done[family, method]

    return get


def test_the_test_configs_cover_every_registry_method():
    """A method added to the registry must be added to METHODS (and so be tested on LMs)."""
    listed = {m.name for kw in METHODS.values() for m in registry.active(CompressionConfig(**kw))}
    assert {m.name for m in registry.all_methods()} <= listed


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_compresses_the_decoder_blocks_only(lms, compressed, family, method):
    base = lms[family]
    before, lm, report = compressed(family, method)
    assert state_bytes(base.model) == before  # the input model is never modified
    assert isinstance(lm, LoadedLM) and lm.model is not base.model
    assert lm.tokenizer is base.tokenizer and lm.compression is not None
    blocks = block_list(base.model)
    n_blocks = len(base.model.get_submodule(blocks))
    names = [r["name"] for r in report.rows]
    expected = {f"{blocks}.{i}.{s}" for i in range(n_blocks) for s in BLOCK_LAYERS[family]}
    assert set(names) == expected
    # embeddings and lm_head (tied or not) are untouched, up to the requested float type
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(base.model, get)().weight, getattr(lm.model, get)().weight
        assert torch.equal(new, old.to(new.dtype))
    cfg = config(method)
    for name in names:
        layer = lm.model.get_submodule(name)
        weight = get_weight(layer).float()
        if cfg.prunes:  # exactly the slider's fraction of every targeted layer is zero
            assert float((weight == 0).double().mean()) == 0.5
        if cfg.bits is not None:  # symmetric 4-bit grid per row: at most 15 levels
            assert max(len(torch.unique(row)) for row in weight) <= 15
        if cfg.rank is not None:
            assert isinstance(layer, LowRankLinear) or torch.linalg.matrix_rank(weight) <= 16
        if cfg.int8_dynamic:
            inner = layer.int8 if isinstance(layer, SmoothedLinear) else layer
            assert is_dynamic_int8(inner)
    if cfg.precision == "bf16":
        assert lm.dtype == "bf16"
        assert all(p.dtype == torch.bfloat16 for p in lm.model.parameters())
    else:
        assert lm.dtype == "fp32"
    value = ppl(lm)
    assert math.isfinite(value) and value > 1
    assert lm.size_bytes == report.totals["model_bytes_after"]


SAVEABLE = [m for m in METHODS if not METHODS[m].get("int8_dynamic")]


@pytest.mark.parametrize("method", SAVEABLE)
@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_gives_the_same_perplexity(compressed, tmp_path, family, method):
    _before, lm, _report = compressed(family, method)
    path = save_model(lm, tmp_path / "saved")
    assert any(p.suffix == ".safetensors" for p in path.iterdir())
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in path.rglob("*"))
    reloaded = load_causal_lm(str(path), dtype=lm.dtype, device="cpu")
    assert not any(isinstance(m, LowRankLinear) for m in reloaded.model.modules())
    assert ppl(reloaded) == pytest.approx(ppl(lm), rel=1e-6)


def test_int8_kernels_are_refused_by_save_with_a_clear_error(compressed, tmp_path):
    _before, lm, _report = compressed("llama", "int8")
    with pytest.raises(LlmoptError, match="int8_dynamic"):
        save_model(lm, tmp_path / "saved")


@pytest.mark.parametrize("family", ["gpt2", "qwen2", "llama"])
def test_include_head_compresses_lm_head_and_leaves_tied_embeddings(lms, tmp_path, family):
    """GPT-2 and Qwen2 tie lm_head to the embeddings: compressing the head must not change
    the embeddings, in memory or after a save and reload."""
    base = lms[family]
    before = state_bytes(base.model)
    lm, report = compress(base, CompressionConfig(sparsity=0.5, include_head=True))
    assert state_bytes(base.model) == before
    assert "lm_head" in [r["name"] for r in report.rows]
    head = lm.model.get_output_embeddings().weight
    embed = lm.model.get_input_embeddings().weight
    assert float((head == 0).double().mean()) == 0.5
    assert torch.equal(embed, base.model.get_input_embeddings().weight)
    row = next(r for r in report.rows if r["name"] == "lm_head")
    tied = base.model.get_output_embeddings().weight is base.model.get_input_embeddings().weight
    dense = embed.numel() * embed.element_size()
    # a tied base stored one matrix for both: the untied embeddings are counted with the head
    assert (row["bytes_after"] > dense) == tied and (row["bytes_before"] == dense)
    reloaded = load_causal_lm(str(save_model(lm, tmp_path / "saved")), dtype="fp32", device="cpu")
    assert torch.equal(reloaded.model.get_input_embeddings().weight, embed)
    assert torch.equal(reloaded.model.get_output_embeddings().weight, head)
    assert ppl(reloaded) == pytest.approx(ppl(lm), rel=1e-6)


def one_block(lm: LoadedLM) -> LoadedLM:
    """A copy of ``lm`` keeping its first decoder block only."""
    model = copy.deepcopy(lm.model)
    name = block_list(model)
    replace(model, name, torch.nn.ModuleList(list(model.get_submodule(name))[:1]))
    model.config.num_hidden_layers = 1
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:1]
    return dataclasses.replace(lm, model=model)


def weights(lm: LoadedLM, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: get_weight(lm.model.get_submodule(n)).clone() for n in names}


@pytest.mark.parametrize("method", ["sparsegpt", "gptq", "wanda"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sequential_equals_one_pass_on_a_one_block_model(lms, family, method):
    lm = one_block(lms[family])
    seq, report = compress(lm, config(method), calibration=TRAIN, seq_len=SEQ_LEN)
    one, _ = compress(
        lm, config(method, calibration="one-pass"), calibration=TRAIN, seq_len=SEQ_LEN
    )
    names = [r["name"] for r in report.rows]
    seq_w, one_w = weights(seq, names), weights(one, names)
    assert names and all(torch.equal(seq_w[n], one_w[n]) for n in names)


@pytest.mark.parametrize("family", FAMILIES)
def test_sequential_calibrates_each_block_on_the_compressed_blocks_before_it(lms, family):
    """Block 0 is compressed as one-pass does; block 1 is compressed as one-pass compresses
    it in a model whose block 0 is already compressed — and not as in the dense model."""
    base = lms[family]
    blocks = block_list(base.model)
    cfg = config("sparsegpt")
    seq, report = compress(base, cfg, calibration=TRAIN, seq_len=SEQ_LEN)
    one, _ = compress(
        base, config("sparsegpt", calibration="one-pass"), calibration=TRAIN, seq_len=SEQ_LEN
    )
    first = [r["name"] for r in report.rows if r["name"].startswith(f"{blocks}.0.")]
    second = [r["name"] for r in report.rows if r["name"].startswith(f"{blocks}.1.")]
    seq_w, one_w = weights(seq, first + second), weights(one, first + second)
    assert all(torch.equal(seq_w[n], one_w[n]) for n in first)
    assert any(not torch.equal(seq_w[n], one_w[n]) for n in second)
    mixed = copy.deepcopy(base.model)  # the dense model with sequential's block 0
    mixed.get_submodule(f"{blocks}.0").load_state_dict(
        seq.model.get_submodule(f"{blocks}.0").state_dict()
    )
    mixed_lm = dataclasses.replace(base, model=mixed)
    again, _ = compress(
        mixed_lm,
        config("sparsegpt", calibration="one-pass"),
        calibration=TRAIN,
        seq_len=SEQ_LEN,
        filter_fn=lambda _m, name: name in second,
    )
    for n in second:
        torch.testing.assert_close(
            get_weight(again.model.get_submodule(n)),
            get_weight(seq.model.get_submodule(n)),
            atol=1e-5,
            rtol=1e-5,
        )


def calibration_inputs(model, layer: str, tokenizer) -> torch.Tensor:
    """(tokens, in) inputs of ``layer`` over the calibration windows, from a plain forward
    pass of the whole model."""
    ids = window_ids(tokenizer, TRAIN.texts, SAMPLES, SEQ_LEN)
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, args, _o: seen.append(args[0].detach())
    )
    try:
        with torch.no_grad():
            model(torch.tensor(ids), use_cache=False)
    finally:
        handle.remove()
    return torch.cat(seen).reshape(-1, seen[0].shape[-1]).float()


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * (x.T @ x).double() / x.shape[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_gptq_and_sparsegpt_equal_the_per_layer_functions_on_captured_inputs(lms, family):
    """The per-layer functions are tested against the reference code; here the engine must
    give the same weights on an LM: block 0's first layer on the dense model's inputs, block
    1's first layer on the inputs the model with block 0 compressed gives it."""
    base = lms[family]
    blocks = block_list(base.model)
    suffix = FIRST_LAYER.get(family, "self_attn.q_proj")
    cfg_q, cfg_p = config("gptq"), config("sparsegpt")
    gptq, _ = compress(base, cfg_q, calibration=TRAIN, seq_len=SEQ_LEN)
    sgpt, _ = compress(base, cfg_p, calibration=TRAIN, seq_len=SEQ_LEN)
    for block in (0, 1):
        name = f"{blocks}.{block}.{suffix}"
        weight = get_weight(base.model.get_submodule(name)).float()
        for out, run in (
            (gptq, lambda w, h: quantize_layer(w, h, cfg_q)[0]),
            (sgpt, lambda w, h: prune_layer(w, h, 0.5, None)[0]),
        ):
            source = base.model if block == 0 else out.model  # block 1 sees block 0 compressed
            x = calibration_inputs(source, name, base.tokenizer)
            assert x.shape[0] == SAMPLES * SEQ_LEN
            expected = run(weight, hessian(x))
            torch.testing.assert_close(
                get_weight(out.model.get_submodule(name)), expected, atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_replayed_alone_give_the_full_models_hidden_states(lms, family):
    """Each block run alone on its captured inputs and keyword arguments (attention mask,
    position ids, Llama/Qwen2's rotary ``position_embeddings``) gives what it gives inside the
    whole model. Without the rotary embeddings a Llama block cannot run at all, and with wrong
    positions its outputs differ; the comparison covers every block."""
    base = lms[family]
    model = base.model
    blocks = list(model.get_submodule(block_list(model)))
    ids = window_ids(base.tokenizer, TRAIN.texts, SAMPLES, SEQ_LEN)
    inside = {}
    handles = [
        b.register_forward_hook(
            lambda _m, _a, out, i=i: inside.setdefault(i, out[0] if isinstance(out, tuple) else out)
        )
        for i, b in enumerate(blocks)
    ]
    try:
        with torch.no_grad():
            model(torch.tensor(ids), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    feeder = Feeder(
        model,
        base.tokenizer,
        [],
        max_length=SEQ_LEN,
        blocks=blocks,
        base_id=id(model),
        batches=window_batches(ids),
        key="replay",
    )
    with torch.no_grad():
        for i, block in enumerate(blocks):
            (alone,) = feeder._run_block(block, None)
            torch.testing.assert_close(alone, inside[i], atol=1e-5, rtol=1e-5)
            feeder.advance(i)


def test_calibration_windows_are_the_paper_protocols_windows(lms):
    tok = lms["llama"].tokenizer
    windows, _ids, _ends = paper_windows(tok, TRAIN.texts, SEQ_LEN)
    got = window_ids(tok, TRAIN.texts, SAMPLES, SEQ_LEN)
    assert got == windows.tokens[:SAMPLES]
    assert window_ids(tok, TRAIN.texts[:1], 4, 1000) == [_ids_of(tok, TRAIN.texts[0])]
    with pytest.raises(ValueError, match="fewer than two tokens"):
        window_ids(tok, [""], 4, SEQ_LEN)


def _ids_of(tok, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def test_clear_errors_for_what_an_lm_cannot_take(lms):
    lm = lms["llama"]
    with pytest.raises(LlmoptError, match="seq_len 1000 is longer"):
        compress(lm, config("gptq"), calibration=TRAIN, seq_len=1000)
    with pytest.raises(LlmoptError, match="measures activations on training texts"):
        compress(lm, config("gptq"), seq_len=SEQ_LEN)
    on_gpu = dataclasses.replace(lm, device="cuda")
    with pytest.raises(LlmoptError, match="int8 kernels, which exist on the CPU only"):
        compress(on_gpu, config("int8"))
    with pytest.raises(LlmoptError, match="cannot calibrate"):
        empty = dataclasses.replace(TRAIN, texts=[""], labels=np.zeros(1))
        compress(lm, config("gptq"), calibration=empty, seq_len=SEQ_LEN)


def test_a_bf16_lm_is_compressed_in_fp32_and_kept_in_bf16_unless_on_a_grid(lm_dirs, tmp_path):
    """Pruning a bf16 LM keeps it bf16 (sized at 16 bits a float); quantizing it keeps fp32,
    where the grid points are exact, and says so."""
    lm = load_causal_lm(str(lm_dirs["llama"]), dtype="bf16", device="cpu")
    before = state_bytes(lm.model)
    pruned, report = compress(lm, config("wanda"), calibration=TRAIN, seq_len=SEQ_LEN)
    assert state_bytes(lm.model) == before and lm.model.dtype == torch.bfloat16
    assert pruned.dtype == "bf16"
    assert pruned.model.model.rotary_emb.inv_freq.dtype == torch.float32
    for row in report.rows:
        assert row["sparsity"] == 0.5
        assert row["bytes_after"] < row["bytes_before"]  # half the weights at 16 bits each
    reloaded = load_causal_lm(str(save_model(pruned, tmp_path / "p")), dtype="bf16", device="cpu")
    assert ppl(reloaded) == pytest.approx(ppl(pruned), rel=1e-6)
    quantized, _ = compress(lm, config("gptq"), calibration=TRAIN, seq_len=SEQ_LEN)
    assert quantized.dtype == "fp32"
    assert any("round the quantization grid" in n for n in quantized.notes)


def test_a_sweep_cache_measures_the_dense_first_block_once(lms):
    from llmopt.compression.calibrate import StatsCache

    cache = StatsCache()
    lm = lms["qwen2"]
    first, _ = compress(lm, config("gptq"), calibration=TRAIN, seq_len=SEQ_LEN, cache=cache)
    again, _ = compress(lm, config("gptq"), calibration=TRAIN, seq_len=SEQ_LEN, cache=cache)
    assert cache.hits >= 1
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name])
    compress(lm, config("gptq"), calibration=TRAIN, seq_len=SEQ_LEN + 8, cache=cache)
    assert len(cache.batches) == 2  # other windows: measured anew, not served from the cache
