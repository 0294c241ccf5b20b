"""Hugging Face loading policy: reachability, quiet logs, no remote code, clear load failures.

A leaf module (it imports nothing else of llmopt but ``errors``), so the loaders of models,
encoders and datasets share one policy:

- remote code never runs: every ``from_pretrained`` gets ``trust_remote_code=False``, and a
  checkpoint whose config asks for custom code is refused before transformers sees it (so it
  never prompts "Do you wish to run the custom code?" on stdin);
- weights load from safetensors when the checkpoint has them; a pickle-only checkpoint
  (``pytorch_model.bin``) loads only through torch's tensor-only unpickler
  (``weights_only=True``), which refuses any Python object but tensors and plain containers;
- offline, only the local hub cache is asked, so a missing model fails in seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmopt.errors import Fix, LlmoptError

# Arguments every from_pretrained call gets (models also get weights_only, see model_kwargs).
SAFE_KWARGS = {"trust_remote_code": False}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout_s`` (offline: no)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def quiet_hub_logs() -> None:
    """Keep transformers/hub warnings and progress bars out of the user's terminal."""
    import huggingface_hub.utils.logging as hub_logging
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logging.set_verbosity_error()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def model_kwargs(local_only: bool) -> dict:
    """Keyword arguments for a model's ``from_pretrained``: no remote code, tensor-only pickles."""
    return {**SAFE_KWARGS, "local_files_only": local_only, "weights_only": True}


def refuse_custom_code(directory: Path, source: str) -> None:
    """Refuse a local checkpoint whose ``config.json`` needs code shipped with it.

    Raises:
        LlmoptError: the config has an ``auto_map`` (classes defined in the folder's .py files)
            or cannot be read as JSON.
    """
    config = directory / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise LlmoptError(
            f"{source!r}: its config.json is not valid JSON, so it is not a usable checkpoint"
        ) from None
    if isinstance(data, dict) and data.get("auto_map"):
        raise custom_code_error(source)


def load_config(ref: str, source: str, local_only: bool = False):
    """The ``transformers`` config of ``ref`` (a folder or hub id), read with the loading
    policy above: quiet logs, no remote code, offline from the local hub cache only.

    Raises:
        LlmoptError: the config cannot be read (``load_failure``), or it asks for custom code.
    """
    from transformers import AutoConfig

    quiet_hub_logs()
    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=local_only, **SAFE_KWARGS)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear message
        raise load_failure(ref, exc, local_only) from None
    if getattr(config, "auto_map", None):
        raise custom_code_error(source)
    return config


def custom_code_error(source: str) -> LlmoptError:
    return LlmoptError(
        f"{source!r} needs custom Python code shipped with the checkpoint (its config has an "
        "auto_map); llmopt never runs code that comes with a model",
        fix=Fix(
            cli="use a checkpoint of a standard transformers architecture (BERT, DistilBERT, "
            "RoBERTa, GPT-2, …)",
            app="choose a checkpoint of a standard transformers architecture (BERT, DistilBERT, "
            "RoBERTa, GPT-2, …)",
        ),
    )


def load_failure(ref: str, exc: BaseException, offline: bool = False) -> LlmoptError:
    """A user-facing error for a failed ``from_pretrained`` of ``ref``."""
    text = str(exc)
    low = text.lower()
    if "trust_remote_code" in low or "custom code" in low:
        return custom_code_error(ref)
    if "weights only load failed" in low or "weights_only" in low or "unpickl" in low:
        return LlmoptError(
            f"the weights of {ref!r} are a pickle file that holds more than tensors; loading it "
            "could run code, so llmopt refused it (only safetensors files and tensor-only "
            "pickles are loaded)",
            fix=Fix(
                cli="ask its author for a safetensors version (model.safetensors)",
                app="ask its author for a safetensors version (model.safetensors)",
            ),
        )
    if offline:
        return LlmoptError(
            f"could not load model {ref!r}: the Hugging Face hub cannot be reached (no network?) "
            "and the model is not in the local hub cache",
            fix=Fix(
                cli="connect to the internet, pass a local checkpoint folder, or use --model "
                "bundled",
                app="connect the server to the internet, choose a local directory, or use the "
                "bundled default",
            ),
        )
    first = (text.splitlines() or [type(exc).__name__])[0]
    first = first if len(first) <= 300 else first[:297] + "…"
    where = "the path" if Path(ref).expanduser().exists() else "the hub id or the path"
    return LlmoptError(f"could not load model {ref!r}: {first}; check {where}")
