"""The runner side of contrastive search, DoLa, contrastive decoding and MBR: their conf/decoding/ files, the
amateur/ group and their sweeps.

Each config runs end to end on the tiny Llama and writes exactly the samples `generate_continuations` gives for
the settings the file names, written out here (so every value reaches generate: the amateur model as
amateur_model, the tokenizer that MBR's chrF decodes with), and those are not greedy decoding's; these jobs
never share a batched generation (each strategy has its own decode loop); bad values and an amateur with another
vocabulary fail before any work; a real multirun over penalty_alpha works through the normal launcher.
"""

import json

import pytest
import torch
import yaml

from experiments.batched_sweep import group_jobs
from experiments.run import check_config, run
from tests.experiments.runner_helpers import TINY_RUN, compose_config, direct_generation, run_and_read, run_cli

RUN = [*TINY_RUN, "task=generate", "logger=none", "metrics.mauve=false", "prompts.num_prompts=2"]  # one batch
GREEDY = dict(do_sample=False, max_new_tokens=8)
SAMPLING = dict(do_sample=True, top_k=0, epsilon_cutoff=0.0001, max_new_tokens=8)
# name: (overrides, the generate keywords they stand for; "amateur_model": True is the amateur/ option's model)
CONFIGS = {
    "contrastive_search": (["decoding=contrastive_search"], dict(GREEDY, penalty_alpha=0.6, top_k=4)),
    "dola": (["decoding=dola"], dict(GREEDY, dola_layers="high", repetition_penalty=1.2)),
    "contrastive_decoding": (["decoding=contrastive_decoding", "decoding.amateur_layers=1"],  # 1 of 2 layers
                             dict(GREEDY, amateur_layers=1, amateur_temperature=1.0, plausibility_alpha=0.1)),
    "amateur_model": (["decoding=contrastive_decoding", "decoding.amateur_layers=null", "amateur=tiny_llama"],
                      dict(GREEDY, amateur_model=True, amateur_temperature=1.0, plausibility_alpha=0.1)),
    # epsilon 0.02 keeps only the top token of the tiny model's flat distribution: a smaller cut for the test
    "mbr": (["decoding=mbr", "decoding.mbr_candidates=3", "decoding.epsilon_cutoff=0.0001"],
            dict(SAMPLING, mbr_candidates=3, mbr_utility="chrf")),
}
# What each strategy changes: greedy decoding, or for MBR one draw of its sampling configuration
PLAIN = {name: SAMPLING if name == "mbr" else GREEDY for name in CONFIGS}


def run_job(out, *overrides):
    return run_and_read(RUN, out, *overrides)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """generate(**keywords) on the runner's model and prompts: the token ids of each sample, in order."""
    from experiments.models import load_model

    amateur, _ = load_model("tiny_llama", seed=1)  # conf/amateur/tiny_llama.yaml
    return direct_generation(RUN, tmp_path_factory.mktemp("direct") / "run",
                             lambda keywords: {"amateur_model": amateur} if keywords.get("amateur_model") else {})


def test_a_plain_run_has_no_amateur_key(tmp_path):
    assert "amateur" not in compose_config([], tmp_path / "default")  # default fingerprints unchanged


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_runs_end_to_end_as_generate_with_its_settings(name, direct, tmp_path):
    overrides, keywords = CONFIGS[name]
    metrics, samples = run_job(tmp_path / name, *overrides)
    assert metrics["gen/samples"] == 2.0 and metrics["speed/sweep_configurations"] == 1.0
    assert metrics["speed/new_tokens"] == sum(len(s["token_ids"]) for s in samples) > 0
    ids = [s["token_ids"] for s in samples]
    assert ids == direct(keywords)
    assert ids != direct(PLAIN[name]), "the strategy left the plain loop's text unchanged: a value did not reach it"


def pair_of_jobs(tmp_path, overrides, key, values):
    cfgs = [compose_config([*RUN, *overrides, f"{key}={v}"], tmp_path / f"job{i}") for i, v in enumerate(values)]
    check_config(cfgs[0])
    return cfgs


@pytest.mark.parametrize("overrides, key, values", [
    (["decoding=contrastive_search"], "decoding.top_k", (2, 4)),  # top_k is a row parameter of a batched sweep
    (["decoding=dola"], "+decoding.temperature", (0.5, 1.0)),
    (["decoding=contrastive_decoding", "decoding.do_sample=true", "decoding.amateur_layers=1"],
     "+decoding.temperature", (0.5, 1.0)),
    (["decoding=contrastive_decoding", "decoding.amateur_layers=null", "amateur=tiny_llama"], "+decoding.top_k",
     (3, 5)),
    (["decoding=mbr"], "+decoding.temperature", (0.5, 1.0)),
])
def test_these_jobs_never_share_a_batched_generation(overrides, key, values, tmp_path):
    assert group_jobs(pair_of_jobs(tmp_path, overrides, key, values)) == []
    plain = pair_of_jobs(tmp_path, ["decoding=top_k"], "+decoding.temperature", (0.5, 1.0))
    assert group_jobs(plain) == [[0, 1]]  # the same pair of plain sampling jobs is batched


