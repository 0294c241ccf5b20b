"""Load a Hugging Face causal language model (local folder or hub id) as a LoadedLM, with the
project's trust rules, a chosen float type and device, and a memory check before loading."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmopt.errors import Fix, LlmoptError
from llmopt.hub import (
    SAFE_KWARGS,
    hub_reachable,
    load_config,
    load_failure,
    model_kwargs,
    quiet_hub_logs,
    refuse_custom_code,
)
from llmopt.lm.device import (
    DTYPES,
    available_bytes,
    fuse_gelu,
    resolve_device,
    resolve_dtype,
)
from llmopt.loaded import Progress
from llmopt.models import HUB_ID, check_complete
from llmopt.paths import Confinement, check_path
from llmopt.sources import is_local

BUNDLED_LM = "lm:bundled"  # the LM pre-trained here at first use (llmopt.lm.pretrain)
MEMORY_MARGIN = 1.2  # weights plus activations, allocator slack and the tokenizer
HEADER_CAP = 100_000_000  # a safetensors header larger than this is not a checkpoint we read
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2}
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


@dataclass
class LoadedLM:
    """A causal language model ready for inference: eval mode, on one device, one float type."""

    model: nn.Module  # returns .logits (batch, seq, vocab); accepts past_key_values
    tokenizer: Any  # a transformers tokenizer (untyped library)
    name: str
    source: str
    dtype: str  # fp32 | bf16 | fp16: what the weights are stored and computed in
    device: str  # cpu | cuda | cuda:N
    max_length: int | None = None  # the model's position limit (None: it states none)
    notes: list[str] = field(default_factory=list)
    size_bytes: int | None = None  # storage of a compressed model; None = its dense tensors
    # What compression left (masks, grid scales): ``llmopt.compression.engine.compression_state``;
    # None for an uncompressed model.
    compression: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CheckpointSize:
    """What a checkpoint's safetensors headers say: tensor elements and their stored dtype."""

    elements: int
    dtype: torch.dtype | None  # the float type most elements are stored in


def load_causal_lm(
    source: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    confine: Confinement | None = None,
    attn_implementation: str | None = None,
    progress: Progress | None = None,
) -> LoadedLM:
    """Load a causal LM that ``AutoModelForCausalLM`` loads without remote code.

    Args:
        source: a local checkpoint folder, a Hugging Face hub id, or ``lm:bundled`` (a small
            GPT-2-style LM pre-trained here on the bundled reviews at first use, then cached:
            ``llmopt.lm.pretrain``).
        dtype: ``auto`` (the checkpoint's float type on CUDA, bf16 on a CPU with native bf16,
            else fp32), ``fp32``, ``bf16`` or ``fp16``.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        confine: the folders a server may read (``None``: anywhere, as on the command line).
        attn_implementation: passed to transformers (``eager`` for attention maps); default:
            the library's choice (SDPA), which is faster.
        progress: ``(fraction, message)`` callback while ``lm:bundled`` is pre-trained.

    Returns:
        The model in eval mode on the device, and its tokenizer (with a pad token).

    Raises:
        LlmoptError: an unknown source, a folder outside ``confine`` or without config.json or
            safetensors weights, custom code (``auto_map``), a checkpoint that is not a causal
            LM, a model larger than the free memory, or a failed load.
    """
    if not isinstance(source, (str, Path)):
        raise LlmoptError(f"a model source is a string, got {type(source).__name__}")
    source = str(source).strip()
    torch_device = resolve_device(device)
    if dtype != "auto" and dtype not in DTYPES:
        raise LlmoptError(f"dtype {dtype!r} is not one of: auto, {', '.join(DTYPES)}")
    if source == BUNDLED_LM:
        from llmopt.lm.pretrain import bundled_lm

        return bundled_lm(
            dtype=dtype, device=device, attn_implementation=attn_implementation, progress=progress
        )
    if is_local(source):
        path = check_path(source, kind="dir", what="model folder", confine=confine)
        check_complete(path, source)
        if not (path / "config.json").is_file():
            raise LlmoptError(
                f"{source!r} has no config.json, so it is not a Hugging Face checkpoint",
                fix=Fix(
                    cli="save one with model.save_pretrained(dir) and "
                    "tokenizer.save_pretrained(dir)",
                    app="choose a folder saved with save_pretrained",
                ),
            )
        refuse_custom_code(path, source)
        if not any(path.glob("*.safetensors")):
            raise LlmoptError(
                f"{source!r} has no safetensors weights (model.safetensors); language models "
                "are loaded from safetensors only",
                fix=Fix(
                    cli="save it with model.save_pretrained(dir, safe_serialization=True)",
                    app="choose a checkpoint saved as safetensors",
                ),
            )
        ref, local_only, size = str(path), True, local_checkpoint_size(path)
    elif HUB_ID.match(source):
        local_only = not hub_reachable()
        ref, size = source, None
    else:
        raise LlmoptError(
            f"model source {source!r} is not a model this tool can load",
            fix=Fix(
                cli="pass a checkpoint folder or a Hugging Face hub id like 'gpt2'",
                app="type a hub id like 'gpt2' or choose a checkpoint folder",
            ),
        )
    return _from_pretrained(ref, source, local_only, size, dtype, torch_device, attn_implementation)


