"""Causal language models: loading, perplexity (two protocols), fidelity, zero-shot label
scoring and side-by-side generation.

Each file holds one idea; import the functions from their modules (``llmopt.lm.load``,
``llmopt.lm.perplexity``, …) or from here.
"""

from llmopt.lm.fidelity import FidelityResult, HarderToken, compare_lms
from llmopt.lm.generate import Generation, GenerationSide, generate_side_by_side
from llmopt.lm.intervals import paired_interval, perplexity_interval
from llmopt.lm.load import LoadedLM, load_causal_lm
from llmopt.lm.perplexity import PerplexityResult, default_seq_len, perplexity
from llmopt.lm.zeroshot import ZeroShotConfig, ZeroShotResult, zero_shot

__all__ = [
    "FidelityResult",
    "Generation",
    "GenerationSide",
    "HarderToken",
    "LoadedLM",
    "PerplexityResult",
    "ZeroShotConfig",
    "ZeroShotResult",
    "compare_lms",
    "default_seq_len",
    "generate_side_by_side",
    "load_causal_lm",
    "paired_interval",
    "perplexity",
    "perplexity_interval",
    "zero_shot",
]
