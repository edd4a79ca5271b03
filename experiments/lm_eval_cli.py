"""`decodelab-lm-eval`: lm-evaluation-harness's own command line, with the "decodelab" model registered.

lm-eval 0.4.x finds models only in its own registry table (no entry points for outside packages), so
`lm_eval --model decodelab` cannot see ours; this command imports `experiments.lm_eval_model` (which
registers it) and hands every argument to lm-eval's CLI unchanged:

    decodelab-lm-eval run --model decodelab --model_args model=smollm2,do_sample=True,temperature=0.7 \
        --tasks sotu_next_sentence --include_path experiments/lm_eval_tasks --limit 20
    python -m experiments.lm_eval_cli ls tasks --include_path experiments/lm_eval_tasks
"""

from __future__ import annotations

import sys

import experiments.lm_eval_model  # noqa: F401  (registers "decodelab")
from lm_eval.__main__ import cli_evaluate


def with_device(argv: list[str]) -> list[str]:
    """lm-eval's config defaults `device` to "cuda:0" even without CUDA (HFLM then falls back to the CPU
    quietly); DecodelabLM refuses a device that is not there. So a `run` without `--device` on a machine
    without CUDA gets `--device cpu`, said on stderr."""
    import torch

    runs = bool(argv) and (argv[0] == "run" or argv[0].startswith("--"))
    if not runs or "--device" in argv or any(a.startswith("--device=") for a in argv) or torch.cuda.is_available():
        return argv
    print("decodelab-lm-eval: no CUDA here and no --device given: running with --device cpu", file=sys.stderr)
    return [*argv, "--device", "cpu"]


def main() -> None:
    sys.argv = [sys.argv[0], *with_device(sys.argv[1:])]
    cli_evaluate()


if __name__ == "__main__":
    main()
