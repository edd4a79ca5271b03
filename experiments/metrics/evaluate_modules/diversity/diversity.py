"""`evaluate` module: distinct-n (Li et al. 2016), rep-n and diversity (Su et al. 2022), corpus-level.

Definitions and deviations: `experiments/metrics/diversity.py`. This script only adapts the interface.
"""

import datasets
import evaluate

from experiments.metrics.diversity import diversity_metrics
from experiments.metrics.evaluate_modules import predictions_to_tokens

_CITATION = """\
@inproceedings{li2016diversity, title={A Diversity-Promoting Objective Function for Neural Conversation Models},
  author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill},
  booktitle={NAACL}, year={2016}}
@inproceedings{su2022contrastive, title={A Contrastive Framework for Neural Text Generation},
  author={Su, Yixuan and Lan, Tian and Wang, Yan and Yogatama, Dani and Kong, Lingpeng and Collier, Nigel},
  booktitle={NeurIPS}, year={2022}}
"""

_KWARGS = """
Args:
    predictions: list of generated texts.
    tokenizer: optional Hugging Face tokenizer; its tokens are counted. Without one, whitespace words.
    tokenization: "model" or "whitespace", overriding the choice above.
    simctg_last_ngram_dropped: reproduce SimCTG's script, which skips each text's last n-gram.
Returns:
    distinct_1..distinct_4 (0..1), rep_2..rep_4 (percent), diversity (0..1).
"""


@evaluate.utils.file_utils.add_start_docstrings(_CITATION, _KWARGS)
class Diversity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="distinct-n, rep-n and diversity of a set of generations",
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, tokenizer=None, tokenization=None, simctg_last_ngram_dropped=False):
        tokens = predictions_to_tokens(predictions, tokenizer, tokenization)
        return diversity_metrics(tokens, simctg_last_ngram_dropped=simctg_last_ngram_dropped)
