"""Benchmark training on the bundled model: fine-tune, recovery, distillation, gradual pruning.

Run: ``python bench/training.py [--rows 1000] [--only finetune,recovery,distill,gradual]``.
Every number is measured in this one run on the same bundled test reviews, with the library's
default recipes (the ones the CLI and the app use). Latencies of teacher and student are
measured on the same batches, interleaved, so background load hits both alike. The machine's
load average is printed at the start and the end of each section: on a shared machine, compare
wall times only with the load beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import llmopt
from llmopt.batching import accepts_token_types, encode, iter_batches
from llmopt.compression import CompressionConfig, compress
from llmopt.training.config import RECOVERY, TrainConfig
from llmopt.training.distill import DISTILL, distill
from llmopt.training.finetune import finetune, recover
from llmopt.training.gradual import GRADUAL, prune_gradual

SECTIONS = ("finetune", "recovery", "distill", "gradual", "trainer")
RECOVERY_CASES = [
    ("Wanda 50%", CompressionConfig(sparsity=0.5, sparsity_method="wanda")),
    ("3-bit group 64", CompressionConfig(bits=3, group_size=64)),
    ("rank 128", CompressionConfig(rank=128)),
]
ROUNDS = 3  # timings of each batch per model; the fastest counts
GRADUAL_ROWS = [None]  # --gradual-rows: fewer training rows than the library's default
METHODS = ["magnitude"]  # gradual vs one-shot: --methods magnitude,wanda compares both
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats with 3 decimals."""

    def cell(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    has = [f for f in FLAGS if f in flags]
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, flags: {', '.join(has) or 'none of ' + ', '.join(FLAGS)}"
    )


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def kept(result, base) -> str:
    return f"{100 * result.metrics['accuracy'] / base.metrics['accuracy']:.1f}%"


def section_finetune(model, base, train, test) -> None:
    print(f"\n## Fine-tuning the top layers ({load()})\n")
    config = TrainConfig()
    from llmopt.training.timing import estimate_seconds

    est = estimate_seconds(model, train, config, eval_rows=len(test))["seconds"]
    start = time.perf_counter()
    run = finetune(model, train, config, eval_data=test)
    wall = time.perf_counter() - start
    print(f"the Train page's estimate before starting: {est:.0f} s; measured: {wall:.0f} s\n")
    rows = [
        [
            "frozen encoder + logistic-regression head",
            base.metrics["accuracy"],
            base.metrics["roc_auc"],
            "",
            "",
        ],
        [
            f"fine-tuned (layers: {config.train_layers}, {config.epochs:g} epochs, "
            f"{run.train_rows} rows)",
            run.after.metrics["accuracy"],
            run.after.metrics["roc_auc"],
            f"{wall:.0f}",
            f"{len(run.history)} validations, best at step "
            f"{max(run.history, key=lambda h: h['val_accuracy'])['step']}",
        ],
    ]
    print(table(["model", "accuracy", "AUC", "wall (s)", "note"], rows))
    target = run.after.metrics["accuracy"] >= 0.80 and run.after.metrics["roc_auc"] >= 0.86
    print(
        f"\ntarget (accuracy >= 0.80, AUC >= 0.86, <= 300 s): "
        f"{'met' if target and wall <= 300 else 'NOT met'}; {load()}"
    )


def section_recovery(model, base, train, test) -> None:
    print(f"\n## Recovery after compression ({load()})\n")
    rows = []
    for label, config in RECOVERY_CASES:
        start = time.perf_counter()
        compressed, _ = compress(model, config, calibration=train)
        before = llmopt.evaluate(compressed, test)
        t0 = time.perf_counter()
        head = recover(compressed, train, "head")
        t_head = time.perf_counter() - t0
        after_head = llmopt.evaluate(head.model, test)
        t0 = time.perf_counter()
        tuned = recover(compressed, train, "finetune")
        t_ft = time.perf_counter() - t0
        after_ft = llmopt.evaluate(tuned.model, test)
        rows.append(
            [
                label,
                f"{before.metrics['accuracy']:.3f} ({kept(before, base)})",
                f"{after_head.metrics['accuracy']:.3f} ({kept(after_head, base)})",
                f"{t_head:.0f}",
                f"{after_ft.metrics['accuracy']:.3f} ({kept(after_ft, base)})",
                f"{t_ft:.0f}",
                f"{after_ft.metrics['roc_auc']:.3f}",
            ]
        )
        print(f"{label}: done in {time.perf_counter() - start:.0f} s ({load()})", flush=True)
    print(
        f"\nuncompressed: accuracy {base.metrics['accuracy']:.3f}, AUC "
        f"{base.metrics['roc_auc']:.3f}; recovery fine-tune: {RECOVERY.epochs:g} epoch, "
        f"layers {RECOVERY.train_layers}, {RECOVERY.train_limit} rows\n"
    )
    print(
        table(
            [
                "compression",
                "before (kept)",
                "head re-fit (kept)",
                "head s",
                "fine-tune (kept)",
                "fine-tune s",
                "AUC after fine-tune",
            ],
            rows,
        )
    )


