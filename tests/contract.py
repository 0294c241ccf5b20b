"""The JSON keys docs/design.md fixes for `--json` output (a contract scripts rely on)."""

RESULT_KEYS = {
    "metrics",
    "confusion_matrix",
    "latency_ms_per_sample",
    "size_bytes",
    "params_total",
    "params_nonzero",
}
TOP_KEYS = {
    "model",
    "dataset",
    "split",
    "n",
    "label_names",
    "config",
    "baseline",
    "compressed",
    "fidelity",
    "report",
    "dropped_rows",
    "run_id",  # the experiment store's id of this evaluation (null with --no-record)
}
METRIC_NAMES = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"}
