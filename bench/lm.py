"""Benchmark the causal-LM stack on CPU: perplexity throughput against the matmul peak, bf16
against fp32, generation with and without the key/value cache, GPTQ and SparseGPT time.

Run: ``python bench/lm.py [--layers 12 --width 768 --seq-len 512 --windows 8]
[--calib-windows 32 --calib-seq-len 256] [--sections peak,perplexity,bf16,generate,compress]``.

Every ratio is measured in this one run: the fp32 matmul peak (a large ``torch.mm``) in the same
process as the perplexity pass it is compared to, bf16 beside fp32 on the same windows, the
cached beside the cache-free generation loop. The models are GPT-2-style decoders built from a
config with random weights (no download) and a byte-level BPE tokenizer trained on the bundled
reviews; the bf16 perplexity check uses a small model trained for a few seconds on the same
reviews, since random weights predict a near-uniform distribution (perplexity ≈ vocabulary).
The load average is printed beside every number: on a shared machine the ratios are the
meaningful figures, not the absolute times.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from machine import describe

from llmopt.lm.device import fuse_gelu
from llmopt.lm.load import LoadedLM

VOCAB = 8192
PROMPT = "This coffee is"


def load_text() -> str:
    """The 1-minute load average, as a short label printed beside each number."""
    return f"load {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "load n/a"


def review_texts(split: str = "train", limit: int | None = None) -> list[str]:
    from llmopt.data import load_dataset

    return load_dataset("bundled", split, limit=limit).texts


def make_tokenizer(texts: list[str], vocab: int = VOCAB):
    """A GPT-2-style byte-level BPE tokenizer trained on ``texts`` (end-of-text as pad/eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[eot],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, pad_token=eot, model_max_length=10**7
    )
    return fast


