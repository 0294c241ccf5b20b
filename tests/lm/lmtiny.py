"""Tiny random causal LMs of four families and a byte-level BPE tokenizer, built offline."""

from __future__ import annotations

import numpy as np
import torch

FAMILIES = ("gpt2", "opt", "llama", "qwen2")
VOCAB_SIZE = 300  # 256 byte symbols + 3 special tokens + ~40 merges
EOT, BOS, EOS = "<|endoftext|>", "<s>", "</s>"

_WORDS = (
    "good great tasty love fresh perfect bad awful stale bland the a is was it this and but "
    "not very coffee tea dog food snack price box taste flavor order cookie chips sauce café "
    "crème brûlée naïve 🍪 jalapeño"
).split()


def make_docs(n: int, seed: int = 0, *, min_words: int = 1, max_words: int = 40) -> list[str]:
    """Short review-like texts with accents, an emoji, punctuation and runs of spaces."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        words = rng.choice(_WORDS, size=int(rng.integers(min_words, max_words + 1)))
        seps = rng.choice([" ", " ", " ", ", ", ". ", "  ", "\n"], size=len(words))
        docs.append("".join(w + s for w, s in zip(words, seps, strict=True)).strip())
    return docs


def train_tokenizer(directory, *, bos: bool = False):
    """A byte-level BPE tokenizer (``tokenizers``) trained on generated texts, saved to
    ``directory``. ``bos=True``: Llama-style, it prepends ``<s>`` to every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOT, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(make_docs(400, seed=123), trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS if bos else EOT,
        eos_token=EOS if bos else EOT,
        model_max_length=64,
    )
    fast.save_pretrained(directory)
    return fast


def make_tiny_lm(family: str, directory, seed: int = 0):
    """Build a tiny random ``family`` causal LM with its tokenizer and save both (safetensors)."""
    import transformers as tf

    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(directory, bos=family == "llama")
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    torch.manual_seed(seed)
    if family == "gpt2":  # Conv1D layers, tied embeddings
        config = tf.GPT2Config(
            vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64, **ids
        )
    elif family == "opt":
        config = tf.OPTConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            word_embed_proj_dim=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            pad_token_id=tok.eos_token_id,
            **ids,
        )
    elif family == "llama":  # grouped-query attention, rotary positions, untied head
        config = tf.LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            **ids,
        )
    elif family == "qwen2":  # GQA with q/k/v biases, tied embeddings
        config = tf.Qwen2Config(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **ids,
        )
    else:
        raise ValueError(family)
    model = tf.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random weights are tiny; larger ones give non-trivial predictions
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory
