"""What the benchmarks print about the machine they ran on: CPU capabilities and load."""

from __future__ import annotations

import os
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def describe() -> str:
    """CPU model, cores, the vector/matrix flags that matter to torch, and the load average."""
    model, flags = "unknown CPU", set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    present = [f for f in FLAGS if f in flags] or ["none of " + ", ".join(FLAGS)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"CPU: {model}, {os.cpu_count()} cores; flags: {' '.join(present)}; "
        f"load average (1, 5, 15 min): {load}"
    )
