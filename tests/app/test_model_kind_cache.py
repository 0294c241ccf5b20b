"""Whether the sidebar's model is a causal LM is read once per model, not on every rerun."""

from __future__ import annotations

from types import SimpleNamespace


def test_the_model_kind_is_read_once_per_source(monkeypatch):
    """Every rerun of every page read the model's config again to learn its kind (a hub
    request or a file read each time). It is now kept in the shared cache; on the old code
    the config was read on each call, so the count below was 3."""
    import llmopt.lm.load as load
    from dashboard import lm

    calls = []

    def kind(source):
        calls.append(source)
        return load.CAUSAL_LM if source.endswith("lm") else "classifier"

    monkeypatch.setattr(load, "model_kind", kind)
    causal, other = SimpleNamespace(model_source="a/tiny-lm"), SimpleNamespace(model_source="b/c")
    assert [lm.is_causal_lm(causal) for _ in range(3)] == [True] * 3
    assert lm.is_causal_lm(other) is False
    assert calls == ["a/tiny-lm", "b/c"]
