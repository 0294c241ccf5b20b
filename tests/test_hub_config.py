"""One sequence reads a checkpoint's config for every loader: no remote code, clear failures."""

from __future__ import annotations

import json
import shutil

import pytest

from llmopt.errors import LlmoptError


def test_load_config_reads_refuses_custom_code_and_explains_failures(tiny_bert_dir, tmp_path):
    """The classifier and causal-LM loaders each carried a copy of the config-reading steps;
    both now call ``hub.load_config`` (absent before, so this test fails on the old code)."""
    from llmopt.hub import load_config

    config = load_config(str(tiny_bert_dir), "tiny", local_only=True)
    assert config.model_type == "bert"

    custom = tmp_path / "custom"
    shutil.copytree(tiny_bert_dir, custom)
    data = json.loads((custom / "config.json").read_text())
    data["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (custom / "config.json").write_text(json.dumps(data))
    with pytest.raises(LlmoptError, match="custom Python code") as refused:
        load_config(str(custom), "my-source", local_only=True)
    assert "'my-source'" in str(refused.value)

    with pytest.raises(LlmoptError, match="could not load model") as missing:
        load_config(str(tmp_path / "absent"), "absent", local_only=True)
    assert "Traceback" not in str(missing.value)
