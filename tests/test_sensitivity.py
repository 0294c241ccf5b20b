"""Per-layer sensitivity on tiny classifiers: the suffix-only shortcut gives the logits of the
model compressed through the normal ``compress()`` path, and each unit's delta is the metric
change of compressing that unit alone and evaluating it normally."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tinymodels import make_texts

from llmopt import sensitivity as S
from llmopt.compression import compress
from llmopt.compression.targets import block_list, get_weight, select_targets
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.evaluation import evaluate
from llmopt.models import load_model


def _train(n: int = 72) -> TextDataset:
    texts, labels = make_texts(n, seed=3)
    return TextDataset(texts, np.array(labels), ["LABEL_0", "LABEL_1"], name="t", split="train")


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    return {f: load_model(str(d)) for f, d in tiny_dirs.items()}


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_suffix_logits_equal_full_forward_of_compressed_model(tiny, family):
    """Blocks before the unit replay the cached dense outputs; the logits must equal the full
    forward of the model compressed through compress() (a wrong cached block, a replay of the
    wrong batch or a mis-ordered batch would break this)."""
    loaded = tiny[family]
    validation, _calibration = S.split_validation(_train(), 24)
    val = S.Validation(loaded, validation, None)
    units = [u for u in S.units(loaded.model, "matrix") if u.first_block == 1]
    assert units, "the tiny models have two blocks"
    val.cache_outputs(loaded.model, {0})
    config = S.level_config("prune", "magnitude", 0.8)
    for unit in units[:2]:
        compressed, _ = compress(loaded, config, filter_fn=lambda _m, n, u=unit: n in u.matrices)
        full = val.logits(compressed.model, 0)
        suffix = val.logits(compressed.model, unit.first_block)
        for a, b in zip(full, suffix, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        dense = val.logits(loaded.model, 0)
        assert any(not torch.allclose(a, b) for a, b in zip(full, dense, strict=True))
        # the replay is undone: the copy's blocks compute again afterwards
        assert "forward" not in vars(compressed.model.get_submodule(block_list(loaded.model))[0])


def test_replay_really_skips_the_prefix(tiny):
    """Replaying block 0 from a cache of another model's outputs changes the logits: the
    prefix is not silently recomputed (so the shortcut saves the work it claims to)."""
    loaded = tiny["bert"]
    validation, _ = S.split_validation(_train(), 16)
    val = S.Validation(loaded, validation, None)
    val.cache_outputs(loaded.model, {0})
    first = val.outputs[0]
    val.outputs[0] = [(o[0] + 1.0, *o[1:]) if isinstance(o, tuple) else o + 1.0 for o in first]
    shifted = val.logits(loaded.model, 1)
    val.outputs[0] = first
    plain = val.logits(loaded.model, 1)
    assert any(not torch.allclose(a, b) for a, b in zip(shifted, plain, strict=True))


@pytest.mark.parametrize(
    "kind,method,levels",
    [("prune", "magnitude", [0.5, 0.9]), ("quantize", "rtn", [2]), ("lowrank", "svd", [2])],
)
def test_delta_equals_normal_path(tiny, kind, method, levels):
    """Each row's delta (and agreement, KL) equals compressing that unit alone through
    compress() and evaluating it and the base with evaluate() on the validation rows."""
    loaded = tiny["bert"]
    train = _train()
    result = S.sensitivity(
        loaded, train, kind=kind, method=method, levels=levels, validation_rows=32
    )
    validation, _ = S.split_validation(train, 32)
    base = evaluate(loaded, validation)
    assert result.baseline == pytest.approx(base.metrics["accuracy"])
    units = {u.name: u for u in S.units(loaded.model, "matrix")}
    assert [r.name for r in result.layers] == [n for n in units for _ in levels]
    moved = 0.0
    for row in result.layers:
        config = S.level_config(kind, method, row.level)
        unit = units[row.name]
        compressed, _ = compress(loaded, config, filter_fn=lambda _m, n, u=unit: n in u.matrices)
        other = evaluate(compressed, validation)
        assert row.delta == pytest.approx(other.metrics["accuracy"] - base.metrics["accuracy"])
        assert row.extra["agreement"] == pytest.approx(float((base.y_pred == other.y_pred).mean()))
        assert row.interval[0] <= row.delta + 1e-12 and row.delta - 1e-12 <= row.interval[1]
        moved += row.extra["mean_kl"]
        assert set(row.proxies) == set(S.PROXIES)
    assert moved > 0  # the compressions did change the model


def test_block_and_type_units(tiny):
    loaded = tiny["bert"]
    targets = select_targets(loaded.model)
    blocks = S.units(loaded.model, "block")
    types = S.units(loaded.model, "type")
    assert len(blocks) == 2 and [u.first_block for u in blocks] == [0, 1]
    assert len(types) == len(targets) // 2 and all(len(u.matrices) == 2 for u in types)
    assert sorted(m for u in types for m in u.matrices) == sorted(targets)
    assert {u.name for u in types} >= {"attention.self.query", "output.dense"}
    result = S.sensitivity(
        loaded, _train(), kind="quantize", method="rtn", levels=[3], granularity="block",
        validation_rows=24,
    )  # fmt: skip
    assert [r.name for r in result.layers] == [u.name for u in blocks]


def test_proxies_on_known_change(tiny):
    """weight_error is the relative Frobenius change; output_error is the relative change of
    the layer's output on the validation tokens (checked against the outputs themselves)."""
    loaded = tiny["bert"]
    validation, _ = S.split_validation(_train(), 16)
    val = S.Validation(loaded, validation, None)
    name = select_targets(loaded.model)[0]
    grams = {name: torch.zeros(0)}
    val.cache_outputs(loaded.model, set(), grams)
    unit = S.Unit(name, (name,), 0)
    compressed, _ = compress(
        loaded, S.level_config("quantize", "rtn", 2), filter_fn=lambda _m, n: n == name
    )
    fisher = {name: torch.ones_like(get_weight(loaded.model.get_submodule(name))).double()}
    p = S.unit_proxies(loaded.model, compressed.model, unit, grams, fisher)
    w = get_weight(loaded.model.get_submodule(name)).double()
    d = w - get_weight(compressed.model.get_submodule(name)).double()
    assert p["weight_error"] == pytest.approx(float(d.norm() / w.norm()))
    assert p["fisher"] == pytest.approx(0.5 * float((d**2).sum()))
    # the layer's inputs on the real tokens, captured directly
    xs = []
    layer = loaded.model.get_submodule(name)
    h = layer.register_forward_hook(lambda _m, a, _o: xs.append(a[0]))
    with torch.inference_mode():
        for _i, kw, mask in val.inputs():
            loaded.model(**kw)
            xs[-1] = xs[-1][mask.bool()]
    h.remove()
    x = torch.cat(xs).double()
    expect = float((x @ d.T).norm() / (x @ w.T).norm())
    assert p["output_error"] == pytest.approx(expect, rel=1e-6)


