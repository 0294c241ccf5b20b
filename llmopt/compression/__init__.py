"""Compression of transformer classifiers: low-rank, pruning, quantization; one entry point."""

from llmopt.compression.config import CompressionConfig
from llmopt.compression.engine import STEPS, check_config, compress
from llmopt.compression.report import CompressionReport
from llmopt.compression.save import check_save_target, save_model

__all__ = [
    "STEPS",
    "CompressionConfig",
    "CompressionReport",
    "check_config",
    "check_save_target",
    "compress",
    "save_model",
]
