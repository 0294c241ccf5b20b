"""llmopt: what-if compression of transformer classifiers — compress, evaluate, compare.

The public names below are loaded on first use (PEP 562), so ``import llmopt.errors`` or
``python -m llmopt --help`` does not pay for torch, transformers, scikit-learn and pandas;
``from llmopt import compress`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # submodules record it in what they save

# public name -> the module that defines it
_LAZY = {
    "CompressionConfig": "llmopt.compression",
    "CompressionReport": "llmopt.compression",
    "compress": "llmopt.compression",
    "save_model": "llmopt.compression",
    "TextDataset": "llmopt.data",
    "load_csv": "llmopt.data",
    "load_dataset": "llmopt.data",
    "LlmoptError": "llmopt.errors",
    "EvalResult": "llmopt.evaluation",
    "compare": "llmopt.evaluation",
    "evaluate": "llmopt.evaluation",
    "flipped_table": "llmopt.evaluation",
    "LoadedModel": "llmopt.models",
    "load_model": "llmopt.models",
    "model_facts": "llmopt.models",
}

# other public names for the same object: ``llmopt.compare`` returns fidelity (agreement, KL,
# flipped rows) — not to be confused with ``llmopt.comparison``, which builds run tables
_ALIASES = {"fidelity": "compare"}

__all__ = [
    "CompressionConfig",
    "CompressionReport",
    "compress",
    "save_model",
    "EvalResult",
    "LlmoptError",
    "LoadedModel",
    "TextDataset",
    "compare",
    "evaluate",
    "fidelity",
    "flipped_table",
    "load_csv",
    "load_dataset",
    "load_model",
    "model_facts",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ loads these
    from llmopt.compression import CompressionConfig, CompressionReport, compress, save_model
    from llmopt.data import TextDataset, load_csv, load_dataset
    from llmopt.errors import LlmoptError
    from llmopt.evaluation import EvalResult, compare, evaluate, flipped_table
    from llmopt.evaluation import compare as fidelity
    from llmopt.models import LoadedModel, load_model, model_facts


def __getattr__(name: str) -> Any:
    target = _ALIASES.get(name, name)
    module = _LAZY.get(target)
    if module is None:
        raise AttributeError(f"module 'llmopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), target)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
