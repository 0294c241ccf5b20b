"""save_model(): write a compressed model as a plain checkpoint that load_model reads back.

A save never leaves a mixed or half-written folder: the checkpoint is built in a temporary
folder beside the target (first file: an in-progress marker; last: ``llmopt_save.json``
listing every file and its size) and renamed into place. ``load_model`` refuses a folder with
the in-progress marker, or whose files differ from the list, as an incomplete save.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from llmopt import __version__, atomic
from llmopt.compression.lowrank import LowRankLinear
from llmopt.compression.quantize import is_dynamic_int8
from llmopt.compression.targets import replace
from llmopt.errors import Fix, LlmoptError
from llmopt.lm.load import LoadedLM
from llmopt.loaded import PARTIAL_MARKER, SAVE_MARKER, LoadedModel, private_copy


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_save_target(
    directory: str | Path, *, source: str | None = None, overwrite: bool = False
) -> Path:
    """Fail before any work when ``directory`` cannot take a save.

    Args:
        directory: where the model will be saved.
        source: the model source it was loaded from (a folder is never overwritten).
        overwrite: whether a non-empty folder may be replaced.

    Returns:
        The resolved directory.

    Raises:
        LlmoptError: the target is a file, the source model's own folder (or a folder holding
            it), a non-empty folder without ``overwrite``, or its parent is not writable.
    """
    if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
        raise LlmoptError(f"the folder to save into must be a path, got {directory!r}")
    target = _resolved(directory)
    if source:
        src = Path(str(source).removeprefix("encoder:")).expanduser()
        if src.exists():
            src = src.resolve()
            if target == src or src.is_relative_to(target):
                raise LlmoptError(
                    f"{str(directory)!r} holds the model being compressed ({source!r}); saving "
                    "there would destroy it",
                    fix=Fix(cli="choose another folder", app="choose another folder"),
                )
    if target.exists() and not target.is_dir():
        raise LlmoptError(f"{str(directory)!r} is a file; choose a folder to save the model in")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise LlmoptError(
            f"folder {str(directory)!r} is not empty",
            fix=Fix(
                cli="choose a new folder, or pass --overwrite to replace its contents",
                app="choose a new folder, or tick 'Overwrite' to replace its contents",
            ),
        )
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LlmoptError(
            f"cannot create {str(directory)!r}: folder {str(parent)!r} is not writable"
        )
    return target


def save_model(
    loaded: LoadedModel | LoadedLM, directory: str | Path, *, overwrite: bool = False
) -> Path:
    """Save a (compressed) model as a normal checkpoint that ``llmopt.load_model`` reads back.

    Hugging Face models (classifiers and causal LMs, which ``load_causal_lm`` reads back) are
    written with ``save_pretrained`` (safetensors) plus the tokenizer; the encoder + head
    model with ``llmopt.head.save_pooled_dir``. Low-rank layers are saved as their dense
    product, so a plain checkpoint loads (the file is not smaller). Pruned and quantized
    weights are saved as their values in the model's float type (zeros and grid points).

    Args:
        loaded: the model to save.
        directory: destination folder; created, or replaced as a whole with ``overwrite``.
        overwrite: replace a non-empty folder (never the folder the model was loaded from).

    Returns:
        The directory.

    Raises:
        LlmoptError: an int8_dynamic model (its packed int8 kernels have no safetensors form),
            or a target ``check_save_target`` refuses.
    """
    if not isinstance(loaded, (LoadedModel, LoadedLM)):
        raise LlmoptError(
            f"save_model needs a LoadedModel or a LoadedLM, got {type(loaded).__name__}"
        )
    if any(is_dynamic_int8(m) for m in loaded.model.modules()):
        raise LlmoptError(
            "an int8_dynamic model cannot be saved as a safetensors checkpoint (torch keeps its "
            "weights in packed int8 kernels); save the model compressed without int8_dynamic "
            "(bits=8 simulates the same weights) and apply int8_dynamic after loading"
        )
    target = check_save_target(directory, source=loaded.source, overwrite=overwrite)
    model = private_copy(loaded.model)
    for name, module in list(model.named_modules()):
        if isinstance(module, LowRankLinear):
            replace(model, name, module.to_dense())
    dense = dataclasses.replace(loaded, model=model)
    from llmopt.head import MeanPoolClassifier, save_pooled_dir

    with atomic.staged_dir(target, replace=True) as tmp:
        (tmp / PARTIAL_MARKER).write_text("save in progress\n", encoding="utf-8")
        if isinstance(model, MeanPoolClassifier):
            save_pooled_dir(dense, tmp)
        else:
            model.save_pretrained(tmp)  # safetensors
            loaded.tokenizer.save_pretrained(tmp)
        files = {
            str(f.relative_to(tmp)): f.stat().st_size
            for f in sorted(tmp.rglob("*"))
            if f.is_file() and f.name != PARTIAL_MARKER
        }
        marker = {"format": 1, "llmopt": __version__, "name": loaded.name, "files": files}
        (tmp / SAVE_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        (tmp / PARTIAL_MARKER).unlink()
    return target