@torch.inference_mode()
def interleaved_latency(models: dict, test) -> dict[str, float]:
    """ms per sample of each model on the same batches, each batch timed ROUNDS times per model
    in turn; the fastest time of each model on each batch counts."""
    first = next(iter(models.values()))
    enc = encode(
        first.tokenizer, test.texts, first.max_length, token_types=accepts_token_types(first.model)
    )
    batches = [inputs for _rows, inputs in iter_batches(enc, 32)]
    for m in models.values():
        m.model(**batches[-1])
    seconds = dict.fromkeys(models, 0.0)
    for inputs in batches:
        best = dict.fromkeys(models, float("inf"))
        for _ in range(ROUNDS):
            for name, m in models.items():
                start = time.perf_counter()
                m.model(**inputs)
                best[name] = min(best[name], time.perf_counter() - start)
        for name in models:
            seconds[name] += best[name]
    return {n: 1000 * s / len(test) for n, s in seconds.items()}


def section_distill(model, base, train, test, n_layers: int = 3) -> None:
    print(f"\n## Distillation to a {n_layers}-layer student ({load()})\n")
    start = time.perf_counter()
    run = distill(model, train, n_layers=n_layers, eval_data=test)
    wall = time.perf_counter() - start
    ms = interleaved_latency({"teacher": model, "student": run.model}, test)
    fid = llmopt.compare(run.before, run.after)
    rows = [
        [
            "teacher (6 layers)",
            run.before.metrics["accuracy"],
            run.before.metrics["roc_auc"],
            "100%",
            f"{ms['teacher']:.2f}",
            "1.00x",
            f"{run.before.size_bytes / 1e6:.1f}",
        ],
        [
            f"student (layers {run.recipe['layers']})",
            run.after.metrics["accuracy"],
            run.after.metrics["roc_auc"],
            kept(run.after, run.before),
            f"{ms['student']:.2f}",
            f"{ms['teacher'] / ms['student']:.2f}x",
            f"{run.after.size_bytes / 1e6:.1f}",
        ],
    ]
    print(table(["model", "accuracy", "AUC", "kept", "ms/sample", "speed-up", "MB"], rows))
    ratio = run.after.metrics["accuracy"] / run.before.metrics["accuracy"]
    speed = ms["teacher"] / ms["student"]
    print(
        f"\nagreement with the teacher {fid['agreement']:.3f}; training {wall:.0f} s "
        f"(T={run.recipe['temperature']}, alpha={run.recipe['alpha']}, "
        f"{DISTILL.epochs:g} epochs, {run.train_rows} rows); latency: {len(test)} rows, "
        f"batches of 32, {ROUNDS} interleaved rounds, fastest counts"
    )
    print(
        f"target (>= 97% of the teacher's accuracy, >= 1.8x faster): "
        f"{'met' if ratio >= 0.97 and speed >= 1.8 else 'NOT met'} "
        f"({100 * ratio:.1f}%, {speed:.2f}x); {load()}"
    )


def section_gradual(model, base, train, test, sparsity: float = 0.7) -> None:
    print(f"\n## Gradual pruning to {sparsity:.0%} against one-shot ({load()})\n")
    rows = []
    for method in METHODS:
        start = time.perf_counter()
        one, _ = compress(
            model, CompressionConfig(sparsity=sparsity, sparsity_method=method), calibration=train
        )
        one_r = llmopt.evaluate(one, test)
        t_one = time.perf_counter() - start
        start = time.perf_counter()
        config = GRADUAL.with_(train_limit=GRADUAL_ROWS[0])
        run = prune_gradual(model, train, sparsity, method=method, config=config, eval_data=test)
        t_grad = time.perf_counter() - start
        rows.append(
            [
                method,
                f"{one_r.metrics['accuracy']:.3f} ({kept(one_r, base)})",
                f"{t_one:.0f}",
                f"{run.after.metrics['accuracy']:.3f} ({kept(run.after, base)})",
                f"{t_grad:.0f}",
                f"{run.schedule[-1]['achieved']:.3f}",
                "yes" if run.after.metrics["accuracy"] > one_r.metrics["accuracy"] else "NO",
            ]
        )
        print(f"{method}: done ({load()})", flush=True)
    print(
        f"\npolynomial schedule 0 -> {sparsity} over the first 70% of the steps, "
        f"{GRADUAL.epochs:g} epochs, layers {GRADUAL.train_layers}, "
        f"{GRADUAL_ROWS[0] or GRADUAL.train_limit} rows\n"
    )
    print(
        table(
            [
                "method",
                "one-shot (kept)",
                "one-shot s",
                "gradual (kept)",
                "gradual s",
                "sparsity reached",
                "gradual better",
            ],
            rows,
        )
    )


