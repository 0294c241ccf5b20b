"""``llmopt generate``: a causal LM and a compressed copy of it continue a prompt side by side."""

from __future__ import annotations

import json
from pathlib import Path

from llmopt import atomic
from llmopt.cli.common import positive_int, seed
from llmopt.errors import LlmoptError


def add_commands(sub) -> None:
    """Register ``generate``."""
    from llmopt.cli.compression_flags import add_compression_args
    from llmopt.cli.lm import add_device_args

    g = sub.add_parser(
        "generate", help="continue a prompt with a causal LM and a compressed copy, side by side"
    )
    g.add_argument("--model", required=True, help="a causal LM: checkpoint folder or hub id")
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument("--max-new-tokens", type=positive_int, default=32)
    g.add_argument("--seed", type=seed, default=0, help="of --sample (default 0)")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    add_device_args(g)
    g.add_argument(
        "--dataset", default="bundled", help="calibration texts for methods that need them"
    )
    g.add_argument("--text-column", default="text", help="text column of a CSV/HF dataset")
    g.add_argument("--label-column", default="label", help="label column of a CSV/HF dataset")
    add_compression_args(g)
    g.add_argument("--json", type=Path, help="write both continuations as JSON to this path")
    g.set_defaults(run=run_generate, save_model=None, predictions=None, overwrite=False)


def run_generate(args) -> int:
    from llmopt.cli.common import Bar
    from llmopt.cli.compression_flags import config_from_args
    from llmopt.cli.evaluate import check_outputs
    from llmopt.cli.lm import compress_lm, load_lm
    from llmopt.lm import generate_side_by_side
    from llmopt.lm.load import CAUSAL_LM, model_kind

    config = config_from_args(args, None)  # validate the knobs before any slow loading
    if model_kind(args.model) != CAUSAL_LM:
        raise LlmoptError(
            f"{args.model!r} is a sequence classifier, not a causal language model; generate "
            "needs a causal LM (GPT-2, OPT, Llama, Qwen2, …)"
        )
    check_outputs(args)
    prompt = args.prompt.replace("\\n", "\n")
    bar = Bar()
    lm = load_lm(args)
    compressed = None
    if config is not None:
        compressed, _, _ = compress_lm(args, lm, config, bar)
    bar.close()
    out = generate_side_by_side(
        lm, compressed, prompt, max_new_tokens=args.max_new_tokens, sample=args.sample,
        seed=args.seed,
    )  # fmt: skip
    print(format_generation(out))
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(out.to_dict(), indent=2))
    return 0


def format_generation(out) -> str:
    """The prompt, each continuation with its speed, and where they part."""
    lines = [f"prompt:     {out.prompt!r}"]
    sides = [("baseline", out.baseline)] + (
        [("compressed", out.compressed)] if out.compressed else []
    )
    for name, side in sides:
        lines.append(
            f"{name + ':':<11} {side.text!r} ({len(side.token_ids)} tokens, "
            f"{side.tokens_per_second:.1f} tokens/s)"
        )
    if out.compressed is not None:
        if out.first_divergence is None:
            lines.append("the two continuations are identical")
        else:
            i = out.first_divergence
            b = out.baseline.tokens[i] if i < len(out.baseline.tokens) else "(end)"
            c = out.compressed.tokens[i] if i < len(out.compressed.tokens) else "(end)"
            lines.append(f"first divergence at new token {i}: {b!r} vs {c!r}")
    return "\n".join(lines)
