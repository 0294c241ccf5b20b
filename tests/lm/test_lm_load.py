"""Loading causal LMs: four families, dtype and device choice, tied embeddings, trust rules,
and the memory check that refuses a model before loading it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from lmtiny import FAMILIES

from llmopt.errors import LlmoptError
from llmopt.lm import device as lm_device
from llmopt.lm import load as lm_load
from llmopt.lm.load import load_causal_lm, local_checkpoint_size
from llmopt.paths import Confinement


def _tied(model) -> bool:
    return (
        model.get_input_embeddings().weight.data_ptr()
        == model.get_output_embeddings().weight.data_ptr()
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_in_eval_mode_on_cpu(lms, family):
    lm = lms[family]
    assert not lm.model.training
    assert lm.dtype == "fp32" and lm.device == "cpu"
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.max_length == 64
    assert lm.tokenizer.pad_token_id is not None
    logits = lm.model(torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, 300)


@pytest.mark.parametrize(
    ("family", "tied"), [("gpt2", True), ("opt", True), ("qwen2", True), ("llama", False)]
)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_tied_embeddings_stay_tied(lm_dirs, family, tied, dtype):
    lm = load_causal_lm(str(lm_dirs[family]), dtype=dtype, device="cpu")
    assert _tied(lm.model) is tied
    assert next(lm.model.parameters()).dtype == lm_device.DTYPES[dtype]


def test_auto_dtype_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(lm_device, "native_bf16", lambda: True)
    assert lm_device.resolve_dtype("auto", cpu, torch.float16) == "bf16"
    monkeypatch.setattr(lm_device, "native_bf16", lambda: False)
    assert lm_device.resolve_dtype("auto", cpu, torch.float16) == "fp32"
    cuda = torch.device("cuda")
    assert lm_device.resolve_dtype("auto", cuda, torch.bfloat16) == "bf16"
    assert lm_device.resolve_dtype("auto", cuda, torch.float16) == "fp16"
    assert lm_device.resolve_dtype("auto", cuda, None) == "fp32"
    assert lm_device.resolve_dtype("fp16", cpu, torch.float32) == "fp16"


def test_auto_dtype_loads_what_resolve_says(lm_dirs):
    lm = load_causal_lm(str(lm_dirs["gpt2"]), device="cpu")
    expected = "bf16" if lm_device.native_bf16() else "fp32"
    assert lm.dtype == expected
    assert next(lm.model.parameters()).dtype == lm_device.DTYPES[expected]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_a_gpu_is_refused(lm_dirs):
    with pytest.raises(LlmoptError, match="no CUDA"):
        load_causal_lm(str(lm_dirs["gpt2"]), device="cuda")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"dtype": "int4"}, "dtype 'int4'"), ({"device": "tpu"}, "device 'tpu'")],
)
def test_bad_dtype_or_device(lm_dirs, kwargs, match):
    with pytest.raises(LlmoptError, match=match):
        load_causal_lm(str(lm_dirs["gpt2"]), **kwargs)


def test_checkpoint_size_from_safetensors_headers(lms, lm_dirs):
    size = local_checkpoint_size(lm_dirs["llama"])
    params = sum(p.numel() for p in lms["llama"].model.parameters())
    assert size.elements == params
    assert size.dtype == torch.float32


def test_too_large_for_memory_is_refused_before_loading(lm_dirs, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("from_pretrained must not run for a model that cannot fit")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(lm_load, "available_bytes", lambda device: 10_000)  # 10 kB free
    with pytest.raises(LlmoptError, match=r"needs about .* GB in fp32 .* free; it was not loaded"):
        load_causal_lm(str(lm_dirs["opt"]), dtype="fp32", device="cpu")


def test_auto_map_is_refused(lm_dirs, tmp_path):
    bad = tmp_path / "custom"
    shutil.copytree(lm_dirs["gpt2"], bad)
    config = json.loads((bad / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(LlmoptError, match="custom Python code"):
        load_causal_lm(str(bad), device="cpu")


def test_pickle_only_checkpoint_is_refused(lm_dirs, tmp_path):
    bad = tmp_path / "pickled"
    shutil.copytree(lm_dirs["gpt2"], bad)
    (bad / "model.safetensors").unlink()
    torch.save({}, bad / "pytorch_model.bin")
    with pytest.raises(LlmoptError, match="no safetensors weights"):
        load_causal_lm(str(bad), device="cpu")


def test_a_classifier_is_not_a_causal_lm(tiny_dirs):
    with pytest.raises(LlmoptError, match="BertForSequenceClassification, not a causal"):
        load_causal_lm(str(tiny_dirs["bert"]), device="cpu")


def test_folder_outside_the_server_roots_is_refused(lm_dirs, tmp_path):
    confine = Confinement(roots=(tmp_path.resolve(),), max_bytes=None)
    with pytest.raises(LlmoptError, match="outside the folders this server may read"):
        load_causal_lm(str(lm_dirs["gpt2"]), confine=confine)


def test_not_a_source(tmp_path):
    with pytest.raises(LlmoptError, match="no config.json"):
        load_causal_lm(str(tmp_path))
    with pytest.raises(LlmoptError, match="not a model this tool can load"):
        load_causal_lm("not a model!")


def test_bf16_flags_in_cpuinfo():
    x86 = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n"
    old = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
    assert lm_device.bf16_in_cpuinfo(x86)
    assert not lm_device.bf16_in_cpuinfo(old)
    assert lm_device.bf16_in_cpuinfo(arm)
    assert not lm_device.bf16_in_cpuinfo("")


def test_gpt2_gelu_is_fused_at_load_with_the_same_outputs(lm_dirs):
    """The loader swaps GPT-2's Python ``gelu_new`` for torch's fused tanh GELU: the same
    function (logits equal to float rounding), the config and the saved model unchanged."""
    import transformers as tf
    from transformers.activations import GELUTanh, NewGELUActivation

    lm = load_causal_lm(str(lm_dirs["gpt2"]), dtype="fp32", device="cpu")
    kinds = {type(m) for m in lm.model.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds
    assert lm.model.config.activation_function == "gelu_new"
    plain = tf.GPT2LMHeadModel.from_pretrained(str(lm_dirs["gpt2"]), dtype=torch.float32).eval()
    assert NewGELUActivation in {type(m) for m in plain.modules()}
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
    assert lm_device.fuse_gelu(plain) == 2  # one per block
    assert lm_device.fuse_gelu(plain) == 0  # nothing left to swap


def test_default_batches_stay_within_the_token_cap():
    from llmopt.lm.scoring import MAX_BATCH_TOKENS, batch_size_for

    assert batch_size_for(300, 512) * 512 <= MAX_BATCH_TOKENS
    assert batch_size_for(300, 16) * 16 <= MAX_BATCH_TOKENS
    assert batch_size_for(300, 4 * MAX_BATCH_TOKENS) == 1  # a long window still gets scored
    assert batch_size_for(10**6, 512) >= 1