def _from_pretrained(
    ref: str,
    source: str,
    local_only: bool,
    size: CheckpointSize | None,
    dtype: str,
    device: torch.device,
    attn_implementation: str | None,
) -> LoadedLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = load_config(ref, source, local_only)
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = getattr(config, "architectures", None) or []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        archs and not any(a in causal for a in archs)
    ):
        kind = archs[0] if archs else f"{config.model_type} model"
        raise LlmoptError(
            f"{source!r} is a {kind}, not a causal language model",
            fix=Fix(
                cli="evaluate it with --task classify, or pass a causal LM (GPT-2, OPT, Llama, "
                "Qwen2, …)",
                app="choose a causal language model (GPT-2, OPT, Llama, Qwen2, …)",
            ),
        )
    if size is None:
        size = cached_checkpoint_size(ref) if local_only else hub_checkpoint_size(ref)
    stored = size.dtype if size is not None else None
    stored = stored or _config_dtype(config)
    chosen = resolve_dtype(dtype, device, stored)
    if size is not None:
        check_fits(size, chosen, device, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_only, **SAFE_KWARGS)
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model, info = AutoModelForCausalLM.from_pretrained(
            ref,
            dtype=DTYPES[chosen],
            use_safetensors=True,
            device_map={"": device},
            output_loading_info=True,
            **extra,
            **model_kwargs(local_only),
        )
    except Exception as exc:
        raise load_failure(ref, exc, local_only) from None
    missing = [k for k in info.get("missing_keys", []) if "rotary" not in k]
    if missing:
        raise LlmoptError(
            f"{source!r} lacks trained weights for {', '.join(sorted(missing)[:3])}, so its "
            "predictions would be random",
            fix=Fix(cli="save the whole causal LM", app="choose a complete causal LM"),
        )
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 style: batches pad with end-of-text
    fuse_gelu(model)
    model.eval()
    return LoadedLM(
        model=model,
        tokenizer=tokenizer,
        name=Path(ref).name or ref,
        source=source,
        dtype=chosen,
        device=str(device),
        max_length=position_limit(model.config),
    )


def position_limit(config) -> int | None:
    """How many positions the model was built for (``None`` where the config states none)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _config_dtype(config) -> torch.dtype | None:
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > HEADER_CAP:
            raise ValueError("header too large")
        return json.loads(f.read(length))


def _size_from_headers(headers: list[dict]) -> CheckpointSize:
    elements, by_dtype = 0, dict[str, int]()
    for header in headers:
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            n = math.prod(entry["shape"])
            elements += n
            by_dtype[entry["dtype"]] = by_dtype.get(entry["dtype"], 0) + n
    floats = {k: v for k, v in by_dtype.items() if k in SAFETENSORS_DTYPES}
    stored = SAFETENSORS_DTYPES[max(floats, key=lambda k: floats[k])] if floats else None
    return CheckpointSize(elements, stored)


def local_checkpoint_size(path: Path) -> CheckpointSize | None:
    """Elements and stored float type from the headers of a folder's safetensors files (the
    8-byte length and the JSON that follows; no tensor is read). None if unreadable."""
    try:
        return _size_from_headers([_header(p) for p in sorted(path.glob("*.safetensors"))])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def hub_checkpoint_size(repo_id: str) -> CheckpointSize | None:
    """Parameter counts of a hub checkpoint from its safetensors headers (ranged requests;
    no weights downloaded). None when the hub does not say."""
    try:
        from huggingface_hub import get_safetensors_metadata

        meta = get_safetensors_metadata(repo_id)
        counts = dict(meta.parameter_count)
    except Exception:  # noqa: BLE001 - an estimate only; loading reports real failures
        return None
    floats = {k: v for k, v in counts.items() if k in SAFETENSORS_DTYPES}
    stored = SAFETENSORS_DTYPES[max(floats, key=lambda k: floats[k])] if floats else None
    return CheckpointSize(sum(counts.values()), stored)


def cached_checkpoint_size(repo_id: str) -> CheckpointSize | None:
    """Headers of a hub checkpoint already in the local hub cache (offline), or None."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: loading will say so
        return None
    return local_checkpoint_size(Path(folder))


