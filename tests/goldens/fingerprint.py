"""A weights fingerprint both transformers 4.x and 5.x compute alike (only torch is imported).

Why: a golden output is only evidence if it came from the same weights the test runs. The sum of each
parameter (float64) over the named parameters, tied weights counted once, changes when the fixture's
initialisation changes; the tests compare it to the golden file's value before comparing tokens.
"""

from __future__ import annotations

import torch


def weights_fingerprint(model: torch.nn.Module) -> float:
    total = 0.0
    for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        total += float(param.detach().to(torch.float64).sum())
    return round(total, 6)
