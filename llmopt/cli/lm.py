"""The causal-LM side of ``llmopt evaluate``: perplexity by either protocol and zero-shot label
scoring, with the model kind told from the config, and the one place a causal LM is compressed."""

from __future__ import annotations

import json
import math

from llmopt import atomic
from llmopt.cli import record
from llmopt.cli.common import positive_int, train_split
from llmopt.errors import LlmoptError

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
HARDER_SHOWN = 5  # tokens that got harder, printed with their context


def add_lm_args(ev) -> None:
    """The causal-LM flags of ``evaluate`` (and the shared --dtype/--device of ``generate``),
    ``--task`` with the registry's evaluation tasks, and the flags those tasks add."""
    from llmopt.tasks import evaluate_tasks

    ev.add_argument(
        "--task",
        choices=list(evaluate_tasks()),
        help="what to evaluate (default: perplexity for a causal LM, classify for a classifier)",
    )
    ev.add_argument(
        "--protocol",
        choices=("paper", "document"),
        help="perplexity: 'paper' (texts joined, cut into windows; the default) or 'document' "
        "(each text alone; adds word and byte perplexity)",
    )
    ev.add_argument(
        "--seq-len",
        type=positive_int,
        help="perplexity window in tokens (default: min(limit, 1024))",
    )
    add_device_args(ev)
    ev.add_argument("--prompt", help="zero-shot: prompt template with {text} (default: reviews')")
    ev.add_argument(
        "--verbalizer",
        action="append",
        metavar="LABEL=WORDS",
        help="zero-shot: the words that stand for a label (once per label)",
    )
    added: set[str] = set()  # (reading ev's actions would add the costly compression flags)
    for task in evaluate_tasks().values():
        for option in task.options:
            if option.flag not in added:  # two tasks may share a flag
                ev.add_argument(option.flag, **option.cli)
                added.add(option.flag)


def add_device_args(p) -> None:
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="causal LMs: float type (default auto)")
    p.add_argument(
        "--device", choices=DEVICE_CHOICES, help="causal LMs: where to run (default auto)"
    )


def choose_task(args) -> str:
    """The evaluation task: ``--task``, else the model kind's default; a task the model kind
    does not take, or a flag of another task, is refused in one line.

    Raises:
        LlmoptError: a causal LM with ``--task classify``, a classifier with an LM task, or a
            flag that applies to another task.
    """
    from llmopt.lm.load import CAUSAL_LM, model_kind
    from llmopt.tasks import EVAL_TASKS, default_eval_task, flag_dest

    apply_lm_recipe(args)
    kind = model_kind(args.model)
    if kind == CAUSAL_LM and getattr(args, "recover", None) == "head":
        raise LlmoptError(
            "--recover head re-fits a classifier's head, which a causal LM does not have; "
            "use --recover finetune (minimises the next-token NLL)"
        )
    task = args.task or default_eval_task(kind) or "classify"
    if kind not in EVAL_TASKS[task].models:
        if kind == CAUSAL_LM:
            raise LlmoptError(
                f"{args.model!r} is a causal language model, not a sequence classifier; use "
                "--task perplexity or --task zero-shot (label scoring with --prompt/--verbalizer)"
            )
        raise LlmoptError(
            f"{args.model!r} is a sequence classifier, not a causal language model; --task "
            f"{task} needs a causal LM (GPT-2, OPT, Llama, Qwen2, …) — use --task classify"
        )
    flags = dict.fromkeys(flag for t in EVAL_TASKS.values() for flag in t.flags)
    given = {flag: getattr(args, flag_dest(flag), None) for flag in flags}
    allowed = EVAL_TASKS[task].flags
    stray = [flag for flag, value in given.items() if value is not None and flag not in allowed]
    stray.sort(key=lambda flag: flag == "--recover")  # a task's own flags are named first
    if stray and stray[0] == "--recover" and kind == CAUSAL_LM:
        raise LlmoptError(
            f"--recover applies to --task perplexity (and classifiers), not --task {task}; drop it"
        )
    if stray:
        raise LlmoptError(f"{stray[0]} does not apply to --task {task}; drop it")
    return task


