"""Synthetic stored runs, for pages that only read the experiment store (no model loads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmopt.compression import CompressionConfig
from llmopt.experiments import ExperimentStore, RowSet, Run
from llmopt.lineage import describe_config
from llmopt.recording import config_steps


def fill_store(
    path: Path, datasets: dict[str, tuple[list[str], int]], per_dataset: int = 4, seed: int = 0
) -> dict[str, list[int]]:
    """Store ``per_dataset`` runs (a base run and variants of it, pruned to 10%, 20%, …) for
    each dataset, each described as the recording code describes it.

    Args:
        path: the store's file.
        datasets: dataset source -> (label names, rows).

    Returns:
        dataset source -> the ids of its runs, base run first.
    """
    store = ExperimentStore(path)
    rng = np.random.default_rng(seed)
    ids: dict[str, list[int]] = {}
    for d, (dataset, (names, rows)) in enumerate(datasets.items()):
        k = len(names)
        y = np.arange(rows) % k
        row_set = RowSet([f"text {i} of {dataset}" for i in range(rows)], y, np.arange(rows), names)
        ids[dataset] = []
        for i in range(per_dataset):
            score = np.eye(k)[y] * (0.4 + 0.1 * d) + rng.random((rows, k))
            score /= score.sum(1, keepdims=True)
            pred = score.argmax(1)
            acc = float((pred == y).mean())
            confusion = np.zeros((k, k), dtype=int)
            np.add.at(confusion, (y, pred), 1)
            config = None if i == 0 else CompressionConfig(sparsity=0.1 * i).to_dict()
            run = Run(
                model="model-a",
                model_fingerprint="ma",
                dataset=dataset,
                rows_fingerprint=f"rows-{dataset}",
                n=rows,
                label_names=list(names),
                kind="base" if i == 0 else "variant",
                metrics={"baseline": {"accuracy": acc}, "compressed": {"accuracy": acc}},
                intervals={"accuracy": [acc - 0.05, acc + 0.05]},
                config=config,
                method=describe_config(config),  # what the runs table and hovers show
                steps=config_steps(config),
                parent=ids[dataset][0] if i else None,
                size_bytes=int(90e6 - 10e6 * i),
                latency_ms=5.0 - 0.5 * i,
                agreement=1.0 - 0.05 * i,
                mean_kl=0.01 * i,
                confusion_matrix=confusion.tolist(),
            )
            ids[dataset].append(store.add(run, y_true=y, y_score=score, row_set=row_set))
    return ids