def _hand_loop(loaded, train, config, steps: int) -> float:
    """Seconds for ``steps`` plain PyTorch steps (AdamW, linear schedule, same batches)."""
    import copy

    from llmopt.training.loop import _collate, _Rows, select_trainable

    model = copy.deepcopy(loaded.model)
    select_trainable(model, config.train_layers)
    enc = encode(
        loaded.tokenizer, train.texts, config.max_length, token_types=accepts_token_types(model)
    )
    rows = _Rows(enc, train.labels)
    collate = _collate(enc.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    from transformers.trainer_pt_utils import LengthGroupedSampler

    order = list(
        LengthGroupedSampler(
            config.batch_size, dataset=rows, generator=torch.Generator().manual_seed(config.seed)
        )
    )
    model.train()
    start = time.perf_counter()
    for i in range(steps):  # length-grouped batches, as Trainer's
        batch = collate(
            [rows[j] for j in order[i * config.batch_size : (i + 1) * config.batch_size]]
        )
        labels, _ = batch.pop("labels"), batch.pop("rows")
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    return time.perf_counter() - start


def section_trainer(model, base, train, test, steps: int = 20) -> None:
    """Hugging Face Trainer against a plain PyTorch loop: the same steps, interleaved."""
    from llmopt.training.finetune import copy_model
    from llmopt.training.loop import make_loop, prepare_rows, select_trainable

    print(f"\n## Trainer against a hand-written loop ({load()})\n")
    config = TrainConfig(val_fraction=0.0, patience=None, warmup_ratio=0.0)
    rows, _ = prepare_rows(model, train, config)
    rows = rows.subset(steps * config.batch_size)  # exactly ``steps`` batches
    times = {"Trainer (llmopt's loop)": [], "plain PyTorch loop": []}
    for _ in range(2):
        work = copy_model(model, "timed")
        select_trainable(work.model, config.train_layers)
        loop = make_loop(work, rows, None, config.with_(epochs=1.0), "finetune")
        start = time.perf_counter()
        loop.run()
        times["Trainer (llmopt's loop)"].append(time.perf_counter() - start)
        times["plain PyTorch loop"].append(_hand_loop(model, rows, config, steps))
    best = {k: min(v) for k, v in times.items()}
    base_s = best["plain PyTorch loop"]
    print(
        table(
            ["loop", "s per step (best of 2)", "relative"],
            [[k, f"{v / steps:.3f}", f"{v / base_s:.2f}x"] for k, v in best.items()],
        )
    )
    print(
        f"\n{steps} steps of {config.batch_size} rows, layers {config.train_layers}, rounds "
        f"interleaved; the Trainer time includes its set-up; {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="bundled test reviews to use")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    parser.add_argument("--methods", default="magnitude", help="pruning methods for gradual")
    parser.add_argument("--gradual-rows", type=int, help="training rows for gradual pruning")
    args = parser.parse_args()
    METHODS[:] = [m.strip() for m in args.methods.split(",") if m.strip()]
    GRADUAL_ROWS[0] = args.gradual_rows
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    print(f"# Training benchmark\n\n{machine()}; {load()}")
    model = llmopt.load_model("bundled")
    train = llmopt.load_dataset("bundled", "train")
    test = llmopt.load_dataset("bundled", "test", limit=args.rows)
    base = llmopt.evaluate(model, test)
    print(
        f"bundled model on {len(test)} test reviews: accuracy {base.metrics['accuracy']:.3f}, "
        f"AUC {base.metrics['roc_auc']:.3f}"
    )
    for name in only:
        start = time.perf_counter()
        globals()[f"section_{name}"](model, base, train, test)
        print(f"\n(section {name}: {time.perf_counter() - start:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main()
