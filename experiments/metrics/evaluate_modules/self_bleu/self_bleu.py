"""`evaluate` module: Self-BLEU-4 (Zhu et al. 2018, Texygen) of a set of generations.

Definition, sampling and smoothing: `experiments/metrics/self_bleu.py`. This script only adapts the interface.
"""

import datasets
import evaluate

from experiments.metrics.evaluate_modules import predictions_to_tokens
from experiments.metrics.self_bleu import self_bleu

_CITATION = """\
@inproceedings{zhu2018texygen, title={Texygen: A Benchmarking Platform for Text Generation Models},
  author={Zhu, Yaoming and Lu, Sidi and Zheng, Lei and Guo, Jiaxian and Zhang, Weinan and Wang, Jun and Yu, Yong},
  booktitle={SIGIR}, year={2018}}
"""

_KWARGS = """
Args:
    predictions: list of generated texts (at least two).
    tokenizer: optional Hugging Face tokenizer; its tokens are the BLEU tokens. Without one, whitespace words.
    tokenization: "model" or "whitespace", overriding the choice above.
    max_n: highest n-gram order (4).
    sample_size: texts in the seeded sample scored against each other (100).
    seed: seed of that sample (0).
Returns:
    self_bleu{max_n}: self_bleu4 by default (0..1).
"""


@evaluate.utils.file_utils.add_start_docstrings(_CITATION, _KWARGS)
class SelfBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Self-BLEU: mean BLEU of each generation against the others",
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, tokenizer=None, tokenization=None, max_n=4, sample_size=100, seed=0):
        tokens = predictions_to_tokens(predictions, tokenizer, tokenization)
        return {f"self_bleu{max_n}": self_bleu(tokens, max_n=max_n, sample_size=sample_size, seed=seed)}
