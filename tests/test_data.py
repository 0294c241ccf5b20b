"""Dataset loading: bundled splits, CSV errors, seeded stratified splits, limits."""

import numpy as np
import pandas as pd
import pytest

from llmopt.data import TextDataset, load_csv, load_dataset
from llmopt.errors import LlmoptError


def test_bundled_splits_have_documented_shape():
    train = load_dataset("bundled", "train")
    test = load_dataset("bundled", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.label_names == test.label_names == ["great", "other"]
    assert np.bincount(test.labels).tolist() == [658, 342]


def test_csv_split_is_stratified_seeded_and_disjoint(tiny_csv):
    train = load_dataset(str(tiny_csv), "train")
    test = load_dataset(str(tiny_csv), "test")
    assert len(train) + len(test) == 50 and len(test) == 10
    assert not set(train.indices) & set(test.indices)
    assert np.bincount(test.labels).tolist() == [5, 5]  # stratified
    again = load_dataset(str(tiny_csv), "test")
    assert again.texts == test.texts  # seeded: the same split every time


def test_limit_takes_first_rows_and_seed_shuffles(tiny_csv):
    full = load_dataset(str(tiny_csv), "train")
    first = load_dataset(str(tiny_csv), "train", limit=5)
    assert first.texts == full.texts[:5]
    shuffled = load_dataset(str(tiny_csv), "train", limit=5, seed=3)
    assert shuffled.texts != first.texts
    assert shuffled.texts == load_dataset(str(tiny_csv), "train", limit=5, seed=3).texts
    assert set(shuffled.texts) <= set(full.texts)


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(tiny_csv, limit):
    with pytest.raises(LlmoptError, match="positive"):
        load_dataset(str(tiny_csv), limit=limit)


def test_csv_missing_columns_names_the_columns_and_the_fix(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"review": ["a", "b", "c"], "score": ["x", "y", "x"]}).to_csv(path, index=False)
    with pytest.raises(LlmoptError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert "'text'" in message and "review, score" in message
    assert "--text-column review" in message and "--label-column score" in message
    ok = load_dataset(str(path), "train", text_column="review", label_column="score")
    assert ok.label_names == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"text,label\nhello,a\nbye,a\nok,a\n", "single class"),
        (b"text,label\nh\xe9llo,a\nbye,b\n", "UTF-8"),
        (b"text,label\n,a\n,b\n", "no rows"),
    ],
)
def test_bad_csv_files_give_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(LlmoptError, match=match):
        load_dataset(str(path))


def test_csv_from_uploaded_bytes_and_integer_labels_sort_numerically():
    rows = "text,label\n" + "".join(f"t{i},{i % 11}\n" for i in range(110))
    ds = load_csv(rows.encode(), "train", name="upload.csv")
    assert ds.label_names == [str(i) for i in range(11)]  # 10 after 9, not after 1


def test_unknown_source_and_split():
    with pytest.raises(LlmoptError, match="unknown dataset source"):
        load_dataset("nonsense")
    with pytest.raises(LlmoptError, match="unknown split"):
        load_dataset("bundled", "validation")


def test_hf_source_loads_local_dataset_folder(tmp_path):
    """``hf:`` goes through the datasets library (here on a local folder, no network)."""
    folder = tmp_path / "hfdata"
    folder.mkdir()
    pd.DataFrame({"text": ["good", "bad", "fine"], "label": ["pos", "neg", "pos"]}).to_csv(
        folder / "train.csv", index=False
    )
    pd.DataFrame({"text": ["great", "awful"], "label": ["pos", "neg"]}).to_csv(
        folder / "test.csv", index=False
    )
    test = load_dataset(f"hf:{folder}", "test")
    assert test.texts == ["great", "awful"]
    assert [test.label_names[i] for i in test.labels] == ["pos", "neg"]


def test_fingerprint_changes_with_data():
    a = TextDataset(["x", "y"], np.array([0, 1]), ["a", "b"], name="d")
    b = TextDataset(["x", "y"], np.array([1, 0]), ["a", "b"], name="d")
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == TextDataset(["x", "y"], np.array([0, 1]), ["a", "b"], "e").fingerprint


def test_same_column_for_text_and_label_is_a_clear_error(tiny_csv):
    with pytest.raises(LlmoptError, match="choose two different columns"):
        load_dataset(str(tiny_csv), text_column="text", label_column="text")


def test_label_balance_counts_every_label_of_both_splits(tiny_csv):
    from llmopt.data import label_balance

    train, test = load_dataset(str(tiny_csv), "train"), load_dataset(str(tiny_csv), "test")
    frame = label_balance(train, test)
    assert frame["label"].tolist() == test.label_names
    assert frame["train"].tolist() == np.bincount(train.labels).tolist()
    assert frame["test"].sum() == len(test) and frame["test share"].sum() == pytest.approx(1.0)
