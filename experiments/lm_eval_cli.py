"""`decodelab-lm-eval`: lm-evaluation-harness's own command line, with the "decodelab" model registered.

lm-eval 0.4.x finds models only in its own registry table (no entry points for outside packages), so
`lm_eval --model decodelab` cannot see ours; this command imports `experiments.lm_eval_model` (which
registers it) and hands every argument to lm-eval's CLI unchanged:

    decodelab-lm-eval run --model decodelab --model_args model=smollm2,do_sample=True,temperature=0.7 \
        --tasks sotu_next_sentence --include_path experiments/lm_eval_tasks --limit 20
    python -m experiments.lm_eval_cli ls tasks --include_path experiments/lm_eval_tasks
"""

from __future__ import annotations

import experiments.lm_eval_model  # noqa: F401  (registers "decodelab")
from lm_eval.__main__ import cli_evaluate


def main() -> None:
    cli_evaluate()


if __name__ == "__main__":
    main()
