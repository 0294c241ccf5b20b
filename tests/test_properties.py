"""Property tests: CSV loading and CompressionConfig either work with their invariants or
raise LlmoptError — never another exception."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from llmopt import LlmoptError, TextDataset, load_csv
from llmopt.compression import CompressionConfig

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------------ load_csv

CHARS = st.characters(blacklist_categories=("Cs",))  # any code point UTF-8 can encode
TRICKY = st.sampled_from(
    ['"', '""', ",", "\n", "\r\n", "\r", "\t", " ", "", "=1+2", "+x", "-1", "@SUM(A1)",
     "'", "\x00", "\ufeff", "é", "日本", "🙂", "NaN", "null", "text", "label", "1", "0",
     "\u00a0", "\u2028", "a,b", '"quoted"', "|", "%"]
)  # fmt: skip
CELL = st.one_of(st.text(CHARS, max_size=12), TRICKY, st.lists(TRICKY, max_size=4).map("".join))
LABEL_CELL = st.one_of(st.sampled_from(["pos", "neg", "0", "1", "2", " pos ", "", "=x"]), CELL)


def _check_dataset(ds: TextDataset, split: str) -> None:
    assert isinstance(ds, TextDataset)
    n = len(ds.texts)
    assert n == len(ds.labels) == len(ds.indices)
    assert ds.split == split
    assert len(ds.label_names) >= 2
    assert len(set(ds.label_names)) == len(ds.label_names)
    if n:
        assert ds.labels.min() >= 0 and ds.labels.max() < len(ds.label_names)
    assert np.all(np.diff(ds.indices) > 0), "indices must be strictly increasing"
    assert all(isinstance(t, str) and t.strip() for t in ds.texts), "blank text kept"
    assert not set(ds.indices.tolist()) & set(ds.dropped), "a dropped row was kept"


def _load_both(raw: bytes, **kwargs):
    """Both splits of ``raw``, or None when load_csv refuses it (with LlmoptError only)."""
    results = {}
    for split in ("train", "test"):
        try:
            results[split] = load_csv(raw, split, **kwargs)
        except LlmoptError:
            results[split] = None
    assert (results["train"] is None) == (results["test"] is None), (
        "one split loaded and the other was refused"
    )
    if results["train"] is None:
        return None
    for split, ds in results.items():
        _check_dataset(ds, split)
    train, test = results["train"], results["test"]
    assert not set(train.indices.tolist()) & set(test.indices.tolist()), "splits overlap"
    assert train.label_names == test.label_names
    return train, test


@SETTINGS
@given(raw=st.binary(max_size=400))
@example(raw=b"")
@example(raw=b"text,label\n")
@example(raw=b"text,label\na,1\nb,2\n")
@example(raw=b'text,label\n"a\nb",x\n"c",y\n')
@example(raw=b"\xef\xbb\xbftext,label\nx,1\ny,0\nz,1\n")
@example(raw=b"text,label\na,1\nb,2\nc,3,4\n")
@example(raw=b"text,label,text\na,1,b\nc,0,d\n")
@example(raw=b"text,label\n\x00,1\n")
@example(raw=b"text\tlabel\nx\t1\ny\t0\n")
def test_load_csv_on_arbitrary_bytes(raw):
    _load_both(raw)
    _load_both(raw, name="upload.tsv")


@st.composite
def csv_tables(draw):
    """Random tables: random headers (sometimes holding text/label), random cells, written
    as proper CSV or naively joined (ragged, unbalanced quotes), sometimes with a BOM."""
    extra = draw(st.lists(st.one_of(CELL, st.sampled_from(["text", "label", "review"])),
                          max_size=3))  # fmt: skip
    header = draw(st.permutations(["text", "label", *extra]))
    if draw(st.booleans()):
        header = header[: draw(st.integers(0, len(header)))]
    n_rows = draw(st.integers(0, 12))
    rows = []
    for _ in range(n_rows):
        width = len(header) if draw(st.integers(0, 9)) else draw(st.integers(0, len(header) + 2))
        rows.append([draw(LABEL_CELL if i % 2 else CELL) for i in range(width)])
    sep = draw(st.sampled_from([",", "\t"]))
    if draw(st.booleans()):
        buf = io.StringIO()
        writer = csv.writer(
            buf, delimiter=sep, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))
        )
        writer.writerow(header)
        writer.writerows(rows)
        text = buf.getvalue()
    else:
        text = "\n".join(sep.join(r) for r in [header, *rows])
    raw = text.encode("utf-8")
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    name = "data.tsv" if sep == "\t" and draw(st.booleans()) else "data.csv"
    columns = [*header, "text", "label", "missing"]
    text_col = draw(st.sampled_from(columns))
    label_col = draw(st.sampled_from(columns))
    return raw, name, text_col, label_col


@SETTINGS
@given(table=csv_tables())
def test_load_csv_on_random_tables(table):
    raw, name, text_col, label_col = table
    _load_both(raw, name=name, text_column=text_col, label_column=label_col)


@st.composite
def labelled_tables(draw):
    """Well-formed tables with a text and a label column and enough rows: loading them must
    work (so the invariants above are exercised on real data, not only on refusals)."""
    k = draw(st.integers(2, 5))
    names = draw(st.lists(st.text(CHARS, min_size=1, max_size=8).filter(lambda s: s.strip()),
                          min_size=k, max_size=k, unique_by=str.strip))  # fmt: skip
    n = draw(st.integers(2 * k, 40))
    rows = []
    for i in range(n):
        text = draw(st.text(CHARS, min_size=1, max_size=20).filter(lambda s: s.strip()))
        rows.append([text, names[i % k]])
    buf = io.StringIO()
    csv.writer(buf).writerows([["text", "label"], *rows])
    return buf.getvalue().encode("utf-8"), rows


@SETTINGS
@given(table=labelled_tables())
def test_load_csv_on_well_formed_tables(table):
    raw, rows = table
    both = _load_both(raw)
    assume(both is not None)  # e.g. a NUL byte in a cell: refused, fine
    train, test = both
    assert set(train.label_names) == {label.strip() for _, label in rows}
    assert len(train) + len(test) == len(rows) and not train.dropped
    for ds in (train, test):
        for text, label, index in zip(ds.texts, ds.labels, ds.indices, strict=True):
            assert rows[index][0] == text, "a text was changed on the way in"
            assert rows[index][1].strip() == ds.label_names[label]


# ------------------------------------------------------------------ CompressionConfig

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1, -1.5]),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = {
    "sparsity": st.one_of(st.floats(0, 1), st.sampled_from([0, 0.0, 0.5, 0.99, 1, 1.0]), JUNK),
    "sparsity_method": st.one_of(
        st.sampled_from(["magnitude", "wanda", "Wanda", " magnitude"]), JUNK
    ),  # fmt: skip
    "sparsity_pattern": st.one_of(
        st.sampled_from(
            [
                "unstructured",
                "2:4",
                "4:8",
                "1:2",
                " 2 : 4 ",
                "0:4",
                "5:4",
                "4:4",
                "2:4\n",
                "a:b",
                "1:99999999999999999999999",
                "",
            ]
        ),  # fmt: skip
        st.from_regex(r"\A\s?\d{0,3}\s?:\s?\d{0,3}\s?\Z"),
        JUNK,
    ),
    "sparsity_scope": st.one_of(st.sampled_from(["layer", "global"]), JUNK),
    "bits": st.one_of(st.integers(0, 10), st.floats(1.5, 8.5), st.none(), JUNK),
    "group_size": st.one_of(st.integers(-2, 256), st.none(), JUNK),
    "rank": st.one_of(st.integers(-2, 512), st.none(), JUNK),
    "int8_dynamic": st.one_of(st.booleans(), JUNK),
    "calibration_samples": st.one_of(st.integers(-2, 1000), JUNK),
    "include_head": st.one_of(st.booleans(), JUNK),
    # the method registry's fields
    "quant_method": st.one_of(st.sampled_from(["rtn", "gptq"]), JUNK),
    "act_order": st.one_of(st.booleans(), JUNK),
    "asymmetric": st.one_of(st.booleans(), JUNK),
    "lowrank_method": st.one_of(st.sampled_from(["svd", "activation-aware"]), JUNK),
    "smooth_alpha": st.one_of(st.floats(-0.5, 1.5), st.none(), JUNK),
    "calibration": st.one_of(st.sampled_from(["sequential", "one-pass"]), JUNK),
    "precision": st.one_of(st.sampled_from(["fp32", "bf16", "fp16"]), JUNK),
    # the sparsity allocation (OWL) and its two settings
    "sparsity_allocation": st.one_of(st.sampled_from(["uniform", "owl", "OWL", ""]), JUNK),
    "owl_lambda": st.one_of(st.floats(-0.1, 0.6), st.sampled_from([0, 0.08, 0.5, 0.51]), JUNK),
    "owl_m": st.one_of(st.floats(-1, 20), st.sampled_from([0, 1, 5.0]), JUNK),
    # the bits and rank allocations (a fractional bits is an average with an allocation)
    "bits_allocation": st.one_of(st.sampled_from(["uniform", "sensitivity", "Sensitivity"]), JUNK),
    "rank_allocation": st.one_of(st.sampled_from(["uniform", "energy", ""]), JUNK),
}
KWARGS = st.fixed_dictionaries({}, optional=FIELDS)


def _check_config(config: CompressionConfig) -> None:
    d = config.to_dict()
    assert set(d) == set(FIELDS)
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN/Infinity
    again = CompressionConfig.from_dict(json.loads(json.dumps(d)))
    assert again == config
    assert CompressionConfig.from_dict(d) == config
    assert isinstance(config.describe(), str)
    assert 0.0 <= config.effective_sparsity < 1.0
    assert isinstance(config.is_identity, bool)


@SETTINGS
@given(kwargs=KWARGS)
@example(kwargs={"sparsity": 10**400})
@example(kwargs={"sparsity": 0.5, "sparsity_pattern": "1:99999999999999999999999"})
@example(kwargs={"bits": 4, "group_size": 2**63})
def test_compression_config_constructs_or_raises_llmopt_error(kwargs):
    try:
        config = CompressionConfig(**kwargs)
    except LlmoptError:
        return
    _check_config(config)


@SETTINGS
@given(
    d=st.dictionaries(
        st.one_of(st.sampled_from(list(FIELDS)), st.text(max_size=8), st.integers(), st.none()),
        st.one_of(*FIELDS.values()),
        max_size=6,
    )
)
@example(d={1: 2, "sparsity": 0.5})
@example(d={"sparsity": 0.5, "extra": 1})
def test_compression_config_from_any_dict(d):
    try:
        config = CompressionConfig.from_dict(d)
    except LlmoptError:
        return
    _check_config(config)


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, 10**400, -(10**400), "0.5", None, True],
    ids=["nan", "inf", "-inf", "10**400", "-10**400", "str", "None", "True"],
)
def test_sparsity_junk_is_refused(value):
    with pytest.raises(LlmoptError, match="sparsity"):
        CompressionConfig(sparsity=value)


def test_from_dict_with_keys_of_mixed_types_raises_llmopt_error():
    with pytest.raises(LlmoptError, match="unknown"):
        CompressionConfig.from_dict({1: 2, "sparsity": 0.5, None: 0})


def test_nm_pattern_keeps_effective_sparsity_below_one():
    """An N:M pattern whose 1 - N/M rounds to 1.0 would prune every weight."""
    try:
        config = CompressionConfig(sparsity_pattern="1:99999999999999999999999")
    except LlmoptError:
        return
    assert config.effective_sparsity < 1.0
