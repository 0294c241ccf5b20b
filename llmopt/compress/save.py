"""save_model(): write a compressed model as a plain checkpoint that load_model reads back."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from llmopt.compress.lowrank import LowRankLinear
from llmopt.compress.quantize import is_dynamic_int8
from llmopt.compress.targets import replace
from llmopt.errors import LlmoptError
from llmopt.models import LoadedModel


def save_model(loaded: LoadedModel, directory: str | Path) -> Path:
    """Save a (compressed) model as a normal checkpoint that ``llmopt.load_model`` reads back.

    Hugging Face models are written with ``save_pretrained`` (safetensors) plus the tokenizer;
    the bundled encoder + head model with ``llmopt.train.save_pooled_dir``. Low-rank layers are
    saved as their dense product, so a plain checkpoint loads (the file is not smaller).
    Pruned and quantized weights are saved as their fp32 values (zeros and grid points).

    Args:
        loaded: the model to save.
        directory: destination folder (created; files in it are overwritten).

    Returns:
        The directory.

    Raises:
        LlmoptError: an int8_dynamic model (its packed int8 kernels have no safetensors form),
            or a destination that is an existing file.
    """
    directory = Path(directory)
    if any(is_dynamic_int8(m) for m in loaded.model.modules()):
        raise LlmoptError(
            "an int8_dynamic model cannot be saved as a safetensors checkpoint (torch keeps its "
            "weights in packed int8 kernels); save the model compressed without int8_dynamic "
            "(bits=8 simulates the same weights) and apply int8_dynamic after loading"
        )
    if directory.exists() and not directory.is_dir():
        raise LlmoptError(f"{str(directory)!r} is a file; choose a folder to save the model in")
    model = copy.deepcopy(loaded.model)
    for name, module in list(model.named_modules()):
        if isinstance(module, LowRankLinear):
            replace(model, name, module.to_dense())
    dense = dataclasses.replace(loaded, model=model)
    from llmopt.train import MeanPoolClassifier, save_pooled_dir

    if isinstance(model, MeanPoolClassifier):
        return save_pooled_dir(dense, directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # safetensors
    loaded.tokenizer.save_pretrained(directory)
    return directory
