"""One parser of model sources, read by the loader and the dashboard's model picker."""

from __future__ import annotations

import os

import pytest

from llmopt.sources import model_source


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("bundled", ("bundled", "")),
        ("  bundled ", ("bundled", "")),
        ("encoder:bert-base-uncased", ("encoder", "bert-base-uncased")),
        ("encoder:./enc", ("encoder", "./enc")),
        ("./ckpt", ("local", "./ckpt")),
        ("~/ckpt", ("local", "~/ckpt")),
        ("/abs/ckpt", ("local", "/abs/ckpt")),
        ("distilbert-base-uncased", ("hub", "distilbert-base-uncased")),
        ("org/model", ("hub", "org/model")),
    ],
)
def test_model_source_kinds(source, expected):
    assert model_source(source) == expected


def test_an_existing_folder_and_a_dangling_link_are_local(tmp_path, monkeypatch):
    """The picker used ``Path.exists`` and the loader ``os.path.lexists``: a dangling link was
    a hub id to one and a folder to the other. Both now read it as a folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    assert model_source("ckpt") == ("local", "ckpt")
    assert model_source("dangling") == ("local", "dangling")


def test_the_picker_and_the_loader_read_a_source_the_same_way(tmp_path, monkeypatch):
    from dashboard.sidebar import BUNDLED, ENCODER, HUB, LOCAL, classify_model

    monkeypatch.chdir(tmp_path)
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    labels = {"bundled": BUNDLED, "encoder": ENCODER, "local": LOCAL, "hub": HUB}
    for source in ("", "bundled", "encoder:bundled", "./x", "dangling", "org/model"):
        kind, ref = model_source(source or "bundled")
        assert classify_model(source) == (labels[kind], ref)