def test_fisher_is_mean_squared_per_row_gradient(tiny):
    """The per-row gradients from one backward per batch equal one backward per row."""
    loaded = tiny["bert"]
    validation, _ = S.split_validation(_train(), 6)
    val = S.Validation(loaded, validation, None)
    name = select_targets(loaded.model)[-1]
    fisher = S.fisher_diagonals(loaded, val, [name], rows=6)[name]
    import copy

    model = copy.deepcopy(loaded.model)
    layer = model.get_submodule(name)
    expect = torch.zeros_like(fisher)
    for r in range(6):
        enc = loaded.tokenizer(validation.texts[r], return_tensors="pt")
        model.zero_grad()
        logits = model(**enc).logits
        target = torch.as_tensor([val.y_true[r]])
        torch.nn.functional.cross_entropy(logits, target).backward()
        expect += layer.weight.grad.double() ** 2
    torch.testing.assert_close(fisher, expect / 6, rtol=1e-3, atol=1e-9)


def test_proxy_correlation_is_spearman():
    from scipy.stats import spearmanr

    rows = [
        S.LayerSensitivity(f"m{i}", 0.5, -d, (-d, -d), {p: v for p in S.PROXIES})
        for i, (d, v) in enumerate([(0.1, 1.0), (0.3, 2.0), (0.2, 5.0), (0.0, 0.5)])
    ]
    result = S.SensitivityResult("magnitude", "prune", [0.5], "accuracy", "matrix", 1.0, 0.9,
                                 10, rows, {})  # fmt: skip
    corr = S.proxy_correlation(result)
    expect = spearmanr([1.0, 2.0, 5.0, 0.5], [0.1, 0.3, 0.2, 0.0]).statistic
    assert corr["fisher"]["all"] == pytest.approx(expect)
    assert corr["fisher"]["0.5"] == pytest.approx(expect)
    d = result.to_dict()
    assert list(d)[:6] == ["method", "levels", "metric", "granularity", "seconds", "layers"]
    assert set(d["layers"][0]) >= {"name", "level", "delta", "interval", "proxies"}


