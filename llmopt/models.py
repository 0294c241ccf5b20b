"""Load classifiers (bundled, local checkpoint, hub id, encoder + trained head) as LoadedModel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from llmopt import sources
from llmopt.atomic import TMP_PREFIX
from llmopt.data import TextDataset, load_dataset
from llmopt.errors import Fix, LlmoptError, train_head_fix
from llmopt.head import load_encoder_classifier, load_pooled_dir
from llmopt.hub import (
    SAFE_KWARGS,
    hub_reachable,
    load_config,
    load_failure,
    model_kwargs,
    refuse_custom_code,
)
from llmopt.loaded import (  # noqa: F401 - re-exported: the model type and its accounting
    PARTIAL_MARKER,
    POOLED_META,
    SAVE_MARKER,
    LoadedModel,
    Progress,
    count_params,
    dense_size_bytes,
    model_facts,
    size_bytes,
)
from llmopt.paths import Confinement, check_folder_files, check_path
from llmopt.sources import is_local, model_source

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def load_model(
    source: str = "bundled",
    *,
    train_data=None,
    train_limit: int | None = None,
    progress: Progress | None = None,
    confine: Confinement | None = None,
) -> LoadedModel:
    """Load a sequence classifier.

    Args:
        source: ``bundled`` (MiniLM encoder + head trained on the bundled reviews), a local
            directory of a Hugging Face sequence-classification checkpoint, a hub id, or
            ``encoder:SRC`` (an encoder with a head trained by llmopt on ``train_data``).
        train_data: the training split for ``encoder:`` sources (default: bundled reviews).
        train_limit: train an ``encoder:`` head on only the first N training rows (tests, demos).
        progress: called with (fraction, message) while a head is trained.
        confine: the folders a server may read; local directories outside them are refused
            (``None``: any folder the user can read, as on the command line).

    Returns:
        The model in eval mode with eager attention.

    Raises:
        LlmoptError: unknown source, unreachable hub, a checkpoint that is not a classifier,
            needs custom code, is an incomplete save, or lies outside ``confine``.
    """
    if not isinstance(source, (str, Path)):
        raise LlmoptError(f"a model source is a string, got {type(source).__name__}")
    if train_limit is not None and (
        not isinstance(train_limit, int) or isinstance(train_limit, bool) or train_limit <= 0
    ):
        raise LlmoptError(f"train_limit must be a positive whole number, got {train_limit!r}")
    if progress is not None and not callable(progress):
        raise LlmoptError("progress must be a callable taking (fraction, message)")
    source = str(source).strip()
    kind, ref = model_source(source)
    if kind in (sources.BUNDLED, sources.ENCODER):
        encoder = "bundled" if kind == sources.BUNDLED else ref.strip()
        if not encoder:
            raise LlmoptError("encoder: needs a source, e.g. encoder:bundled or encoder:bert-base")
        if is_local(encoder) and encoder != "bundled":
            folder = check_path(encoder, kind="dir", what="encoder folder", confine=confine)
            check_folder_files(folder, what="encoder folder", confine=confine)  # vocab.txt too
        if train_data is None:
            train_data = load_dataset("bundled", "train")
        if not isinstance(train_data, TextDataset):
            raise LlmoptError(
                f"train_data must be a TextDataset (from load_dataset), got "
                f"{type(train_data).__name__}"
            )
        return load_encoder_classifier(
            encoder, train_data, source=source, train_limit=train_limit, progress=progress
        )
    if kind == sources.LOCAL:
        path = check_path(source, kind="dir", what="model folder", confine=confine)
        check_folder_files(path, what="model folder", confine=confine)  # vocab.txt too
        return _load_local(path, source)
    if HUB_ID.match(source):
        return _load_hub(source)
    raise LlmoptError(
        f"model source {source!r} is not a model this tool can load",
        fix=Fix(
            cli="use 'bundled', 'encoder:SRC', a checkpoint folder, or a Hugging Face hub id "
            "like 'distilbert-base-uncased-finetuned-sst-2-english'",
            app="type a hub id like 'distilbert-base-uncased-finetuned-sst-2-english' "
            "(letters, digits, '-', '_', '.' and one '/')",
        ),
    )


def check_complete(path: Path, source: str) -> None:
    """Refuse a folder that ``save_model`` began but did not finish.

    Raises:
        LlmoptError: the folder carries the in-progress marker, or a pooled save lacks the
            completion marker, or a file the marker lists is missing or has another size.
    """
    incomplete = LlmoptError(
        f"{source!r} is an incomplete save (the save was interrupted, or files were removed "
        "since); it is not loaded",
        fix=Fix(cli="save the model again", app="save the model again"),
    )
    if (path / PARTIAL_MARKER).exists() or path.name.startswith(TMP_PREFIX):
        raise incomplete  # a save's staging folder, or one moved aside during --overwrite
    marker = path / SAVE_MARKER
    if not marker.is_file():
        if (path / POOLED_META).exists():
            raise incomplete
        return  # a checkpoint llmopt did not write: nothing to check
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        for rel, size in files.items():
            if (path / rel).stat().st_size != int(size):
                raise incomplete
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise incomplete from None


def _load_local(path: Path, source: str) -> LoadedModel:
    check_complete(path, source)
    if (path / POOLED_META).is_file():
        return load_pooled_dir(path, source)
    if not (path / "config.json").is_file():
        raise LlmoptError(
            f"{source!r} has no config.json, so it is not a Hugging Face checkpoint",
            fix=Fix(
                cli="save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)",
                app="choose a folder saved with model.save_pretrained and "
                "tokenizer.save_pretrained",
            ),
        )
    refuse_custom_code(path, source)
    return _from_pretrained(str(path), source)


def _load_hub(repo_id: str) -> LoadedModel:
    # Without network, use the local hub cache only: fail in seconds instead of retrying.
    return _from_pretrained(repo_id, repo_id, local_only=not hub_reachable())


def _from_pretrained(ref: str, source: str, local_only: bool = False) -> LoadedModel:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = load_config(ref, source, local_only)
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise LlmoptError(
            f"{source!r} is a {archs[0]}, not a sequence classifier", fix=train_head_fix(source)
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_only, **SAFE_KWARGS)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            ref,
            attn_implementation="eager",
            dtype=torch.float32,
            output_loading_info=True,
            **model_kwargs(local_only),
        )
    except Exception as exc:
        raise load_failure(ref, exc, local_only) from None
    fresh = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k]
    if fresh:
        raise LlmoptError(
            f"{source!r} has no trained classification head (missing: {', '.join(fresh[:3])}), "
            "so its predictions would be random",
            fix=train_head_fix(source),
        )
    if tokenizer.pad_token_id is None:  # GPT-2 style: pad with end-of-text
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    id2label = model.config.id2label or {}
    labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]
    max_pos: int = (
        getattr(model.config, "max_position_embeddings", None)
        or getattr(model.config, "n_positions", None)
        or 512
    )
    max_length = int(min(tokenizer.model_max_length or 512, max_pos, 512))
    return LoadedModel(model, tokenizer, Path(ref).name or ref, labels, source, max_length)
