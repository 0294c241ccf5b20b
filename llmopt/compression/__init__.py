"""Compression of transformer classifiers: one registry of methods, one entry point."""

from llmopt.compression.config import CompressionConfig
from llmopt.compression.engine import check_config, compress
from llmopt.compression.registry import needs_calibration
from llmopt.compression.report import CompressionReport
from llmopt.compression.save import check_save_target, save_model

__all__ = [
    "CompressionConfig",
    "CompressionReport",
    "check_config",
    "check_save_target",
    "compress",
    "needs_calibration",
    "save_model",
]
