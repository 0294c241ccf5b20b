"""Training figures carry the curves a reader needs, with the values given and axis titles."""

from __future__ import annotations

from llmopt import figures
from llmopt.training.schedules import PolynomialDecay, schedule_points

HISTORY = [
    {"step": 0, "epoch": 0.0, "loss": None, "val_accuracy": 0.5},
    {"step": 5, "epoch": 0.5, "loss": 0.9, "val_accuracy": 0.6, "sparsity": 0.2},
    {"step": 10, "epoch": 1.0, "loss": 0.4, "val_accuracy": 0.8, "sparsity": 0.5},
]


def test_curves_show_loss_and_validation_accuracy_against_the_step():
    fig = figures.training_curves_figure(HISTORY)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"training loss", "validation accuracy", "sparsity (measured)"}
    assert list(by_name["training loss"].x) == [5, 10]  # no loss before the first step
    assert list(by_name["training loss"].y) == [0.9, 0.4]
    assert list(by_name["validation accuracy"].y) == [0.5, 0.6, 0.8]
    assert fig.layout.xaxis.title.text == "Training step"
    assert fig.layout.yaxis.title.text == "Training loss"
    assert fig.layout.yaxis2.title.text.startswith("Validation accuracy")


def test_curves_without_sparsity_have_two_traces():
    fig = figures.training_curves_figure([{k: v for k, v in h.items() if k != "sparsity"}
                                          for h in HISTORY])  # fmt: skip
    assert [t.name for t in fig.data] == ["training loss", "validation accuracy"]


def test_schedule_figure_is_the_staircase_and_the_measured_points():
    points = schedule_points(PolynomialDecay(0.0, 0.6, 0, 4, frequency=2), 8)
    fig = figures.schedule_figure(points)
    assert len(fig.data) == 1 and fig.data[0].line.shape == "hv"
    assert list(fig.data[0].y) == [p["sparsity"] for p in points]
    measured = [{**p, "achieved": p["sparsity"] + 0.01} for p in points]
    fig = figures.schedule_figure(measured)
    assert [t.name for t in fig.data] == ["scheduled sparsity", "measured sparsity"]
    assert fig.layout.yaxis.title.text == "Sparsity of the pruned layers"


def test_lm_loss_figure_shows_training_and_validation_loss_in_nats():
    """A language model's history has a validation loss, not an accuracy: the classifier's
    figure would plot an empty accuracy axis for it."""
    from llmopt.figures.training import lm_loss_figure

    history = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0, "val_loss": 4.5},
               {"step": 3, "loss": 3.5}]  # fmt: skip
    fig = lm_loss_figure(history)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["training loss"].y) == [5.0, 4.0, 3.5]
    assert list(by_name["validation loss"].x) == [2] and list(by_name["validation loss"].y) == [4.5]
    assert fig.layout.yaxis.title.text == "Loss (nats per token)"
    assert [t.name for t in lm_loss_figure(history[:1]).data] == ["training loss"]  # pre-training
