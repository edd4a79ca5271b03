"""Name each run's decoding method as a paper would, and order methods as Holtzman et al.'s Table 1 does.

A label is read from the decoding config itself, not from `decoding.name`: the name is whatever the
config file was called, while a sweep changes the parameters under the same name (`top_p` with
`decoding.top_p=0.5`). So `{"do_sample": true, "top_k": 40, "temperature": 0.7}` reads "Top-k, k=40, t=0.7"
whichever file it came from.

Defaults are `transformers.GenerationConfig`'s, as the runner resolves them: temperature 1, top-p 1,
one beam, and top-k 50 whenever the config samples without naming top_k (generate adds it; our configs
name `top_k: 0` to mean "no top-k").

Order: greedy, beam search (by width), beam sampling, pure sampling, sampling with temperature only,
top-k, nucleus, other truncations, then contrastive search, DoLa and MBR (named by their own parameters,
not by the greedy or sampling settings under them); within a family untempered runs first, then by
parameter values.
For the eight methods of `experiment=holtzman_table1` that is the paper's Table 1 order.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.runs import is_missing
from experiments.jobs import RECORDED_DEFAULTS

GENERATE_DEFAULT_TOP_K = 50

# (config key, family name, how its value reads); a run that sets several gets all of them, in this order.
TRUNCATIONS = (
    ("top_k", "Top-k", "k={}"),
    ("top_p", "Nucleus", "p={}"),
    ("min_p", "Min-p", "min_p={}"),
    ("typical_p", "Typical", "typical_p={}"),
    ("epsilon_cutoff", "Epsilon", "\u03b5={}"),
    ("eta_cutoff", "Eta", "\u03b7={}"),
    ("top_h", "Top-h", "top_h={}"),
    ("top_n_sigma", "Top-n\u03c3", "n\u03c3={}"),
)
NO_EFFECT = {"top_k": (0, None), "top_p": (1.0, None), "min_p": (None, 0.0), "typical_p": (1.0, None),
             "epsilon_cutoff": (0.0, None), "eta_cutoff": (0.0, None), "top_h": (None,), "top_n_sigma": (None,)}
MIROSTAT_FAMILIES = {1: "Mirostat", 2: "Mirostat 2.0"}
XTC_MAX_USEFUL_THRESHOLD = 0.5  # above it XTC excludes nothing (llama.cpp's rule; decoding/processors/xtc.py)
DEFAULT_SAMPLER_ORDER = RECORDED_DEFAULTS["decoding"]["sampler_order"]  # what runs without the key used
# WatermarkingConfig's defaults (transformers), for a run that names only some of its fields.
WATERMARK_DEFAULTS = {"bias": 2.0, "greenlist_ratio": 0.25}
FAMILY_RANK = {"Greedy": 0, "Beam search": 1, "Beam sampling": 2, "Pure sampling": 3, "Sampling": 4,
               "Top-k": 5, "Nucleus": 6, "Contrastive search": 8, "DoLa": 9, "MBR": 10}  # other truncations: 7


def number_text(value: Any) -> str:
    """0.95 -> "0.95", 40.0 -> "40" (a setting as a label shows it; tidy tables hold whole numbers as floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def decoding_of(row: pd.Series | dict) -> dict[str, Any]:
    """The `decoding.*` settings of a tidy-table row, as a plain dict without the prefix and missing values."""
    return {k[len("decoding."):]: v for k, v in dict(row).items()
            if isinstance(k, str) and k.startswith("decoding.") and not is_missing(v)}


def effective_top_k(dec: dict[str, Any]) -> int | None:
    if not dec.get("do_sample"):
        return None
    top_k = dec.get("top_k", GENERATE_DEFAULT_TOP_K)
    return None if top_k in NO_EFFECT["top_k"] else int(top_k)


MBR_UTILITIES = {"chrf": "chrF", "bleu": "BLEU", "embedding": "embedding similarity"}


def search_family(dec: dict[str, Any]) -> tuple[str, list[str]] | None:
    """Contrastive search, DoLa and MBR, which read as greedy or sampling by their other settings."""
    if dec.get("penalty_alpha") not in (None, 0, 0.0) and int(dec.get("top_k") or 0) > 1 and not dec.get("do_sample"):
        return "Contrastive search", [f"\u03b1={number_text(dec['penalty_alpha'])}", f"k={number_text(dec['top_k'])}"]
    if dec.get("dola_layers") is not None:
        layers = dec["dola_layers"]
        shown = [f"layers={layers if isinstance(layers, str) else number_text(layers)}"]
        if dec.get("do_sample"):  # DoLa's contrasted logits, then sampled
            sampler, params = family_and_params({**dec, "dola_layers": None})
            shown.append(", ".join([sampler, *params]))
        return "DoLa", shown
    if dec.get("mbr_candidates") not in (None, 0):
        sampler, params = family_and_params({**dec, "mbr_candidates": None})
        utility = str(dec.get("mbr_utility", "chrf"))
        return "MBR", [f"n={number_text(dec['mbr_candidates'])}", MBR_UTILITIES.get(utility, utility),
                       f"candidates: {', '.join([sampler, *params])}"]
    return None


def family_and_params(dec: dict[str, Any]) -> tuple[str, list[str]]:
    search = search_family(dec)
    if search is not None:
        return search
    beams = int(dec.get("num_beams") or 1)
    if not dec.get("do_sample"):
        return ("Greedy", []) if beams == 1 else ("Beam search", [f"b={beams}"])
    families, params = [], []
    for key, family, shown in TRUNCATIONS:
        value = effective_top_k(dec) if key == "top_k" else dec.get(key)
        if value is not None and value not in NO_EFFECT[key]:
            families.append(family)
            params.append(shown.format(number_text(value)))
    if dec.get("xtc_probability") not in (None, 0, 0.0) and dec.get("xtc_threshold", 0.1) <= XTC_MAX_USEFUL_THRESHOLD:
        families.append("XTC")
        params.append(f"xtc={number_text(dec['xtc_probability'])}@{number_text(dec.get('xtc_threshold', 0.1))}")
    if dec.get("mirostat") in MIROSTAT_FAMILIES:
        families.append(MIROSTAT_FAMILIES[dec["mirostat"]])
        params.append(f"\u03c4={number_text(dec.get('mirostat_tau', 5.0))}, \u03b7={number_text(dec.get('mirostat_eta', 0.1))}")
    temperature = dec.get("temperature", 1.0)
    if temperature not in (1.0, None):
        params.append(f"t={number_text(temperature)}")
    if dec.get("dynatemp_range") not in (None, 0, 0.0):  # llama.cpp's entropy-based temperature, t +- range
        exponent = dec.get("dynatemp_exponent", 1.0)
        params.append(f"dynatemp \u00b1{number_text(dec['dynatemp_range'])}"
                      + (f" exp {number_text(exponent)}" if exponent not in (1, 1.0, None) else ""))
    if beams > 1:
        return "Beam sampling", [f"b={beams}", *params]
    if not families:
        return ("Sampling", params) if params else ("Pure sampling", [])
    return ", ".join(families), params


def extras(dec: dict[str, Any]) -> list[str]:
    """Settings outside the method proper that still change the text."""
    out = []
    if dec.get("repetition_penalty") not in (None, 1.0):
        out.append(f"repetition penalty={number_text(dec['repetition_penalty'])}")
    if dec.get("no_repeat_ngram_size") not in (None, 0):
        out.append(f"no-repeat n={number_text(dec['no_repeat_ngram_size'])}")
    if dec.get("dry_multiplier") not in (None, 0, 0.0) and dec.get("dry_penalty_last_n", -1) != 0:
        out.append(f"DRY \u00d7{number_text(dec['dry_multiplier'])}, base {number_text(dec.get('dry_base', 1.75))}, "
                   f"allowed {number_text(dec.get('dry_allowed_length', 2))}")
    for key, shown in (("presence_penalty", "presence"), ("frequency_penalty", "frequency")):
        if dec.get(key) not in (None, 0, 0.0):
            out.append(f"{shown} penalty={number_text(dec[key])}")
    biased = [k for k in dec if k.startswith("logit_bias.")] or list(dec.get("logit_bias") or ())
    if biased:  # a tidy table flattens the {id: bias} mapping to `logit_bias.<id>` keys
        out.append(f"logit bias on {len(biased)} ids")
    if dec.get("allowed_token_ids") is not None:
        out.append("allowed ids only")
    order = dec.get("sampler_order", DEFAULT_SAMPLER_ORDER)
    if order != DEFAULT_SAMPLER_ORDER:  # a name, or a list as the tidy table's JSON text
        out.append(f"{order} order")
    proposer = speculative_proposer(dec)
    if proposer:
        out.append(proposer)
    if dec.get("guidance_scale") not in (None, 1, 1.0):
        out.append(f"CFG scale={number_text(dec['guidance_scale'])}")
    watermark = watermark_of(dec)
    if watermark is not None:
        out.append(f"watermark \u03b4={number_text(watermark['bias'])}, \u03b3={number_text(watermark['greenlist_ratio'])}")
    return out


def speculative_proposer(dec: dict[str, Any]) -> str | None:
    """How a speculative run proposed tokens (exact: the text is the method's own, only the speed changes)."""
    tokens = dec.get("num_assistant_tokens")
    per_step = f", {number_text(tokens)} per step" if tokens not in (None, 0) else ""
    if dec.get("prompt_lookup_num_tokens") not in (None, 0):
        return (f"prompt lookup ({number_text(dec['prompt_lookup_num_tokens'])} tokens, "
                f"n-gram {number_text(dec.get('max_matching_ngram_size', 2))})")
    if dec.get("draft_layers") not in (None, 0):
        return f"self-speculative (first {number_text(dec['draft_layers'])} layers{per_step})"
    if tokens not in (None, 0):  # a draft model's proposals (the model itself is the `draft.*` settings)
        return f"draft model{per_step}"
    return None


def watermark_of(dec: dict[str, Any]) -> dict[str, Any] | None:
    """The run's watermark bias and greenlist ratio, from a nested `watermarking_config` or a tidy table's
    flattened `watermarking_config.<field>` keys; None without a watermark."""
    nested = dec.get("watermarking_config")
    fields = dict(nested) if isinstance(nested, dict) else {
        k.split(".", 1)[1]: v for k, v in dec.items() if k.startswith("watermarking_config.")}
    if not fields:
        return None
    return {**WATERMARK_DEFAULTS, **{k: v for k, v in fields.items() if k in WATERMARK_DEFAULTS}}


def method_label(dec: dict[str, Any]) -> str:
    """A decoding config as the paper names it: "Greedy", "Beam search, b=16", "Top-k, k=40, t=0.7"."""
    family, params = family_and_params(dec)
    return ", ".join([family, *params, *extras(dec)])


def method_sort_key(dec: dict[str, Any]) -> tuple:
    """Family first; within a family runs at temperature 1 before tempered ones (the paper lists top-k 40,
    top-k 640, then top-k 40 at t=0.7), then by parameter values."""
    family, _ = family_and_params(dec)
    temperature = dec.get("temperature", 1.0)
    numbers = tuple(float(dec[k]) if isinstance(dec.get(k), (int, float)) else 0.0
                    for k in ("num_beams", "top_k", "top_p", "min_p", "typical_p", "temperature"))
    return (FAMILY_RANK.get(family, 7), family, temperature != 1.0, numbers)
