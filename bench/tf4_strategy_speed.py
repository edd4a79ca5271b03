"""The transformers 4.x side of bench/strategy_speed.py: time 4.x's own contrastive search and DoLa.

Why a separate script: transformers 5 moved both out of its core, so the reference is the last 4.x release
(4.55.4), which lives in its own interpreter (tests/goldens/make_reference_venv.sh). bench/strategy_speed.py
writes the job as JSON (the model folder, the thread count, the prompts' token ids and masks batch by batch, the
generate arguments of each cell) and runs, from the repository root,

    /work/ref-tf4/bin/python -m bench.tf4_strategy_speed job.json result.json

This script needs only torch and transformers (plus the golden scripts' model loader and weights fingerprint,
which import nothing else), so it runs under that interpreter: it loads the exported model folder
(tests/goldens/export_models.py) as the golden scripts do, warms each cell up once, runs every batch under every
cell through `model.generate`, and writes back each run's output token ids and wall-clock seconds, the
versions and the weights fingerprint (checked by the caller against its own model).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import transformers

from tests.goldens.fingerprint import weights_fingerprint
from tests.goldens.tf4_common import load_for_tf4


def timed_generate(model, ids: torch.Tensor, mask: torch.Tensor, kwargs: dict) -> tuple[list[list[int]], float]:
    """(output ids, seconds) of one `model.generate` call (CUDA synchronised on both sides when present)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out.tolist(), time.perf_counter() - start


def main(job_file: Path, result_file: Path) -> None:
    job = json.loads(job_file.read_text())
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    model = load_for_tf4(Path(job["model"])).to(device)
    batches = [(torch.tensor(b["input_ids"], device=device), torch.tensor(b["attention_mask"], device=device))
               for b in job["batches"]]
    results = []
    with torch.inference_mode():
        for name, cell in job["cells"].items():
            kwargs = {**job["common"], **cell}
            ids, mask = batches[0]
            model.generate(ids, attention_mask=mask, **{**kwargs, "max_new_tokens": 2})  # warm-up, untimed
        for index, (ids, mask) in enumerate(batches):  # cells interleaved batch by batch, as the caller runs them
            for name, cell in job["cells"].items():
                sequences, seconds = timed_generate(model, ids, mask, {**job["common"], **cell})
                results.append({"cell": name, "batch": index, "seconds": seconds, "sequences": sequences})
    result_file.write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                                       "fingerprint": weights_fingerprint(model), "results": results}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.tf4_strategy_speed job.json result.json (from the repository root)")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
