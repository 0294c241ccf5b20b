"""Compression of transformer classifiers: low-rank, pruning, quantization; one entry point."""

from llmopt.compress.config import CompressionConfig
from llmopt.compress.engine import STEPS, check_config, compress
from llmopt.compress.report import CompressionReport
from llmopt.compress.save import check_save_target, save_model

__all__ = [
    "STEPS",
    "CompressionConfig",
    "CompressionReport",
    "check_config",
    "check_save_target",
    "compress",
    "save_model",
]

compress_model = compress  # reachable as llmopt.compress_model: llmopt.compress is this package