def test_bad_inputs(tiny):
    loaded = tiny["bert"]
    with pytest.raises(LlmoptError, match="granularity"):
        S.units(loaded.model, "head")
    with pytest.raises(LlmoptError, match="validation-rows"):
        S.split_validation(_train(10), 10)
    with pytest.raises(LlmoptError, match="bits"):
        S.parse_levels("quantize", "4,12")
    with pytest.raises(LlmoptError, match="not a sparsity"):
        S.parse_levels("prune", "half")
    with pytest.raises(LlmoptError, match="repeat"):
        S.parse_levels("prune", "0.5,0.5")
    with pytest.raises(LlmoptError, match="rank"):
        S.sensitivity(loaded, _train(), kind="lowrank", method="svd", levels=[999])
    with pytest.raises(LlmoptError, match="unknown"):
        S.sensitivity(loaded, _train(), kind="prune", method="nope", levels=[0.5])


@pytest.mark.parametrize(
    "family,stem,kept",
    [
        ("bert", ["bert.embeddings"], ["bert.embeddings"]),
        ("distilbert", ["distilbert.embeddings"], ["distilbert.embeddings"]),
        # GPT-2 embeds token types with wte too: called twice per batch, so it stays live
        ("gpt2", ["transformer.wte", "transformer.wpe"], ["transformer.wpe"]),
    ],
)
def test_replay_skips_the_embeddings_too(tiny, family, stem, kept, monkeypatch):
    """With a replayed prefix the embedding modules return their cached dense output instead
    of computing (before this they ran on every batch of every measurement, for nothing the
    replayed blocks read); a full run still computes them once per batch. A module called
    more than once per batch is not replayed (the cache is indexed by batch)."""
    loaded = tiny[family]
    validation, _ = S.split_validation(_train(), 24)
    val = S.Validation(loaded, validation, None)
    assert S.stem_modules(loaded.model, val.blocks_name) == stem
    val.cache_outputs(loaded.model, {0})
    assert sorted(val.stem) == sorted(kept)
    calls: list[str] = []
    for name in kept:
        module = loaded.model.get_submodule(name)
        cls = type(module)
        original = cls.forward

        def counted(self, *args, _original=original, _name=name, _module=module, **kwargs):
            if self is _module:  # GPT-2's wte is an nn.Embedding too
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counted)
    val.logits(loaded.model, 1)
    assert calls == []
    val.logits(loaded.model, 0)
    assert len(calls) == len(kept) * len(val.batches)


def test_result_json_round_trip():
    """A ``--json`` file reads back into the result it was written from (the README picture
    is drawn from one); a file that is not one is a one-line error."""
    rows = [
        S.LayerSensitivity(
            "a.q",
            8,
            0.0,
            (-0.01, 0.01),
            {p: 0.1 for p in S.PROXIES},
            {"mean_kl": 0.001, "agreement": 1.0},
        ),  # fmt: skip
        S.LayerSensitivity(
            "a.q",
            3,
            -0.05,
            (-0.09, float("nan")),
            {p: 0.5 for p in S.PROXIES},
            {"mean_kl": 0.02, "agreement": 0.9},
        ),  # fmt: skip
    ]
    result = S.SensitivityResult("rtn", "quantize", [8, 3], "accuracy", "matrix", 2.5, 0.85,
                                 32, rows, {"fisher": {"all": 0.4}})  # fmt: skip
    back = S.result_from_dict(result.to_dict())
    assert back.to_dict() == result.to_dict()
    assert back.layers[1].extra == {"mean_kl": 0.02, "agreement": 0.9}
    assert np.isnan(back.layers[1].interval[1])
    with pytest.raises(LlmoptError, match="not a sensitivity result"):
        S.result_from_dict({"method": "rtn"})


