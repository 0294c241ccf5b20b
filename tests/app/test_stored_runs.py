"""The synthetic stored runs the Compare tests use are what they say they are."""

from __future__ import annotations


def test_filled_runs_describe_their_pruning(tmp_path):
    """The filled variants pruned 10%, 20%, … of the weights, yet the runs table and hovers
    called each "no compression" (the fixture left ``method`` at its default). Now each run is
    described as recording describes it; on the old fixture the variants' method was
    "no compression", so the assertion on it fails there."""
    from stored_runs import fill_store

    from llmopt.comparison import runs_frame
    from llmopt.experiments import ExperimentStore

    path = tmp_path / "experiments.sqlite"
    ids = fill_store(path, {"a.csv": (["n", "p"], 6)}, 3)["a.csv"]
    frame = runs_frame(ExperimentStore(path).runs()).set_index("id")
    base, *variants = ids
    assert frame.loc[base, "method"] == "no compression" and frame.loc[base, "kind"] == "base"
    for i, run_id in enumerate(variants, 1):
        method = frame.loc[run_id, "method"]
        assert "prun" in method and f"{10 * i}%" in method, method
        assert frame.loc[run_id, "steps"] == ["prune"]
