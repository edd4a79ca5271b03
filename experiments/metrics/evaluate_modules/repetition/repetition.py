"""`evaluate` module: % of generations ending in a repetition loop (Holtzman et al. 2020,
`degen/metrics/repetition.py`).

Detection rule: `experiments/metrics/repetition.py`. This script only adapts the interface.
"""

import datasets
import evaluate

from experiments.metrics.evaluate_modules import predictions_to_tokens
from experiments.metrics.repetition import MAX_PHRASE_LENGTH, repetition_pct

_CITATION = """\
@inproceedings{holtzman2020curious, title={The Curious Case of Neural Text Degeneration},
  author={Holtzman, Ari and Buys, Jan and Du, Li and Forbes, Maxwell and Choi, Yejin}, booktitle={ICLR}, year={2020}}
"""

_KWARGS = """
Args:
    predictions: list of generated texts.
    tokenizer: optional Hugging Face tokenizer; loops are found in its tokens. Without one, whitespace words.
    tokenization: "model" or "whitespace", overriding the choice above.
    max_phrase_length: longest looping phrase looked for, in tokens (90).
Returns:
    repetition_pct: percentage of generations that end repeating a phrase.
"""


@evaluate.utils.file_utils.add_start_docstrings(_CITATION, _KWARGS)
class Repetition(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of generations that end in a repetition loop",
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, tokenizer=None, tokenization=None, max_phrase_length=MAX_PHRASE_LENGTH):
        tokens = predictions_to_tokens(predictions, tokenizer, tokenization)
        return {"repetition_pct": repetition_pct(tokens, max_phrase_length=max_phrase_length)}