def make_lm(
    tokenizer, *, layers: int, width: int, positions: int, dtype: str = "fp32", seed: int = 0
) -> LoadedLM:
    """A GPT-2-style causal LM with random weights (SDPA attention), wrapped as a ``LoadedLM``."""
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=width,
        n_layer=layers,
        n_head=max(1, width // 64),
        n_positions=positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config._attn_implementation = "sdpa"
    model = tf.GPT2LMHeadModel(config).eval()
    fuse_gelu(model)  # as llmopt's loader does
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    return LoadedLM(
        model=model,
        tokenizer=tokenizer,
        name=f"gpt2-random-{layers}x{width}",
        source="random",
        dtype=dtype,
        device="cpu",
        max_length=positions,
    )


def as_dtype(lm: LoadedLM, dtype: str) -> LoadedLM:
    """A copy of ``lm`` in bf16 (weights cast) or fp32."""
    import copy

    model = copy.deepcopy(lm.model).to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    return LoadedLM(
        model=model.eval(),
        tokenizer=lm.tokenizer,
        name=f"{lm.name} {dtype}",
        source=lm.source,
        dtype=dtype,
        device="cpu",
        max_length=lm.max_length,
    )


def matmul_gflops(n: int = 2048, dtype: torch.dtype = torch.float32, seconds: float = 2.0) -> float:
    """The practical peak: best GFLOP/s of an n×n by n×n ``torch.mm`` over ~``seconds``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up (thread pool, packing buffers)
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops_per_token(model, seq_len: int) -> float:
    """Forward FLOPs per scored token: 2 × every matmul weight in the blocks and the output head
    (embedding look-ups are free) + the causal attention scores and mix, 2 × 2 × d × (average
    context seq_len / 2) per layer."""
    cfg = model.config
    d, layers = cfg.n_embd, cfg.n_layer
    block_weights = sum(
        p.numel()
        for n, p in model.transformer.h.named_parameters()
        if n.endswith("weight") and p.dim() == 2
    )
    head = model.get_output_embeddings().weight.numel()
    attention = layers * 2 * 2 * d * (seq_len / 2)
    return 2 * (block_weights + head) + attention


def eval_texts(tokenizer, n_tokens: int) -> list[str]:
    """Test reviews, enough of them to make ``n_tokens`` tokens joined."""
    texts, total = [], 0
    for t in review_texts("test"):
        texts.append(t)
        total += len(tokenizer(t)["input_ids"]) + 1
        if total > n_tokens * 1.05 + 64:
            break
    return texts


def time_perplexity(lm: LoadedLM, texts: list[str], seq_len: int, batch_size: int | None = None):
    """(result, tokens/s) of the paper protocol; the best of two passes (the first warms up)."""
    from llmopt.lm.perplexity import perplexity

    best = None
    for _ in range(2):
        result = perplexity(lm, texts, seq_len=seq_len, batch_size=batch_size)
        if best is None or result.seconds < best.seconds:
            best = result
    return best, best.tokens_per_second


def section_perplexity(
    lm: LoadedLM, texts, seq_len: int, peak: float, batch_sizes
) -> tuple[dict, object]:
    """Throughput per batch size; returns (figures, the default batch size's fp32 result)."""
    fpt = flops_per_token(lm.model, seq_len)
    print(
        f"\n## Perplexity throughput ({lm.name}, seq_len {seq_len}, fp32, SDPA attention, "
        f"{torch.get_num_threads()} threads)"
    )
    print(f"FLOPs per scored token: {fpt / 1e6:.1f} M")
    out, default = {}, None
    for bs in batch_sizes:
        result, tps = time_perplexity(lm, texts, seq_len, bs)
        if bs is None:
            default = result
        gflops = tps * fpt / 1e9
        label = bs if bs is not None else "default"
        print(
            f"batch {label}: {result.n_tokens} tokens in {result.seconds:.2f} s = {tps:.0f} tok/s "
            f"= {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% of the fp32 matmul peak "
            f"({load_text()})"
        )
        out[label] = {"tokens_per_second": tps, "gflops": gflops, "fraction": gflops / peak}
    return out, default


def train_small(tokenizer, texts: list[str], *, seconds: float, seq_len: int = 128) -> LoadedLM:
    """A 2-block × 128 model trained for ``seconds`` on ``texts`` (fp32), so that its
    predictions are peaked enough for a bf16 perplexity check to mean something."""
    from llmopt.lm.windows import paper_windows

    lm = make_lm(tokenizer, layers=2, width=128, positions=seq_len, seed=1)
    model = lm.model.train()
    windows, _ids, _ends = paper_windows(tokenizer, texts, seq_len)
    data = torch.tensor(windows.tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch = data[torch.randint(len(data), (16,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    lm.name = f"gpt2-trained-2x128 ({steps} steps)"
    return lm


def section_bf16(
    big: LoadedLM, texts, seq_len: int, small: LoadedLM, small_texts, fp32=None
) -> dict:
    """bf16 against fp32; ``fp32``: the perplexity section's fp32 result on the same windows
    (timed once: only measured here when that section did not run)."""
    from llmopt.lm.device import native_bf16

    print(f"\n## bf16 vs fp32 (native bf16 on this CPU: {native_bf16()})")
    if not native_bf16():
        print("this CPU has no native bf16: torch emulates it, so bf16 is not timed")
        return {"native": False}
    big16 = as_dtype(big, "bf16")
    r32, t32 = (fp32, fp32.tokens_per_second) if fp32 else time_perplexity(big, texts, seq_len)
    r16, t16 = time_perplexity(big16, texts, seq_len)
    rel_nll = (r16.nll.sum() - r32.nll.sum()) / r32.nll.sum()
    print(
        f"{big.name}: fp32 {t32:.0f} tok/s, bf16 {t16:.0f} tok/s = {t16 / t32:.2f}x "
        f"({load_text()}); mean NLL {r32.nll.sum() / r32.n_tokens:.4f} vs "
        f"{r16.nll.sum() / r16.n_tokens:.4f} nats ({100 * rel_nll:+.3f}%; random weights)"
    )
    s32, _ = time_perplexity(small, small_texts, small.max_length)
    s16, _ = time_perplexity(as_dtype(small, "bf16"), small_texts, small.max_length)
    rel_ppl = s16.perplexity / s32.perplexity - 1
    print(
        f"{small.name}: perplexity fp32 {s32.perplexity:.3f}, bf16 {s16.perplexity:.3f} "
        f"({100 * rel_ppl:+.3f}%) on {s32.n_tokens} test tokens ({load_text()})"
    )
    return {
        "native": True,
        "speedup": t16 / t32,
        "rel_nll_random": float(rel_nll),
        "rel_ppl_trained": float(rel_ppl),
        "ppl_fp32": s32.perplexity,
    }


def bench_prompt(tokenizer, n_tokens: int) -> str:
    """A prompt of about ``n_tokens`` tokens: the start of the test reviews (``PROMPT`` when
    ``n_tokens`` is no longer than it)."""
    if n_tokens <= len(tokenizer(PROMPT)["input_ids"]):
        return PROMPT
    from llmopt.lm.windows import PAPER_JOIN

    ids = tokenizer(PAPER_JOIN.join(review_texts("test", limit=50)))["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


def section_generate(lm: LoadedLM, new_tokens: int, prompt: str) -> dict:
    """Greedy generation with the key/value cache against the cache-free loop (each step a
    full forward of the sequence so far; the same per-step work otherwise)."""
    from llmopt.lm.generate import generate_side_by_side

    n_prompt = len(lm.tokenizer(prompt)["input_ids"])
    print(
        f"\n## Generation, {new_tokens} new tokens greedy after a {n_prompt}-token prompt "
        f"({lm.name})"
    )
    runs = {}
    for use_cache in (True, False):
        kw = {"max_new_tokens": new_tokens, "stop_at_eos": False, "use_cache": use_cache}
        generate_side_by_side(lm, None, prompt, **{**kw, "max_new_tokens": 2})  # warm-up
        runs[use_cache] = generate_side_by_side(lm, None, prompt, **kw).baseline
    cached, plain = runs[True], runs[False]
    same = cached.token_ids == plain.token_ids
    ratio = cached.tokens_per_second / plain.tokens_per_second
    print(
        f"KV cache {cached.tokens_per_second:.1f} tok/s, cache-free {plain.tokens_per_second:.1f} "
        f"tok/s = {ratio:.1f}x; identical tokens: {same} ({load_text()})"
    )
    return {
        "speedup": ratio,
        "identical": same,
        "tokens": len(cached.token_ids),
        "prompt_tokens": n_prompt,
    }


def section_compress(lm: LoadedLM, calib_windows: int, calib_seq_len: int) -> dict:
    from llmopt.compression import CompressionConfig, compress
    from llmopt.data import TextDataset

    texts = review_texts("train")
    calibration = TextDataset(texts, [0] * len(texts), ["review"], "bundled", split="train")
    print(
        f"\n## Compression time ({lm.name}, {calib_windows} calibration windows of "
        f"{calib_seq_len} tokens, {torch.get_num_threads()} threads)"
    )
    out = {}
    configs = {
        "GPTQ 4-bit": CompressionConfig(
            bits=4, quant_method="gptq", calibration_samples=calib_windows
        ),
        "SparseGPT 50%": CompressionConfig(
            sparsity=0.5, sparsity_method="sparsegpt", calibration_samples=calib_windows
        ),
    }
    for label, config in configs.items():
        start, cpu = time.perf_counter(), time.process_time()
        compress(lm, config, calibration=calibration, seq_len=calib_seq_len)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        # the CPU time of this process: on a shared machine the wall time also counts the
        # other processes' turns; CPU seconds / threads is what a quiet machine would take
        # at best (busy-waiting threads count too, so it is no lower bound)
        print(
            f"{label}: {seconds:.1f} s wall, {cpu:.1f} CPU seconds over "
            f"{torch.get_num_threads()} threads ({load_text()})"
        )
        out[label] = seconds
    return out


SECTIONS = ("peak", "perplexity", "bf16", "generate", "compress")


def run(args) -> dict:
    """Every section asked for; returns the measured figures (the smoke test reads them)."""
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}; from {SECTIONS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    train = review_texts("train")
    tokenizer = make_tokenizer(train[: args.tokenizer_texts], args.vocab)
    prompt = bench_prompt(tokenizer, args.prompt_tokens)
    positions = max(args.seq_len, len(tokenizer(prompt)["input_ids"]) + args.new_tokens, 128)
    lm = make_lm(tokenizer, layers=args.layers, width=args.width, positions=positions)
    texts = eval_texts(tokenizer, args.windows * args.seq_len)
    results: dict = {"threads": torch.get_num_threads()}
    peak, fp32 = None, None
    if sections & {"peak", "perplexity"}:
        peak = matmul_gflops(args.matmul_n, seconds=args.peak_seconds)
        print(
            f"\nfp32 matmul peak ({args.matmul_n}^3 torch.mm): {peak:.1f} GFLOP/s ({load_text()})"
        )
        results["peak_gflops"] = peak
    if "perplexity" in sections:
        assert peak is not None
        sizes = [None, *args.batch_sizes]
        results["perplexity"], fp32 = section_perplexity(lm, texts, args.seq_len, peak, sizes)
        after = matmul_gflops(args.matmul_n, seconds=args.peak_seconds)
        print(f"fp32 matmul peak measured again after: {after:.1f} GFLOP/s ({load_text()})")
        if after > peak:  # the higher of the two is the fairer denominator on a busy machine
            for row in results["perplexity"].values():
                row["fraction"] = row["gflops"] / after
            print(
                "against the higher peak: "
                + ", ".join(
                    f"batch {k}: {100 * v['fraction']:.0f}%"
                    for k, v in results["perplexity"].items()
                )
            )
        results["peak_gflops"] = max(peak, after)
    if "bf16" in sections:
        small = train_small(tokenizer, train[: args.tokenizer_texts], seconds=args.train_seconds)
        small_texts = eval_texts(tokenizer, 8 * args.windows * small.max_length)
        results["bf16"] = section_bf16(lm, texts, args.seq_len, small, small_texts, fp32)
    if "generate" in sections:
        results["generate"] = section_generate(lm, args.new_tokens, prompt)
    if "compress" in sections:
        results["compress"] = section_compress(lm, args.calib_windows, args.calib_seq_len)
    print(f"\nfinished ({load_text()})")
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--vocab", type=int, default=VOCAB)
    p.add_argument("--tokenizer-texts", type=int, default=4000)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--windows", type=int, default=8, help="paper windows timed")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 4])
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--peak-seconds", type=float, default=3.0)
    p.add_argument("--train-seconds", type=float, default=30.0)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument(
        "--prompt-tokens", type=int, default=64, help="generation prompt: test reviews' start"
    )
    p.add_argument("--calib-windows", type=int, default=32)
    p.add_argument("--calib-seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--sections", default=",".join(SECTIONS))
    return p


if __name__ == "__main__":
    run(parser().parse_args())