def test_heatmap_ticks_keep_the_block_number():
    """The bundled model's 36 matrix names share ``encoder.encoder.layer.``; cut in the
    middle they lost the block number, so the six blocks' queries (keys, ...) became one
    heatmap row. The shared prefix is dropped instead and every unit keeps its own row;
    names that fit stay whole."""
    from llmopt.figures.sensitivity import sensitivity_figure, unit_labels

    kinds = ["attention.self.query", "attention.self.key", "attention.output.dense"]
    names = [f"encoder.encoder.layer.{b}.{k}" for b in range(6) for k in kinds]
    rows = [S.LayerSensitivity(n, 4, -0.01, (-0.02, 0.0), {"fisher": 1.0}) for n in names]
    result = S.SensitivityResult("rtn", "quantize", [4], "accuracy", "matrix", 1.0, 0.9, 10,
                                 rows, {})  # fmt: skip
    fig = sensitivity_figure(result)
    ticks = list(fig.data[0].y)
    assert len(set(ticks)) == len(names)
    assert ticks[3] == "1.attention.self.query"
    assert "encoder.encoder.layer." in fig.layout.yaxis.title.text
    assert unit_labels(["only.one"]) == ("", ["only.one"])
    blocks = ["bert.encoder.layer.0", "bert.encoder.layer.1"]  # short, distinct: kept whole
    assert unit_labels(blocks) == ("", blocks)
    long = [f"a.{'x' * 40}{i}.{'y' * 40}" for i in range(2)]  # still colliding: whole names
    assert unit_labels(long) == ("", long)


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
@pytest.mark.parametrize("block", [0, 1])
def test_inner_replay_logits_equal_full_forward(tiny, family, block):
    """Every matrix of a block, compressed alone: replaying the blocks before it and what its
    own block computes before it (``cache_inner``) gives exactly the full forward's logits, on
    200 rows in several token-budget batches of different widths; and for its last two
    matrices something is replayed (the work is saved)."""
    loaded = tiny[family]
    validation, _ = S.split_validation(_train(260), 200)
    val = S.Validation(loaded, validation, None)
    widths = {kw["input_ids"].shape[1] for _rows, kw in val.batches}
    assert len(val.batches) > 1 and len(widths) > 1
    if block:
        val.cache_outputs(loaded.model, {block - 1})
    units = [u for u in S.units(loaded.model, "matrix") if u.first_block == block]
    plan = val.cache_inner(loaded.model, block, {u.name: u.matrices for u in units})
    assert all(plan[u.name] for u in units[-2:])
    config = S.level_config("quantize", "rtn", 2)
    for unit in units:
        assert not any(
            m.startswith(f"{n}.") or m == n for n in plan[unit.name] for m in unit.matrices
        )
        compressed, _ = compress(loaded, config, filter_fn=lambda _m, n, u=unit: n in u.matrices)
        full = val.logits(compressed.model, 0)
        fast = val.logits(compressed.model, block, plan[unit.name])
        assert all(torch.equal(a, b) for a, b in zip(full, fast, strict=True)), unit.name
        assert not any(
            "forward" in vars(compressed.model.get_submodule(n)) for n in plan[unit.name]
        )


def test_inner_replay_leaves_the_shared_model_alone(tiny, monkeypatch):
    """Other sessions run the same base model meanwhile: caching the block outputs and a
    block's insides swaps forwards and hangs hooks on a structure-only copy (the same weight
    tensors), never on the model it was given."""
    loaded = tiny["bert"]
    validation, _ = S.split_validation(_train(), 24)
    val = S.Validation(loaded, validation, None)
    val.cache_outputs(loaded.model, {0})
    replayed_on = []
    original = S.Validation._replay

    def recording(self, model, k, inner=()):
        replayed_on.append(model)
        return original(self, model, k, inner)

    monkeypatch.setattr(S.Validation, "_replay", recording)
    units = [u for u in S.units(loaded.model, "matrix") if u.first_block == 1]
    plan = val.cache_inner(loaded.model, 1, {u.name: u.matrices for u in units})
    assert any(plan.values()) and replayed_on
    assert all(m is not loaded.model for m in replayed_on)
    weights = {id(p) for p in loaded.model.parameters()}
    assert all({id(p) for p in m.parameters()} == weights for m in replayed_on)
    # the dense pass that caches the block outputs hangs its hooks on such a copy too
    cached_on = []
    caching = S.Validation.cache_outputs

    def recording_cache(self, model, needed, grams=None):
        cached_on.append(model)
        return caching(self, model, needed, grams)

    monkeypatch.setattr(S.Validation, "cache_outputs", recording_cache)
    replayed_on.clear()
    S.sensitivity(loaded, _train(), kind="prune", method="magnitude", levels=[0.5],
                  validation_rows=24)  # fmt: skip
    assert cached_on and replayed_on
    assert all(m is not loaded.model for m in cached_on + replayed_on)


