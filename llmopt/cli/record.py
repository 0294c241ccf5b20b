"""What ``evaluate`` adds around an evaluation: a recipe's settings before it, paired latency,
intervals and the record in the experiment store after it."""

from __future__ import annotations

import math
import sys

# What evaluate uses when neither a flag nor a recipe sets it.
SOURCE_DEFAULTS = {
    "model": "bundled",
    "dataset": "bundled",
    "split": "test",
    "text_column": "text",
    "label_column": "label",
}
RECIPE_ROWS = ("model", "dataset", "split", "text_column", "label_column", "limit", "seed")


def apply_recipe(args):
    """Fill the settings no flag gave from ``--recipe FILE`` (explicit flags win), then the
    defaults; keeps the recipe's config in ``args.recipe_config`` for ``_config``.

    Returns:
        The ``Recipe``, or None without ``--recipe``.

    Raises:
        LlmoptError: an unreadable or invalid recipe file.
    """
    recipe = None
    if getattr(args, "recipe", None) is not None:
        from llmopt.recording import load_recipe

        recipe = load_recipe(args.recipe)
        args.recipe_overrides = [k for k in RECIPE_ROWS if getattr(args, k) is not None]
        for key in RECIPE_ROWS:
            if getattr(args, key) is None and getattr(recipe, key) is not None:
                setattr(args, key, getattr(recipe, key))
        args.recipe_config = recipe.config
    for key, value in SOURCE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return recipe


def check_recipe_rows(args, recipe, dataset) -> None:
    """Say when a run's recipe now selects other rows than the run was evaluated on."""
    if recipe is None or not recipe.rows_fingerprint or args.recipe_overrides:
        return
    if dataset.fingerprint != recipe.rows_fingerprint:
        print(
            f"note: these {len(dataset)} rows differ from the rows run {recipe.run_id} was "
            "evaluated on (the dataset changed since): its metrics will differ",
            file=sys.stderr,
        )


def _iv(interval) -> str:
    low, high = interval
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "[n/a]"
    return f"[{low:+.4f}, {high:+.4f}]" if low < 0 or high < 0 else f"[{low:.4f}, {high:.4f}]"


def note_lines(computed: dict, latency: dict | None, simulated: bool) -> list[str]:
    """Notes printed after the results: intervals, significance, how latency was measured."""
    from llmopt.stats import ALPHA, N_BOOT, excludes_zero

    line = (
        f"note: 95% bootstrap intervals ({N_BOOT} resamples of the rows): accuracy baseline "
        f"{_iv(computed['baseline_intervals']['accuracy'])}"
    )
    if "intervals" in computed:
        line += f", compressed {_iv(computed['intervals']['accuracy'])}"
    lines = [line]
    if "mcnemar" in computed:
        test, delta = computed["mcnemar"], computed["delta_intervals"]
        verdict = "significant" if test["p_value"] < ALPHA else "within the noise of these rows"
        lines.append(
            f"note: accuracy change {verdict}: exact McNemar p = {test['p_value']:.3g} "
            f"({test['only_a']} rows only the baseline gets right, {test['only_b']} only the "
            f"compressed model); difference interval {_iv(delta['accuracy'])}"
        )
        noise = [k for k, v in delta.items() if k != "accuracy" and not excludes_zero(v)]
        if noise:
            names = ", ".join(noise)
            lines.append(f"note: within the noise (paired interval holds 0): changes of {names}")
    if latency:
        b, c = latency["baseline"], latency["compressed"]
        lines.append(
            f"note: paired latency (interleaved, {len(b.samples_ms)} passes over {b.texts} texts): "
            f"baseline {b.median_ms:.2f} ms, compressed {c.median_ms:.2f} ms per text "
            f"({c.median_ms / b.median_ms:.2f}×; spread ±{50 * max(b.spread, c.spread):.0f}%)"
        )
    elif simulated:
        lines.append(
            "note: the compressed model runs the same kernels as the baseline (simulated "
            "compression), so its latency is the baseline's: the latency difference above is noise"
        )
    return lines


def record(args, loaded, dataset, config, base, compressed, other, report, latency, computed):
    """Store the evaluation unless ``--no-record``; the run's id, or None (a failure to record
    is a note, not an error: the results are printed and written anyway)."""
    from llmopt.recording import record_evaluation

    return _store(
        args,
        lambda store, where: record_evaluation(
            store, base_model=loaded, dataset=dataset, base=base, other=other,
            variant=compressed, config=config, report=report, latency=latency,
            computed=computed, **where,
        ),
    )  # fmt: skip


def record_trained(args, base_model, dataset, base, run, parent=None):
    """Store a training run (fine-tune, recovery, gradual pruning, distillation) with its parent
    unless ``--no-record``; the run's id, or None (a failure to record is a note)."""
    if run.after is None:
        return None
    from llmopt.recording import record_training

    return _store(
        args,
        lambda store, where: record_training(
            store, run, base_model=base_model, dataset=dataset, base=base, parent=parent,
            **where,
        ),
    )  # fmt: skip


def _store(args, write):
    """Run ``write(store, where)`` on the experiment store unless ``--no-record``, and say
    what was recorded; a store that cannot be written is a note on stderr, never an error."""
    if getattr(args, "no_record", False):
        return None
    from llmopt.errors import LlmoptError
    from llmopt.experiments import ExperimentStore

    where = {
        "origin": "cli",
        "model_source": args.model,
        "dataset_source": args.dataset,
        "rows": {
            "split": getattr(args, "split", None) or "test",
            "limit": args.limit,
            "seed": args.seed,
            "text_column": args.text_column,
            "label_column": args.label_column,
        },
    }
    try:
        done = write(ExperimentStore(), where)
    except (LlmoptError, OSError) as exc:
        print(f"note: not recorded in the experiment store: {exc}", file=sys.stderr)
        return None
    if done.notice:
        print(f"note: {done.notice}", file=sys.stderr)
    print(f"recorded as run {done.run_id} (llmopt runs show {done.run_id})")
    return done.run_id
