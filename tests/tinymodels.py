"""Tiny random classifiers and toy reviews, built offline (used by conftest and tests)."""

from __future__ import annotations

import numpy as np
import torch

WORDS = (
    "good great tasty love excellent fresh perfect delicious yummy best nice happy "
    "bad awful stale hate terrible bland worst broken poor sad gross weak "
    "the a an is was it this that and but not very so too of to in for with my "
    "coffee tea dog food snack price box bag taste flavor smell order product item "
    "cookie chips sauce candy bread rice pasta soup cereal milk juice water salt sugar "
    "fast slow big small old new hot cold sweet sour bitter crisp soft hard"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + WORDS
POSITIVE = WORDS[:12]
NEGATIVE = WORDS[12:24]
NEUTRAL = WORDS[24:]


def tiny_tokenizer(tmp_dir):
    from transformers import BertTokenizerFast

    vocab = tmp_dir / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True, model_max_length=64)
    return tok


def _save(model, tokenizer, directory):
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def make_tiny(family: str, directory, num_labels: int = 2, seed: int = 0, id2label=None):
    """Build a tiny random ``family`` classifier (bert, distilbert, gpt2) and save it."""
    import transformers as tf

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(directory)
    labels = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    common = {
        "num_labels": num_labels,
        "id2label": labels,
        "label2id": {v: k for k, v in labels.items()},
    }
    if family == "bert":
        config = tf.BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
            **common,
        )
        model = tf.BertForSequenceClassification(config)
    elif family == "distilbert":
        config = tf.DistilBertConfig(
            vocab_size=len(VOCAB),
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=37,
            max_position_embeddings=64,
            **common,
        )
        model = tf.DistilBertForSequenceClassification(config)
    elif family == "gpt2":
        config = tf.GPT2Config(
            vocab_size=len(VOCAB),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=2,  # [CLS]/[SEP] of the tiny vocabulary, not GPT-2's 50256
            eos_token_id=3,
            **common,
        )
        model = tf.GPT2ForSequenceClassification(config)
    else:
        raise ValueError(family)
    return _save(model, tok, directory)


def make_texts(n: int, seed: int = 0, num_classes: int = 2):
    """Short reviews whose label follows their sentiment words (so a head can learn it)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % num_classes
        pool = POSITIVE if label == 0 else NEGATIVE if label == 1 else NEUTRAL[:10]
        words = list(rng.choice(pool, size=rng.integers(1, 4))) + list(
            rng.choice(NEUTRAL, size=rng.integers(2, 14))
        )
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def make_class_texts(n: int, num_classes: int, seed: int = 0):
    """Short texts for ``num_classes`` (up to 40) classes: each class has its own keyword from
    the tiny vocabulary, among filler words no class uses. Labels are ``category_NN``."""
    if num_classes > 40:
        raise ValueError("the tiny vocabulary has keywords for at most 40 classes")
    rng = np.random.default_rng(seed)
    keywords = WORDS[:num_classes]
    filler = WORDS[40:]
    texts, labels = [], []
    for i in range(n):
        label = i % num_classes
        words = [keywords[label]] * int(rng.integers(1, 3))
        words += list(rng.choice(filler, size=rng.integers(2, 10)))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(f"category_{label:02d}")
    return texts, labels


def write_class_csv(path, n: int, num_classes: int, seed: int = 0):
    """A CSV with columns text,label of ``make_class_texts``; returns the path."""
    import pandas as pd

    texts, labels = make_class_texts(n, num_classes, seed)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path
