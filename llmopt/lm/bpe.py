"""A byte-level BPE tokenizer trained here with ``tokenizers`` (GPT-2's scheme): every UTF-8
text encodes and decodes back exactly, and one end-of-text token separates documents."""

from __future__ import annotations

from collections.abc import Iterable

from llmopt.errors import LlmoptError

END_OF_TEXT = "<|endoftext|>"
DEFAULT_VOCAB = 4096


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB):
    """A byte-level BPE tokenizer with ``vocab_size`` entries learnt from ``texts``.

    The 256 byte symbols are always in the vocabulary, so any text round-trips; the
    end-of-text token is id 0 and is the tokenizer's eos, bos and pad token.

    Returns:
        A transformers ``PreTrainedTokenizerFast``.

    Raises:
        LlmoptError: a vocabulary smaller than the byte alphabet plus end-of-text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise LlmoptError(f"a byte-level vocabulary needs at least 257 entries, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap(tok)


def wrap(tok):
    """A transformers fast tokenizer around a ``tokenizers.Tokenizer`` with end-of-text."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,  # decoding gives back the exact text
    )
