"""Where llmopt keeps what it builds (trained heads, run history): ``$LLMOPT_HOME``."""

import os
from pathlib import Path


def llmopt_home() -> Path:
    """The cache folder: ``$LLMOPT_HOME`` or ``~/.cache/llmopt``; created on first use."""
    home = Path(os.environ.get("LLMOPT_HOME") or Path.home() / ".cache" / "llmopt")
    home.mkdir(parents=True, exist_ok=True)
    return home
