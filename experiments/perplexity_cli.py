"""Perplexity on its own, until the Hydra runner grows `task=perplexity`:

    python -m experiments.perplexity_cli --dataset sotu --split test --max-length 512 [--stride N]
        [--model smollm2] [--out DIR]

Prints the corpus numbers and writes `DIR/metrics.json` (flat keys `ppl/token`, `ppl/word`, `ppl/byte`,
`ppl/bpb` plus counts and settings) and `DIR/documents.jsonl` (one line per scored document). Both are
written to a temporary file and renamed into place, so a crash never leaves a half-written file.
The flags are the keyword arguments of `experiments.data.load_documents` and
`experiments.perplexity.corpus_perplexity`, which the runner will call from its configs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from experiments.data import SOURCES, load_documents
from experiments.logging import write_atomic
from experiments.models import load_model
from experiments.perplexity import corpus_perplexity


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.perplexity_cli",
                                     description="Rolling-window perplexity of a dataset's documents.")
    parser.add_argument("--dataset", default="sotu", choices=SOURCES, help="document source (default: sotu)")
    parser.add_argument("--split", default="test", help="sotu: train|validation|test|all; hub: a split name")
    parser.add_argument("--name", help="hub dataset id (--dataset hub)")
    parser.add_argument("--config", help="hub dataset config (--dataset hub)")
    parser.add_argument("--path", help="file, folder or glob (--dataset files)")
    parser.add_argument("--format", help="text|jsonl|csv|parquet (--dataset files; default: from the suffix)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--limit", type=int, help="score only the first N documents")
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny_llama, tiny_gpt2, or a hub id / path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantization", choices=["int8_weight_only", "int4_weight_only"],
                        help="weight-only quantization (torchao; experiments/quantization.py)")
    parser.add_argument("--quantization-group-size", type=int, help="int4: inputs per scale (default: the smallest "
                        "of 32/64/128 that fits)")
    parser.add_argument("--max-length", type=int, default=512, help="model inputs per window (default: 512)")
    parser.add_argument("--stride", type=int, help="overlapping windows moving on by N tokens (default: disjoint)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="outputs/perplexity", help="folder for metrics.json and documents.jsonl")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, score, write; returns the metrics written to metrics.json."""
    documents = load_documents(args.dataset, args.split, name=args.name, config=args.config, path=args.path,
                               format=args.format, text_column=args.text_column, limit=args.limit)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, quantization=args.quantization,
                                  quantization_group_size=args.quantization_group_size)
    report = corpus_perplexity(model, tokenizer, documents, max_length=args.max_length, stride=args.stride,
                               batch_size=args.batch_size, progress=not args.no_progress)
    metrics: dict[str, Any] = report.metrics("ppl")
    metrics.update({"dataset": args.dataset, "split": args.split, "model": args.model, "dtype": args.dtype,
                    "quantization": args.quantization,
                    "max_length": args.max_length, "stride": args.stride or args.max_length})
    out = Path(args.out)
    write_atomic(out / "documents.jsonl", "".join(json.dumps(row) + "\n" for row in report.per_text()))
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    metrics = run(args)
    print(f"{args.model} on {args.dataset}/{args.split}: {metrics['ppl/documents']} documents "
          f"({metrics['ppl/skipped_empty']} empty skipped), {metrics['ppl/tokens']} tokens, "
          f"{metrics['ppl/windows']} windows of {args.max_length}, stride {metrics['stride']}")
    for key in ("ppl/token", "ppl/word", "ppl/byte", "ppl/bpb"):
        if key in metrics:
            print(f"  {key:<10} {metrics[key]:.4f}")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
