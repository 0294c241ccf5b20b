"""fp32 evaluation against ONNX Runtime's fused BERT graph on the same rows (interleaved).

Run: ``pip install -r requirements-bench.txt && python bench/ort.py [--rows 500]``. The bundled
classifier is exported to ONNX, its graph optimised with ONNX Runtime's BERT fusions (fused
attention, LayerNorm, GELU), and both run the same padded batches on the same threads; each
batch is timed ROUNDS times per engine, interleaved, and the fastest counts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import llmopt
from llmopt.attention import attention_implementation
from llmopt.batching import accepts_token_types, encode, iter_batches

ROUNDS = 3


def export(loaded, path: Path, sample: dict) -> Path:
    """The classifier as an ONNX graph with dynamic batch and sequence axes, BERT-fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    names = list(sample)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    raw = path / "model.onnx"
    with attention_implementation(loaded.model, "eager"), torch.no_grad():
        torch.onnx.export(
            loaded.model,
            (),
            str(raw),
            kwargs=dict(sample),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            dynamo=False,
            opset_version=17,
        )
    config = loaded.model.config
    fused = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    out = path / "fused.onnx"
    fused.save_model_to_file(str(out))
    ops = {}
    for node in fused.model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(
        f"fused graph: {ops.get('Attention', 0) + ops.get('MultiHeadAttention', 0)} fused "
        f"attention, {ops.get('SkipLayerNormalization', 0)} SkipLayerNorm, "
        f"{ops.get('BiasGelu', 0) + ops.get('FastGelu', 0) + ops.get('Gelu', 0)} GELU nodes"
    )
    return out


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    loaded = llmopt.load_model("bundled")
    test = llmopt.load_dataset("bundled", "test", limit=args.rows)
    encoded = encode(
        loaded.tokenizer,
        test.texts,
        loaded.max_length,
        token_types=accepts_token_types(loaded.model),
    )
    batches = list(iter_batches(encoded, 32))
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = export(loaded, Path(tmp), batches[-1][1])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = [{k: v.numpy() for k, v in inputs.items()} for _rows, inputs in batches]
        session.run(None, feeds[-1])
        with torch.inference_mode(), attention_implementation(loaded.model, "sdpa"):
            loaded.model(**batches[-1][1])
            seconds = {"llmopt fp32 (fused SDPA)": 0.0, "ONNX Runtime fused graph": 0.0}
            probs = {k: np.zeros((len(test), 2)) for k in seconds}
            for (rows, inputs), feed in zip(batches, feeds, strict=True):
                best = dict.fromkeys(seconds, float("inf"))
                for _ in range(ROUNDS):
                    start = time.perf_counter()
                    ours = loaded.model(**inputs).logits
                    best["llmopt fp32 (fused SDPA)"] = min(
                        best["llmopt fp32 (fused SDPA)"], time.perf_counter() - start
                    )
                    start = time.perf_counter()
                    theirs = session.run(None, feed)[0]
                    best["ONNX Runtime fused graph"] = min(
                        best["ONNX Runtime fused graph"], time.perf_counter() - start
                    )
                probs["llmopt fp32 (fused SDPA)"][rows] = torch.softmax(ours.double(), -1).numpy()
                probs["ONNX Runtime fused graph"][rows] = torch.softmax(
                    torch.as_tensor(theirs).double(), -1
                ).numpy()
                for k in seconds:
                    seconds[k] += best[k]
    ms = {k: 1000 * v / len(test) for k, v in seconds.items()}
    ours, theirs = ms.values()
    agree = float(
        (
            probs["llmopt fp32 (fused SDPA)"].argmax(1)
            == probs["ONNX Runtime fused graph"].argmax(1)
        ).mean()
    )
    print(
        f"# fp32 vs ONNX Runtime {ort.__version__}: {len(test)} reviews, batches of 32, "
        f"{threads} threads, load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| engine | ms/sample |\n|---|---|")
    for k, v in ms.items():
        print(f"| {k} | {v:.2f} |")
    print(
        f"\nllmopt / ONNX Runtime speed: {theirs / ours:.2f}x (>= 1.0 means llmopt is not "
        f"slower); predictions agree on {agree:.3f}"
    )


if __name__ == "__main__":
    main()
