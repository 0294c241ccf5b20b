"""Compression of transformer classifiers: one registry of methods, one entry point.

The names below are loaded on first use (PEP 562): the command line reads ``config`` and
``registry`` to build its flags without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CompressionConfig": "llmopt.compression.config",
    "check_config": "llmopt.compression.engine",
    "compress": "llmopt.compression.engine",
    "needs_calibration": "llmopt.compression.registry",
    "CompressionReport": "llmopt.compression.report",
    "check_save_target": "llmopt.compression.save",
    "save_model": "llmopt.compression.save",
}

__all__ = [
    "CompressionConfig",
    "CompressionReport",
    "check_config",
    "check_save_target",
    "compress",
    "needs_calibration",
    "save_model",
]

if TYPE_CHECKING:
    from llmopt.compression.config import CompressionConfig
    from llmopt.compression.engine import check_config, compress
    from llmopt.compression.registry import needs_calibration
    from llmopt.compression.report import CompressionReport
    from llmopt.compression.save import check_save_target, save_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmopt.compression' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