def test_generate_sweep_refuses_each_configuration_with_its_own_loop(tiny_llama):
    from decoding import generate_sweep

    ids = torch.tensor([[5, 6, 7, 8]])
    # judged per configuration, not by the first (a greedy one here)
    configs = [dict(top_k=4), dict(penalty_alpha=0.6, top_k=4)]
    with pytest.raises(ValueError, match=r"configs\[1\] is contrastive search.*one by one"):
        generate_sweep(tiny_llama, ids, configs=configs, max_new_tokens=2)
    for config, name in ((dict(dola_layers="low"), "DoLa"), (dict(amateur_layers=1), "contrastive decoding"),
                         (dict(mbr_candidates=2, do_sample=True), "MBR")):
        generators = [torch.Generator().manual_seed(0) for _ in range(2)]
        with pytest.raises(ValueError, match=rf"configs\[0\] is {name}"):
            generate_sweep(tiny_llama, ids, configs=[config, config], generators=generators, max_new_tokens=2)


# A model that cannot be loaded: an error naming a decoding setting shows that the check ran before loading.
UNLOADABLE = ["model=hf", "model.name=/nonexistent/expert/model", "model.device=cpu"]


@pytest.mark.parametrize("overrides, message", [
    (["decoding=contrastive_decoding", "amateur=tiny_llama"],
     r"amateur=tiny_llama and decoding.amateur_layers=8 both choose the amateur: pass decoding.amateur_layers=null"),
    (["decoding=greedy", "+decoding.plausibility_alpha=0.2"], r"only an amateur reads.*pass amateur="),
    (["decoding=greedy", "+decoding.amateur_model=tiny_llama"], r"decoding.amateur_model='tiny_llama' is not "
                                                                r"allowed.*pass amateur="),
    (["decoding=greedy", "amateur=tiny_llama", "task=lm_eval"], r"amateur=tiny_llama is not allowed with "
                                                                r"task.lm_eval.*decoding.amateur_layers"),
    (["decoding=greedy", "amateur=hf"], r"amateur.name is required"),
    (["decoding=contrastive_decoding", "decoding.plausibility_alpha=1.5"], r"plausibility_alpha=1.5"),
    (["decoding=beam", "amateur=tiny_llama"], r"contrastive decoding.*num_beams"),
    (["decoding=contrastive_search", "decoding.penalty_alpha=1.5"], r"penalty_alpha=1.5"),
    (["decoding=dola", "decoding.dola_layers=middle"], r"dola_layers='middle'"),
    (["decoding=mbr", "decoding.mbr_utility=rouge"], r"mbr_utility='rouge'"),
    (["decoding=mbr", "decoding.do_sample=false"], r"mbr_candidates=8 is not allowed with do_sample=False"),
])
def test_a_bad_value_fails_before_any_model_loads(overrides, message, tmp_path):
    cfg = compose_config([*RUN, *UNLOADABLE, *overrides], tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def save_model_folder(folder, tokenizer, vocab_size):
    from experiments.models import build_tiny_model

    build_tiny_model("tiny_llama", vocab_size=vocab_size, seed=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def word_level_tokenizer(words):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")


def assert_no_work_done(out):
    assert not (out / "samples.jsonl").exists() and not (out / "metrics.json").exists()
    assert not (out.parent / "outputs_root" / "cache").exists()  # the perplexity of task=both did not start


def assert_amateur_fails_before_any_work(tmp_path, folder, message: str) -> None:
    """A contrastive-decoding run with the model saved in `folder` as its amateur raises `message`, having done
    nothing."""
    out = tmp_path / "run"
    cfg = compose_config([*RUN, "task=both", "decoding=contrastive_decoding", "decoding.amateur_layers=null",
                          "amateur=hf", f"amateur.name={folder}"], out)
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert_no_work_done(out)


def test_an_amateur_with_another_tokenizer_fails_before_any_work(tmp_path):
    words = ["<unk>", "</s>", *(f"w{i}" for i in range(62))]
    folder = save_model_folder(tmp_path / "other_vocab", word_level_tokenizer(words), len(words))
    assert_amateur_fails_before_any_work(tmp_path, folder, r"amateur.name='.*other_vocab' is not allowed with "
                                         r"model.name='tiny_llama': its tokenizer differs from the model's \(64 vs "
                                         r"49152 tokens")


def test_an_amateur_with_the_tokenizer_but_other_logits_fails_before_any_work(tmp_path):
    from experiments.models import load_model

    _, tokenizer = load_model("tiny_llama")
    folder = save_model_folder(tmp_path / "narrow", tokenizer, 1000)  # SmolLM2's tokenizer, 1000 logits
    assert_amateur_fails_before_any_work(tmp_path, folder, r"amateur_model='LlamaForCausalLM' is not allowed: its "
                                         r"logits have 1000 tokens and the expert's 49152")


@pytest.mark.parametrize("overrides, message", [
    (["decoding=contrastive_decoding"], r"amateur_layers=8.*use 1 <= amateur_layers <= 1"),  # 8 layers of 2
    (["decoding=dola", "decoding.dola_layers=[0,5]"], r"dola_layers=\[0, 5\].*must lie in \[0, 2\)"),
])
def test_layers_beyond_the_model_fail_before_any_work(overrides, message, tmp_path):
    out = tmp_path / "run"
    cfg = compose_config([*RUN, "task=both", *overrides], out)
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert_no_work_done(out)


@pytest.mark.slow
def test_a_multirun_over_penalty_alpha(tmp_path):
    done = run_cli(["-m", *RUN, "prompts.continuation_tokens=4", "decoding=contrastive_search",
                    "decoding.penalty_alpha=0.3,0.6"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batched generation" not in done.stderr + done.stdout
    folders = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(folders) == 2
    alphas = []
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["gen/samples"] == 2.0 and metrics["speed/sweep_configurations"] == 1.0
        alphas.append(yaml.safe_load((folder / "config.yaml").read_text())["decoding"]["penalty_alpha"])
    assert sorted(alphas) == [0.3, 0.6]
