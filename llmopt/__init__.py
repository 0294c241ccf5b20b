"""llmopt: what-if compression of transformer classifiers — compress, evaluate, compare."""

__version__ = "0.1.0"  # before the imports: submodules record it in what they save

from llmopt.compression import CompressionConfig, CompressionReport, compress, save_model
from llmopt.data import TextDataset, load_csv, load_dataset
from llmopt.errors import LlmoptError
from llmopt.evaluation import EvalResult, compare, evaluate, flipped_table
from llmopt.models import LoadedModel, load_model, model_facts

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
    "flipped_table",
    "load_csv",
    "load_dataset",
    "load_model",
    "model_facts",
]
