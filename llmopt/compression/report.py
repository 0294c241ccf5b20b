"""CompressionReport and the packed-storage accounting it is built from (measured, not assumed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from llmopt.compression.prune import satisfies_nm
from llmopt.compression.storage import (  # noqa: F401 - re-exported for callers of this module
    FLOAT_BITS,
    STORAGE_ASSUMPTIONS,
    Storage,
    matrix_storage,
)


def packed_storage(
    weight: Tensor,
    value_bits: int,
    *,
    n_scales: int = 0,
    scale_bits: int = 16,
    zero_point_bits: int = 0,
    nm: tuple[int, int] | None = None,
) -> Storage:
    """``matrix_storage`` with the counts measured from the final (out, in) tensor.

    Args:
        weight: (out, in) the final values (zeros are pruned weights).
        value_bits: bits per stored value.
        n_scales: quantization scales stored with it (0 when not quantized).
        scale_bits: bits per scale.
        zero_point_bits: bits per zero point (0 when symmetric).
        nm: the N:M pattern to try, if pruning used one (used only if the tensor satisfies it).

    Returns:
        Storage(bits, format name).
    """
    rows, cols = weight.shape
    nonzero = int(torch.count_nonzero(weight))
    fits = nm if nm is not None and satisfies_nm(weight, *nm) else None
    return matrix_storage(
        rows,
        cols,
        nonzero,
        value_bits,
        n_scales=n_scales,
        scale_bits=scale_bits,
        zero_point_bits=zero_point_bits,
        nm=fits,
    )


@dataclass
class CompressionReport:
    """Per-layer measurements of one compression, totals and the storage assumptions."""

    rows: list[dict]  # one per compressed layer; keys in ROW_KEYS
    totals: dict
    assumptions: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    ROW_KEYS = (
        "name",
        "shape",
        "sparsity",
        "bits",
        "group_size",
        "rank",
        "rel_error",
        "bytes_before",
        "bytes_after",
        "format",
        "dense_reconstruction",
        "note",
    )

    def to_rows(self) -> list[dict]:
        """The rows as plain JSON-ready dicts (the CLI's ``--json`` ``report``)."""
        return [{k: _plain(row.get(k)) for k in self.ROW_KEYS} for row in self.rows]

    def to_frame(self):
        """The rows as a pandas DataFrame (one row per layer)."""
        import pandas as pd

        return pd.DataFrame(self.to_rows(), columns=list(self.ROW_KEYS))

    def to_dict(self) -> dict:
        """Rows, totals, assumptions and config as plain JSON-ready values."""
        return {
            "rows": self.to_rows(),
            "totals": {k: _plain(v) for k, v in self.totals.items()},
            "assumptions": list(self.assumptions),
            "config": dict(self.config),
        }


def _plain(x):
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):  # numpy scalar
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def summarize(rows: list[dict], model_bytes_before: int, extra: dict) -> dict:
    """Totals over the layer rows: bytes, parameters, ratios, mean error, measured sparsity."""
    before = sum(r["bytes_before"] for r in rows)
    after = sum(r["bytes_after"] for r in rows)
    model_after = model_bytes_before - before + after
    weights = sum(r["shape"][0] * r["shape"][1] for r in rows)
    zeros = sum(r["sparsity"] * r["shape"][0] * r["shape"][1] for r in rows)
    totals = {
        "layers": len(rows),
        "bytes_before": before,
        "bytes_after": after,
        "compression_ratio": before / after if after else 1.0,
        "model_bytes_before": model_bytes_before,
        "model_bytes_after": model_after,
        "model_compression_ratio": model_bytes_before / model_after if model_after else 0.0,
        "mean_rel_error": sum(r["rel_error"] for r in rows) / len(rows) if rows else 0.0,
        "max_rel_error": max((r["rel_error"] for r in rows), default=0.0),
        "sparsity": zeros / weights if weights else 0.0,
    }
    totals.update(extra)
    return totals