def apply_lm_recipe(args) -> None:
    """From a recorded LM run given as ``--recipe`` (``runs export``): its task and how it was
    scored (protocol, window length, prompt, verbalizers), where no flag gives them."""
    if getattr(args, "recipe", None) is None:
        return
    try:  # load_recipe has read and checked the file already
        data = json.loads(args.recipe.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    from llmopt.tasks import evaluate_tasks

    task = data.get("task") if isinstance(data, dict) else None
    spec = evaluate_tasks().get(task) if isinstance(task, str) else None
    if spec is None or spec.replay is None or args.task is not None:
        return
    args.task = task
    spec.replay(args, data.get("rows") or {})


def replay_perplexity(args, rows: dict) -> None:
    """A recorded perplexity run's protocol and window length, where no flag gives them."""
    args.protocol = args.protocol or rows.get("protocol")
    args.seq_len = args.seq_len or rows.get("seq_len")


def replay_zero_shot(args, rows: dict) -> None:
    """A recorded zero-shot run's prompt and verbalizers, where no flag gives them."""
    args.prompt = args.prompt if args.prompt is not None else rows.get("prompt")
    verbalizers = rows.get("verbalizers") or {}
    args.verbalizer = args.verbalizer or [f"{k}={v}" for k, v in verbalizers.items()] or None


def zero_shot_config(args):
    """The prompt and verbalizers of ``--prompt`` / ``--verbalizer LABEL=WORDS`` (defaults:
    the bundled reviews')."""
    from llmopt.lm.zeroshot import DEFAULT_PROMPT, DEFAULT_VERBALIZERS, ZeroShotConfig

    verbalizers = dict(DEFAULT_VERBALIZERS) if not args.verbalizer else {}
    for item in args.verbalizer or []:
        label, sep, words = item.partition("=")
        if not sep or not label.strip() or not words.strip():
            raise LlmoptError(f"--verbalizer {item!r} is not LABEL=WORDS (e.g. great=great)")
        if label.strip() in verbalizers:
            raise LlmoptError(f"--verbalizer gives label {label.strip()!r} twice")
        verbalizers[label.strip()] = words.strip()
    prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt.replace("\\n", "\n")
    return ZeroShotConfig(prompt=prompt, verbalizers=verbalizers)


def load_lm(args):
    """The causal LM of ``--model`` in ``--dtype`` on ``--device``; with ``--recover`` (which
    trains it) in fp32 unless ``--dtype`` says otherwise."""
    from llmopt.cli.pretrain import StageBar
    from llmopt.lm.load import load_causal_lm

    dtype = args.dtype or ("fp32" if getattr(args, "recover", None) else "auto")
    return load_causal_lm(
        args.model, dtype=dtype, device=args.device or "auto", progress=StageBar()
    )


def compress_lm(args, lm, config, progress):
    """The one place a causal LM is compressed (and saved with ``--save-model``).

    Returns:
        (the compressed ``LoadedLM``, its ``CompressionReport``, its size fields).

    Raises:
        LlmoptError: what ``compress`` raises (a setting a layer cannot take, …).
    """
    from llmopt.compression import compress, needs_calibration
    from llmopt.lm.load import lm_size

    calibration = train_split(args) if needs_calibration(config) else None
    compressed, report = compress(
        lm,
        config,
        calibration=calibration,
        progress=progress,
        seq_len=getattr(args, "seq_len", None),  # calibration windows as long as the scored ones
    )
    size = lm_size(compressed)
    # with --recover, --save-model saves the recovered model instead (``_recover``)
    if getattr(args, "save_model", None) is not None and getattr(args, "recover", None) is None:
        from llmopt.compression import save_model

        save_model(compressed, args.save_model, overwrite=args.overwrite)
    return compressed, report, size


def run_perplexity(args, recipe=None) -> int:
    """``evaluate --task perplexity`` (the registry's runner)."""
    return run_lm(args, _no_predictions, _perplexity)


def run_zero_shot(args, recipe=None) -> int:
    """``evaluate --task zero-shot`` (the registry's runner)."""
    return run_lm(args, zero_shot_config, _zero_shot)


def _no_predictions(args) -> None:
    if args.predictions is not None:
        raise LlmoptError("--predictions applies to --task zero-shot and classify; drop it")


def run_lm(args, check, score) -> int:
    """``evaluate`` of a causal LM: the checks, loading and compression every LM task shares;
    ``check(args)`` refuses the task's bad flags before any work, ``score(args, lm, dataset,
    config, compressed, report, other_size, bar)`` evaluates, prints and records."""
    from llmopt.cli.common import Bar
    from llmopt.cli.evaluate import _config, check_outputs
    from llmopt.data import load_dataset

    config = _config(args)  # validate the knobs before any slow loading
    if args.save_model is not None and config is None:
        raise LlmoptError("--save-model saves a compressed model: add a compression flag")
    if args.overwrite and args.save_model is None:
        raise LlmoptError("--overwrite applies to --save-model; add --save-model DIR or drop it")
    if getattr(args, "recover", None) is not None:
        _check_recover(args, config)
    check(args)
    check_outputs(args)  # every output is checked before any work
    dataset = load_dataset(
        args.dataset, args.split, text_column=args.text_column,
        label_column=args.label_column, limit=args.limit, seed=args.seed,
    )  # fmt: skip
    bar = Bar()
    lm = load_lm(args)
    compressed = report = other_size = None
    if config is not None:
        compressed, report, other_size = compress_lm(args, lm, config, bar)
    return score(args, lm, dataset, config, compressed, report, other_size, bar)


def _check_recover(args, config) -> None:
    """``--recover finetune`` on a causal LM trains the compressed model: it needs a
    compression that can be trained, in a float type training can use."""
    if config is None or config.int8_dynamic:
        raise LlmoptError(
            "--recover trains a compressed model: add --sparsity, --bits or --rank "
            "(int8 kernels cannot be trained)"
        )
    if args.dtype in ("bf16", "fp16"):
        raise LlmoptError(f"--recover trains in fp32; drop --dtype {args.dtype} (or --recover)")


# --------------------------------------------------------------------------- perplexity


def _perplexity(args, lm, dataset, config, compressed, report, other_size, bar) -> int:
    from llmopt.lm import compare_lms, perplexity
    from llmopt.lm.load import lm_size
    from llmopt.recording import lm_statistics, record_lm_evaluation

    protocol = args.protocol or "paper"
    other = fidelity = None
    if compressed is None:
        base = perplexity(lm, dataset.texts, protocol=protocol, seq_len=args.seq_len, progress=bar)
    else:
        base, other, fidelity = compare_lms(
            lm, compressed, dataset.texts, protocol=protocol, seq_len=args.seq_len, progress=bar
        )
    recovered = None  # (the TrainingRun, its LMTrainingEvaluation, its size)
    if compressed is not None and args.recover is not None:
        recovered = _recover(args, lm, compressed, dataset, protocol, bar)
    bar.close()
    base_size = lm_size(lm)
    computed = lm_statistics(base, other, fidelity)
    print(format_perplexity(lm, dataset, base, other, fidelity, base_size, other_size, computed))
    if recovered is not None:
        print("\n".join(format_recovered(recovered[1], recovered[2])))
    run_id = record._store(
        args,
        lambda store, where: record_lm_evaluation(
            store, lm=lm, dataset=dataset, base=base, base_size=base_size, other=other,
            other_size=other_size, fidelity=fidelity, config=config, report=report,
            computed=computed, **where,
        ),
    )  # fmt: skip
    recovered_id = None
    if recovered is not None and run_id is not None:  # the compressed run is its parent
        recovered_id = _record_recovered(args, lm, dataset, recovered, run_id)
    if args.json is not None:
        payload = perplexity_json(
            args, dataset, config, base, other, fidelity, base_size, other_size, computed
        )
        payload["run_id"] = run_id
        if recovered is not None:
            _, evaluation, size = recovered
            payload.update(
                recovered=_side(evaluation.after, size, evaluation.stats["intervals"]),
                recovered_fidelity=evaluation.base_fidelity.to_dict(),
                recover=args.recover, recovered_run_id=recovered_id,
            )  # fmt: skip
        atomic.write_text(args.json, json.dumps(payload, indent=2))
    if recovered is not None and args.save_model is not None:
        print(f"recovered model saved to {args.save_model}")
    return 0


def _record_recovered(args, lm, dataset, recovered, parent: int) -> int | None:
    """Store the recovery as a perplexity variant whose parent is the compressed run."""
    from llmopt.training.lm import record_lm_training

    run, evaluation, _ = recovered
    return record._store(
        args,
        lambda store, where: record_lm_training(
            store, run, evaluation, base_lm=lm, dataset=dataset, parent=parent, **where
        ),
    )


def _recover(args, lm, compressed, dataset, protocol, bar):
    """``--recover finetune``: recovery fine-tuning of the compressed LM on the next-token NLL
    of the training split's texts (masks, grids and factors kept; ``recover_lm``'s default
    settings), then scored on the same windows as the compressed model, against it and the
    base; ``--save-model`` saves the recovered model.

    Returns:
        (the ``TrainingRun``, its ``LMTrainingEvaluation``, the recovered model's size fields).

    Raises:
        LlmoptError: too few training texts, or training cancelled.
    """
    from llmopt.lm.load import lm_size
    from llmopt.training.lm import evaluate_lm_training, recover_lm

    run = recover_lm(compressed, train_split(args), progress=bar)
    evaluation = evaluate_lm_training(
        compressed, run.model, dataset.texts, base=lm, protocol=protocol, seq_len=args.seq_len,
        progress=bar,
    )  # fmt: skip
    if args.save_model is not None:
        from llmopt.compression import save_model

        save_model(run.model, args.save_model, overwrite=args.overwrite)
    return run, evaluation, lm_size(run.model)


def format_recovered(evaluation, size: dict) -> list[str]:
    """The recovered model's lines: perplexity and bits per byte with their intervals, the
    paired difference to the compressed model, and its fidelity to the baseline."""
    stats = evaluation.stats
    lines = ["", f"recovered (finetune, next-token NLL; {size['params_nonzero']:,} non-zero "
             f"parameters of {size['params_total']:,}):"]  # fmt: skip
    for key, label in (("perplexity", "perplexity"), ("bits_per_byte", "bits per byte")):
        before, after = evaluation.before.metric(key), evaluation.after.metric(key)
        lo, hi = stats["intervals"][key]
        line = (
            f"  {label}: recovered {_num(after)} [{_num(lo)}, {_num(hi)}] "
            f"(compressed {_num(before)})"
        )
        delta = stats.get("delta_intervals", {}).get(key)
        if delta is not None:
            noise = "noise" if delta[0] <= 0 <= delta[1] else "not noise"
            line += (
                f"; paired difference vs compressed {after - before:+.4f} "
                f"[{delta[0]:+.4f}, {delta[1]:+.4f}] ({noise})"
            )
        lines.append(line)
    f = evaluation.base_fidelity
    lines.append(
        f"  fidelity to the baseline: next-token top-1 agreement {f.top1_agreement:.4f}, mean "
        f"KL(base||recovered) {f.mean_kl:.5f} nats per token"
    )
    return lines


def _side(result, size, intervals) -> dict:
    """One ``LM`` object of the perplexity JSON: the result, its interval and its size."""
    return {**result.to_dict(tuple(intervals["perplexity"])), **size}


def perplexity_json(args, dataset, config, base, other, fidelity, base_size, other_size, computed):
    """The ``evaluate --task perplexity --json`` object (keys are a contract); ``--recover``
    adds ``recovered`` (an ``LM``), ``recovered_fidelity``, ``recover`` and
    ``recovered_run_id``."""
    return {
        "task": "perplexity",
        "protocol": base.protocol,
        "seq_len": base.seq_len,
        "model": args.model,
        "dataset": args.dataset,
        "n": len(dataset),
        "config": config.to_dict() if config is not None else None,
        "baseline": _side(base, base_size, computed["baseline_intervals"]),
        "compressed": None if other is None else _side(other, other_size, computed["intervals"]),
        "fidelity": None if fidelity is None else fidelity.to_dict(),
    }


def _num(x, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_perplexity(lm, dataset, base, other, fidelity, base_size, other_size, computed) -> str:
    """The human-readable summary of a perplexity evaluation."""
    unit = "windows" if base.protocol == "paper" else "documents"
    lines = [
        f"model:   {lm.name} ({lm.dtype} on {lm.device})",
        f"dataset: {dataset.name} ({dataset.split} split, {len(dataset)} texts; {base.protocol} "
        f"protocol, windows of {base.seq_len} tokens, {len(base.nll)} {unit})",
        "",
    ]
    cols = ["baseline"] + (["compressed", "delta"] if other is not None else [])
    lines.append(f"{'':<24}" + "".join(f"{c:>14}" for c in cols))
    keys = [("perplexity", "perplexity", 4), ("bits per byte", "bits_per_byte", 4)]
    if base.protocol == "document":
        keys += [
            ("word perplexity", "word_perplexity", 4),
            ("byte perplexity", "byte_perplexity", 4),
        ]
    rows = [
        (label, getattr(base, k), getattr(other, k) if other else None, d) for label, k, d in keys
    ]
    rows += [
        ("tokens scored", base.n_tokens, other.n_tokens if other else None, 0),
        (
            "tokens per second",
            base.tokens_per_second,
            other.tokens_per_second if other else None,
            0,
        ),
    ]
    rows += [
        (label, base_size[k] / scale, other_size[k] / scale if other else None, d)
        for label, k, scale, d in (
            ("size (MB)", "size_bytes", 1e6, 2),
            ("parameters", "params_total", 1, 0),
            ("non-zero parameters", "params_nonzero", 1, 0),
        )
    ]
    for label, b, o, digits in rows:
        cells = [_num(float(b), digits)]
        if other is not None and o is not None:
            delta = float(o) - float(b)
            cells += [_num(float(o), digits), ("+" if delta > 0 else "") + _num(delta, digits)]
        lines.append(f"{label:<24}" + "".join(f"{c:>14}" for c in cells))
    lo, hi = computed["baseline_intervals"]["perplexity"]
    note = (
        f"note: 95% bootstrap interval of perplexity over {unit}: baseline [{_num(lo)}, {_num(hi)}]"
    )
    if other is not None:
        lo, hi = computed["intervals"]["perplexity"]
        note += f", compressed [{_num(lo)}, {_num(hi)}]"
        delta = computed["delta_intervals"].get("perplexity")
        if delta is not None:
            noise = "noise" if delta[0] <= 0 <= delta[1] else "not noise"
            note += f"; paired difference [{_num(delta[0])}, {_num(delta[1])}] ({noise})"
    lines += ["", note]
    if fidelity is not None:
        lines.append(
            f"fidelity: next-token top-1 agreement {fidelity.top1_agreement:.4f}, mean "
            f"KL(base||compressed) {fidelity.mean_kl:.5f} nats per token"
        )
        for h in fidelity.harder[:HARDER_SHOWN]:
            lines.append(
                f"  harder: …{h.context[-40:]!r} → {h.token!r}: loss {h.base_loss:.2f} → "
                f"{h.compressed_loss:.2f} nats (top: {h.base_top!r} vs {h.compressed_top!r})"
            )
    lines += [f"note: {n}" for n in lm.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- zero-shot


def _zero_shot(args, lm, dataset, config, compressed, report, other_size, bar) -> int:
    from llmopt.cli.evaluate import format_results, results_json, write_predictions
    from llmopt.evaluation import compare
    from llmopt.lm.load import lm_size
    from llmopt.lm.zeroshot import zero_shot_eval
    from llmopt.recording import record_evaluation, statistics, zero_shot_fingerprint

    zs = zero_shot_config(args)  # checked by run_lm before any work
    base, _ = zero_shot_eval(lm, dataset, zs, lm_size(lm), bar)
    other = fidelity = None
    if compressed is not None:
        other, _ = zero_shot_eval(compressed, dataset, zs, other_size, bar)
        fidelity = compare(base, other)
    bar.close()
    computed = statistics(base, other)
    print(format_results(lm.name, dataset, base, other, fidelity, report))
    print(f"zero-shot prompt {zs.prompt!r}; verbalizers {json.dumps(zs.verbalizers)}")
    print(f"acc_norm (length-normalised): baseline {base.metrics['acc_norm']:.4f}" + (
        f", compressed {other.metrics['acc_norm']:.4f}" if other is not None else ""))  # fmt: skip
    print("\n".join(record.note_lines(computed, None, False)))
    fingerprint = zero_shot_fingerprint(lm, zs.prompt, zs.verbalizers)
    run_id = record._store(
        args,
        lambda store, where: record_evaluation(
            store, base_model=lm, dataset=dataset, base=base, other=other, config=config,
            report=report, computed=computed, task="zero-shot", model_fp=fingerprint,
            **{**where, "rows": {**where["rows"], "prompt": zs.prompt,
                                 "verbalizers": dict(zs.verbalizers)}},
        ),
    )  # fmt: skip
    if args.json is not None:
        payload = results_json(
            lm, dataset, config, base, other, fidelity, report, dataset_source=args.dataset
        )
        for key, res in (("baseline", base), ("compressed", other)):
            if res is not None:
                payload[key]["metrics"]["acc_norm"] = res.metrics["acc_norm"]
        payload.update(prompt=zs.prompt, verbalizers=dict(zs.verbalizers))
        payload["model"] = args.model
        payload["run_id"] = run_id
        atomic.write_text(args.json, json.dumps(payload, indent=2))
    if args.predictions is not None:
        write_predictions(args.predictions, dataset, base, other)
    return 0