def test_a_block_run_several_times_replays_nothing(tmp_path):
    """ALBERT runs one shared layer several times per forward: its modules' first outputs are
    not what the later passes compute, so nothing inside it is replayed, and the logits stay
    exactly the full forward's."""
    import transformers as tf
    from tinymodels import VOCAB, _save, tiny_tokenizer

    torch.manual_seed(0)
    config = tf.AlbertConfig(
        vocab_size=len(VOCAB), embedding_size=16, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
    )  # fmt: skip
    _save(tf.AlbertForSequenceClassification(config), tiny_tokenizer(tmp_path), tmp_path)
    loaded = load_model(str(tmp_path))
    validation, _ = S.split_validation(_train(), 24)
    val = S.Validation(loaded, validation, None)
    units = S.units(loaded.model, "matrix")
    assert {u.first_block for u in units} == {0}
    plan = val.cache_inner(loaded.model, 0, {u.name: u.matrices for u in units})
    assert plan == {u.name: () for u in units} and val.inner == {}
    result = S.sensitivity(loaded, _train(), kind="quantize", method="rtn", levels=[2],
                           validation_rows=24)  # fmt: skip
    base = evaluate(loaded, validation)
    for row, unit in zip(result.layers, units, strict=True):
        config = S.level_config("quantize", "rtn", 2)
        compressed, _ = compress(loaded, config, filter_fn=lambda _m, n, u=unit: n in u.matrices)
        other = evaluate(compressed, validation)
        assert row.delta == pytest.approx(other.metrics["accuracy"] - base.metrics["accuracy"])


def test_inner_replay_really_skips_and_respects_its_memory_bound(tiny, monkeypatch):
    """Shifting a cached inner output changes the logits (it is used, not recomputed); with no
    memory allowed nothing is cached or replayed, and the sensitivity is the same."""
    loaded = tiny["bert"]
    validation, _ = S.split_validation(_train(), 16)
    val = S.Validation(loaded, validation, None)
    last = S.units(loaded.model, "matrix")[-1]  # a block's last matrix: the most to replay
    val.cache_outputs(loaded.model, {last.first_block - 1})
    plan = val.cache_inner(loaded.model, last.first_block, {last.name: last.matrices})
    name = plan[last.name][0]
    plain = val.logits(loaded.model, last.first_block, plan[last.name])
    assert all(torch.equal(a, b) for a, b in zip(plain, val.logits(loaded.model), strict=True))
    first = val.inner[name]
    # scaled, not shifted: a LayerNorm right after would undo a constant shift
    val.inner[name] = [(o[0] * 3.0, *o[1:]) if isinstance(o, tuple) else o * 3.0 for o in first]
    shifted = val.logits(loaded.model, last.first_block, plan[last.name])
    assert any(not torch.allclose(a, b) for a, b in zip(shifted, plain, strict=True))
    kwargs = dict(kind="quantize", method="rtn", levels=[2, 3], validation_rows=24)
    replayed = S.sensitivity(loaded, _train(), **kwargs)
    monkeypatch.setattr(S, "INNER_CACHE_BYTES", 0)
    assert val.cache_inner(loaded.model, last.first_block, {last.name: last.matrices}) == {
        last.name: ()
    }
    assert val.inner == {}
    computed = S.sensitivity(loaded, _train(), **kwargs)
    for a, b in zip(replayed.layers, computed.layers, strict=True):
        assert (a.name, a.level) == (b.name, b.level)
        assert a.delta == pytest.approx(b.delta) and a.extra == pytest.approx(b.extra)
