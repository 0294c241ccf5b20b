"""CompressionReport and the packed-storage accounting it is built from (measured, not assumed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from llmopt.compression.prune import satisfies_nm

FLOAT_BITS = 32  # uncompressed weights and all biases stay fp32

STORAGE_ASSUMPTIONS = [
    "sizes count what a packed file would store, measured from the resulting tensors; "
    "each layer uses the cheapest of: dense values, a 1-bit-per-weight keep-mask plus the "
    "non-zero values (bitmap), or, when every group of M holds at most N non-zeros, N values "
    "per group plus ceil(log2 M) index bits per value (N:M)",
    "quantized weights are packed at `bits` bits per value with one scale per output channel "
    "or group, in fp16 (fp32 when a scale does not fit fp16); int8_dynamic weights are 8-bit "
    "with one fp32 scale per output channel (zero points are 0: symmetric)",
    "biases, embeddings, norms and layers left uncompressed count at their dense fp32 size; a "
    "low-rank layer stores its two factors and the original bias",
]


@dataclass
class Storage:
    """Bits of one stored matrix in its cheapest format."""

    bits: int
    format: str


def packed_storage(
    weight: Tensor,
    value_bits: int,
    *,
    n_scales: int = 0,
    scale_bits: int = 16,
    nm: tuple[int, int] | None = None,
) -> Storage:
    """The cheapest sensible packed format of one (out, in) weight matrix, in bits.

    Args:
        weight: (out, in) the final values (zeros are pruned weights).
        value_bits: bits per stored value (32 float, ``bits``, or 8 for int8).
        n_scales: quantization scales stored with it (0 when not quantized).
        scale_bits: bits per scale.
        nm: the N:M pattern to try, if pruning used one.

    Returns:
        Storage(bits, format name).
    """
    numel = weight.numel()
    nnz = int(torch.count_nonzero(weight))
    options = {"dense": numel * value_bits, "bitmap": numel + nnz * value_bits}
    if nm is not None and satisfies_nm(weight, *nm):
        n, m = nm
        groups = weight.shape[0] * math.ceil(weight.shape[1] / m)
        options[f"{n}:{m}"] = groups * n * (value_bits + math.ceil(math.log2(m)))
    name = min(options, key=options.get)
    values = "fp32" if value_bits == FLOAT_BITS and not n_scales else f"{value_bits}-bit"
    scales = f" + {n_scales} fp{scale_bits} scales" if n_scales else ""
    return Storage(options[name] + n_scales * scale_bits, f"{name} {values}{scales}")


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
