"""Corpora and pseudo-queries: every method on real SciFact documents, determinism, counts, and one-line errors."""

from __future__ import annotations

import json

import pytest

from hf_kd.cli import main
from hf_kd.data import DataFormatError
from hf_kd.data.corpus import Document, read_corpus
from hf_kd.data.pseudo_queries import make_pseudo_queries, read_query_sources, split_sentences


@pytest.fixture(scope="module")
def scifact_small(ci_data):
    return read_corpus(ci_data / "scifact-small")


def test_a_beir_corpus_keeps_titles_apart_and_reads_as_read_beir_does(ci_data, scifact_small):
    from hf_kd.data import read_beir

    beir = read_beir(ci_data / "scifact-small", split="test")
    assert len(scifact_small) == 400
    assert {d: doc.full_text for d, doc in scifact_small.items()} == beir.corpus
    assert all(doc.title and doc.text for doc in scifact_small.values())


def test_bad_corpora_fail_with_file_and_line(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "a", "text": "one"}\n{"_id": "a", "text": "two"}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl, line 2: duplicate '_id' 'a'"):
        read_corpus(beir)
    (beir / "corpus.jsonl").write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "title": " ", "text": ""}\n')
    with pytest.raises(DataFormatError, match=r"line 2: document 'b' has neither a title nor a text"):
        read_corpus(beir)
    (beir / "corpus.jsonl").write_text("")
    with pytest.raises(DataFormatError, match="the corpus holds no document"):
        read_corpus(beir)
    with pytest.raises(FileNotFoundError, match="without corpus.jsonl"):
        read_corpus(tmp_path)
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("p1\tfirst\np1\tsecond\n")
    with pytest.raises(DataFormatError, match=r"collection.tsv, line 2: duplicate pid 'p1'"):
        read_corpus(tsv)


@pytest.mark.parametrize("method", ["span", "keywords", "sentence", "title"])
def test_every_method_is_deterministic_by_seed_and_maps_queries_to_their_documents(scifact_small, method):
    first = make_pseudo_queries(scifact_small, method, per_doc=2, seed=3, show_progress=False)
    again = make_pseudo_queries(scifact_small, method, per_doc=2, seed=3, show_progress=False)
    assert first.queries == again.queries and first.sources == again.sources
    assert set(first.sources) == set(first.queries)
    assert all(qid.startswith(f"{doc}-q") for qid, doc in first.sources.items())
    lengths = [len(q.split()) for q in first.queries.values()]
    if method == "span":
        assert 2 <= min(lengths) and max(lengths) <= 12
        # a span is a run of its document's words
        for qid, query in list(first.queries.items())[:50]:
            assert query.split()[0] in scifact_small[first.sources[qid]].text
    if method == "keywords":
        assert max(lengths) <= 6 and all(len(set(q.lower().split())) == len(q.split()) for q in first.queries.values())
    if method == "title":
        assert len(first.queries) <= 400 and all(
            first.queries[q] in " ".join(scifact_small[d].title.split())
            and len(first.queries[q]) >= len(scifact_small[d].title) - 3
            for q, d in first.sources.items()
        )
    if method != "title":
        other = make_pseudo_queries(scifact_small, method, per_doc=2, seed=4, show_progress=False)
        assert other.queries != first.queries
    assert first.stats["queries"] == len(first.queries)
    assert first.stats["queries"] + first.stats["duplicates_dropped"] <= 2 * 400


def test_duplicates_are_dropped_and_short_documents_skipped_and_counted():
    documents = {
        "d1": Document("", "Aspirin lowers fever in adults."),
        "d2": Document("", "Aspirin lowers fever in adults."),
        "d3": Document("", "Too short."),
    }
    pseudo = make_pseudo_queries(documents, "sentence", seed=0, show_progress=False)
    assert pseudo.queries == {"d1-q0": "Aspirin lowers fever in adults"}
    assert pseudo.stats["duplicates_dropped"] == 1 and pseudo.stats["documents_skipped"] == 1


def test_text_without_sentence_punctuation_is_cut_into_runs_of_words():
    words = " ".join(f"w{i}" for i in range(60))
    assert [len(s.split()) for s in split_sentences(words)] == [25, 25, 10]
    assert split_sentences("First one here. Second one follows! 3 more?") == [
        "First one here.",
        "Second one follows!",
        "3 more?",
    ]


def test_methods_that_cannot_make_a_query_say_why():
    documents = {"d1": Document("", "a lower-cased text without any title at all")}
    with pytest.raises(ValueError, match="no document has a title"):
        make_pseudo_queries(documents, "title", show_progress=False)
    with pytest.raises(ValueError, match="no document has a sentence of 20 words or more"):
        make_pseudo_queries(documents, "sentence", min_words=20, show_progress=False)
    with pytest.raises(ValueError, match="needs a text-to-text model"):
        make_pseudo_queries(documents, "generator", show_progress=False)
    with pytest.raises(ValueError, match="unknown pseudo-query method 'cloze'"):
        make_pseudo_queries(documents, "cloze", show_progress=False)
    with pytest.raises(ValueError, match="the corpus holds no document"):
        make_pseudo_queries({}, "span", show_progress=False)


def _tiny_t5(folder, tokenizer, always_end: bool = False):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = T5ForConditionalGeneration(config)
    if always_end:  # a generator that writes nothing: every token but the end one is suppressed
        end = tokenizer.sep_token_id
        model.generation_config.suppress_tokens = [i for i in range(tokenizer.vocab_size) if i != end]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_generator_writes_queries_deterministically_and_an_empty_one_fails_clearly(
    tmp_path, tokenizer, scifact_small
):
    documents = dict(list(scifact_small.items())[:6])
    generator = _tiny_t5(tmp_path / "t5", tokenizer)
    first = make_pseudo_queries(
        documents,
        "generator",
        per_doc=2,
        generator=generator,
        generator_max_length=8,
        generator_batch_size=4,
        seed=1,
        show_progress=False,
    )
    again = make_pseudo_queries(
        documents,
        "generator",
        per_doc=2,
        generator=generator,
        generator_max_length=8,
        generator_batch_size=4,
        seed=1,
        show_progress=False,
    )
    assert first.queries == again.queries and len(first.queries) >= 6
    assert set(first.sources.values()) <= set(documents)
    silent = _tiny_t5(tmp_path / "silent", tokenizer, always_end=True)
    with pytest.raises(ValueError, match="the generator returned 6 empty strings and nothing else"):
        make_pseudo_queries(documents, "generator", generator=silent, show_progress=False)


def test_the_command_writes_queries_sources_and_counts(tmp_path, ci_data, scifact_small):
    out = tmp_path / "pq"
    code = main(
        [
            "data",
            "pseudo-queries",
            "--corpus",
            str(ci_data / "scifact-small"),
            "--method",
            "span",
            "--per-doc",
            "2",
            "--seed",
            "5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    queries = dict(line.split("\t") for line in (out / "queries.tsv").read_text().splitlines())
    sources = read_query_sources(out)
    stats = json.loads((out / "pseudo_queries.json").read_text())
    assert set(queries) == set(sources) and stats["queries"] == len(queries) and stats["seed"] == 5
    assert set(sources.values()) <= set(scifact_small)
    assert queries == make_pseudo_queries(scifact_small, "span", per_doc=2, seed=5, show_progress=False).queries
