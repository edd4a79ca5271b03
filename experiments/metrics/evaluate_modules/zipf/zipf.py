"""`evaluate` module: Zipf coefficient of generated tokens (Holtzman et al. 2020, `degen/metrics/zipf.py`).

Definition: `experiments/metrics/zipf.py`. This script only adapts the interface.
"""

import datasets
import evaluate

from experiments.metrics.evaluate_modules import predictions_to_tokens
from experiments.metrics.zipf import DEFAULT_TOP_N, zipf_coefficient

_CITATION = """\
@inproceedings{holtzman2020curious, title={The Curious Case of Neural Text Degeneration},
  author={Holtzman, Ari and Buys, Jan and Du, Li and Forbes, Maxwell and Choi, Yejin}, booktitle={ICLR}, year={2020}}
"""

_KWARGS = """
Args:
    predictions: list of generated texts.
    tokenizer: optional Hugging Face tokenizer; its tokens are counted. Without one, whitespace words.
    tokenization: "model" or "whitespace", overriding the choice above.
    top_n: most frequent tokens in the log-log fit (5000).
Returns:
    zipf: negative slope of log count on log rank (NaN with fewer than two distinct tokens).
"""


@evaluate.utils.file_utils.add_start_docstrings(_CITATION, _KWARGS)
class Zipf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Zipf coefficient of the pooled token counts of a set of generations",
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, tokenizer=None, tokenization=None, top_n=DEFAULT_TOP_N):
        tokens = predictions_to_tokens(predictions, tokenizer, tokenization)
        return {"zipf": zipf_coefficient(tokens, top_n=top_n)}