def check_fits(size: CheckpointSize, dtype: str, device: torch.device, source: str) -> None:
    """Refuse, before loading, a model whose weights in ``dtype`` exceed the free memory.

    Raises:
        LlmoptError: needed bytes (elements × bytes per element × margin) above what is free.
    """
    free = available_bytes(device)
    need = size.elements * DTYPES[dtype].itemsize * MEMORY_MARGIN
    if free is None or need <= free:
        return
    where = "GPU" if device.type == "cuda" else "this machine"
    smaller = " or --dtype bf16" if dtype == "fp32" else ""
    raise LlmoptError(
        f"{source!r} needs about {need / 1e9:.2f} GB in {dtype} ({size.elements / 1e9:.3g} B "
        f"parameters) but {where} has {free / 1e9:.2f} GB free; it was not loaded",
        fix=Fix(
            cli=f"free memory, use a smaller model{smaller}",
            app="free memory or choose a smaller model or a 16-bit dtype",
        ),
    )


CAUSAL_LM = "causal-lm"  # the model kinds the task registry names
CLASSIFIER = "sequence-classification"


def model_kind(source: str) -> str:
    """``causal-lm`` or ``sequence-classification``, from the source's config alone (no weights).

    ``bundled`` and ``encoder:SRC`` are classifiers; a folder or hub id is a causal LM when its
    config's architectures (else its model type) name one that ``AutoModelForCausalLM`` loads.
    A config that cannot be read counts as a classifier, whose loader then says what is wrong.
    """
    source = str(source).strip()
    if source == BUNDLED_LM:
        return CAUSAL_LM
    if source == "bundled" or source.startswith("encoder:"):
        return CLASSIFIER
    try:
        if is_local(source):
            config = json.loads((Path(source).expanduser() / "config.json").read_text("utf-8"))
        elif HUB_ID.match(source):
            from transformers import AutoConfig

            quiet_hub_logs()
            local_only = not hub_reachable()
            config = AutoConfig.from_pretrained(
                source, local_files_only=local_only, **SAFE_KWARGS
            ).to_dict()
        else:
            return CLASSIFIER
    except Exception:  # noqa: BLE001 - the loader reports a missing or bad config properly
        return CLASSIFIER
    if not isinstance(config, dict):
        return CLASSIFIER
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = config.get("architectures") or []
    if archs:
        causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
        return CAUSAL_LM if any(a in causal for a in archs) else CLASSIFIER
    kind = config.get("model_type")  # no architectures: a decoder-only type (BERT is an encoder)
    decoder = (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )
    return CAUSAL_LM if decoder else CLASSIFIER


def lm_size(lm) -> dict:
    """``size_bytes``, ``params_total``, ``params_nonzero`` by the project's accounting
    (``llmopt.loaded``): a compressed model's own storage when it states one, else its dense
    tensors; tied embeddings counted once."""
    from llmopt.loaded import count_params, dense_size_bytes

    total, nonzero = count_params(lm.model)
    stated = getattr(lm, "size_bytes", None)
    size = stated if stated is not None else dense_size_bytes(lm.model)
    return {"size_bytes": int(size), "params_total": int(total), "params_nonzero": int(nonzero)}
