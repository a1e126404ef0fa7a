"""Pseudo-queries made from a corpus's own documents (`hf-kd data pseudo-queries`), for a teacher to label where a
corpus has no query log.

| method     | a query is                                                                                        |
|------------|---------------------------------------------------------------------------------------------------|
| `span`     | a run of `min_words`..`max_words` words of one sentence, without stop words at its ends           |
| `keywords` | the `min_words`..`max_words` rarest words (by the corpus's document frequency) of one sentence,   |
|            | in their order: a key-phrase query                                                                |
| `sentence` | one whole sentence (the inverse cloze task)                                                       |
| `title`    | the document's title (one per document)                                                           |
| `generator`| what a text-to-text model (e.g. a doc2query T5) writes for the document, sampled                  |

Where a text has no sentence punctuation (corpora often come lower-cased without any), its "sentences" are runs of
`_WORDS_PER_CHUNK` words. Each document's queries come from a random generator seeded with `(seed, document id)`,
so the same corpus, method and seed always give the same queries. A query equal to an earlier one (case and spaces
aside) is dropped and counted; a document too short for the method is skipped and counted.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..files import atomic_folder
from .corpus import Document

__all__ = ["METHODS", "PseudoQueries", "make_pseudo_queries", "read_query_sources", "write_pseudo_queries"]

METHODS = ("span", "keywords", "sentence", "title", "generator")

QUERIES_FILE = "queries.tsv"
SOURCES_FILE = "query_sources.tsv"
STATS_FILE = "pseudo_queries.json"

_WORDS_PER_CHUNK = 25
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[^\W_][\w'-]*", re.UNICODE)
_EDGE_PUNCTUATION = ".,;:!?\"'()[]{}"


def _stop_words() -> frozenset[str]:
    import bm25s.stopwords

    return frozenset(bm25s.stopwords.STOPWORDS_EN) | frozenset(
        "about above after also among any because been being between both can could did does during each from had "
        "has have here how its may more most much must only other our over same should since some such than them "
        "these those through thus under upon very was we were what when where whether which while who whom why "
        "within without would".split()
    )


@dataclass
class PseudoQueries:
    """Pseudo-queries of a corpus and what making them kept and skipped.

    Attributes:
        queries: query id -> text, in corpus order (`<document id>-q<i>`).
        sources: query id -> the document it was made from.
        stats: the method, its parameters and the counts (`documents`, `queries`, `duplicates_dropped`,
            `documents_skipped`: too short or without a title, `empty_generations`).
    """

    queries: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def split_sentences(text: str) -> list[str]:
    """Sentences of a text; runs of `_WORDS_PER_CHUNK` words where it has no sentence punctuation."""
    text = " ".join(text.split())
    if not any(mark in text for mark in ".!?"):
        words = text.split()
        return [" ".join(words[i : i + _WORDS_PER_CHUNK]) for i in range(0, len(words), _WORDS_PER_CHUNK)]
    return [sentence for sentence in _SENTENCE_END.split(text) if sentence.strip()]


def _clean_query(text: str) -> str:
    return " ".join(text.split()).strip(_EDGE_PUNCTUATION + " ")


def _span(sentences: list[str], rng: random.Random, min_words: int, max_words: int, stop: frozenset[str]) -> str:
    usable = [s.split() for s in sentences if len(s.split()) >= min_words]
    if not usable:
        return ""
    words = rng.choice(usable)
    length = min(rng.randint(min_words, max_words), len(words))
    start = rng.randint(0, len(words) - length)
    span = words[start : start + length]
    while span and span[0].lower().strip(_EDGE_PUNCTUATION) in stop:
        span = span[1:]
    while span and span[-1].lower().strip(_EDGE_PUNCTUATION) in stop:
        span = span[:-1]
    return _clean_query(" ".join(span)) if len(span) >= max(2, min_words // 2) else ""


def _keywords(
    sentences: list[str],
    rng: random.Random,
    min_words: int,
    max_words: int,
    stop: frozenset[str],
    idf: Callable[[str], float],
) -> str:
    candidates = []
    for sentence in sentences:
        words = [w for w in _WORD.findall(sentence) if len(w) > 2 and w.lower() not in stop]
        words = list({w.lower(): w for w in reversed(words)}.values())[::-1]  # each word once, first place kept
        if len(words) >= min_words:
            candidates.append(words)
    if not candidates:
        return ""
    words = rng.choice(candidates)
    keep = min(rng.randint(min_words, max_words), len(words))
    ranked = sorted(range(len(words)), key=lambda i: (-idf(words[i].lower()), i))[:keep]
    return " ".join(words[i] for i in sorted(ranked))


def _sentence(sentences: list[str], rng: random.Random, min_words: int) -> str:
    usable = [s for s in sentences if len(s.split()) >= min_words]
    return _clean_query(rng.choice(usable)) if usable else ""


def _document_frequency(documents: Iterable[Document], stop: frozenset[str]) -> tuple[Counter, int]:
    frequency: Counter = Counter()
    count = 0
    for document in documents:
        frequency.update({w.lower() for w in _WORD.findall(document.full_text)} - stop)
        count += 1
    return frequency, count


def make_pseudo_queries(
    documents: dict[str, Document],
    method: str = "span",
    *,
    per_doc: int = 1,
    seed: int = 0,
    min_words: int | None = None,
    max_words: int | None = None,
    generator: str | os.PathLike | None = None,
    generator_batch_size: int = 16,
    generator_max_length: int = 32,
    max_documents: int | None = None,
    show_progress: bool = True,
) -> PseudoQueries:
    """Makes `per_doc` pseudo-queries per document with `method` (see the table of this module).

    Args:
        documents: document id -> [`Document`] (`hf_kd.data.read_corpus`).
        method: `span`, `keywords`, `sentence`, `title` or `generator`.
        per_doc: queries per document (`title`: at most one).
        seed: the sampling seed.
        min_words, max_words: the query length in words of `span` (defaults 4..12: SciFact claims and MS MARCO
            questions are that long) and `keywords` (3..6); the shortest sentence `sentence` takes (default 5).
        generator: a seq2seq (text-to-text) model folder or Hub id, for `generator`.
        generator_batch_size, generator_max_length: documents per `generate` call; new tokens per query.
        max_documents: use the first documents only (None: all).
        show_progress: show a progress bar.

    Raises:
        ValueError: on an unknown method, a bad count, a generator without a model, or when no document gives a
            usable query (the message says why).
    """
    if method not in METHODS:
        raise ValueError(f"unknown pseudo-query method {method!r}; choose from {', '.join(METHODS)}")
    if per_doc < 1:
        raise ValueError(f"per_doc must be >= 1, got {per_doc}")
    if method == "generator" and generator is None:
        raise ValueError("the generator method needs a text-to-text model: pass --generator MODEL")
    if method != "generator" and generator is not None:
        raise ValueError(f"--generator is used by the generator method only, not by {method!r}")
    default_lengths = {"span": (4, 12), "keywords": (3, 6), "sentence": (5, 5)}.get(method, (1, 1))
    min_words = default_lengths[0] if min_words is None else min_words
    max_words = max(default_lengths[1], min_words) if max_words is None else max_words
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    if not documents:
        raise ValueError("the corpus holds no document: nothing to make queries from")
    chosen = list(documents.items())[:max_documents] if max_documents else list(documents.items())
    stop = _stop_words()
    result = PseudoQueries()
    counts = Counter()
    made: list[tuple[str, list[str]]] = []
    if method == "generator":
        made = _generate(
            chosen, str(generator), per_doc, seed, generator_batch_size, generator_max_length, counts, show_progress
        )
    else:
        idf = None
        if method == "keywords":
            frequency, total = _document_frequency(documents.values(), stop)
            idf = lambda word: math.log((total + 1) / (frequency.get(word, 0) + 0.5))  # noqa: E731
        for doc_id, document in tqdm(chosen, desc="Pseudo-queries", unit="doc", disable=not show_progress):
            rng = random.Random(f"{seed}/{doc_id}")
            if method == "title":
                made.append((doc_id, [_clean_query(document.title)]))
                continue
            sentences = split_sentences(document.text or document.title)
            if method == "span":
                texts = [_span(sentences, rng, min_words, max_words, stop) for _ in range(per_doc)]
            elif method == "keywords":
                texts = [_keywords(sentences, rng, min_words, max_words, stop, idf) for _ in range(per_doc)]
            else:
                texts = [_sentence(sentences, rng, min_words) for _ in range(per_doc)]
            made.append((doc_id, texts))
    seen: set[str] = set()
    for doc_id, texts in made:
        usable = [t for t in texts if t]
        if not usable:
            counts["documents_skipped"] += 1
            continue
        for i, text in enumerate(usable):
            key = text.lower()
            if key in seen:
                counts["duplicates_dropped"] += 1
                continue
            seen.add(key)
            qid = f"{doc_id}-q{i}"
            result.queries[qid] = text
            result.sources[qid] = doc_id
    result.stats = {
        "method": method,
        "per_doc": per_doc,
        "seed": seed,
        "min_words": min_words if method in ("span", "keywords", "sentence") else None,
        "max_words": max_words if method in ("span", "keywords") else None,
        "generator": None if generator is None else str(generator),
        "documents": len(chosen),
        "queries": len(result.queries),
        "duplicates_dropped": counts["duplicates_dropped"],
        "documents_skipped": counts["documents_skipped"],
        "empty_generations": counts["empty_generations"],
        "mean_words": round(sum(len(q.split()) for q in result.queries.values()) / max(len(result.queries), 1), 2),
    }
    if not result.queries:
        why = {
            "title": "no document has a title",
            "generator": f"the generator returned {counts['empty_generations']} empty strings and nothing else",
        }.get(method, f"no document has a sentence of {min_words} words or more")
        raise ValueError(f"no pseudo-query could be made from {len(chosen)} documents with {method!r}: {why}")
    return result


def _generate(
    chosen: Sequence[tuple[str, Document]],
    generator: str,
    per_doc: int,
    seed: int,
    batch_size: int,
    max_length: int,
    counts: Counter,
    show_progress: bool,
) -> list[tuple[str, list[str]]]:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from ..files import naming_weight_files

    with naming_weight_files(generator):
        tokenizer = AutoTokenizer.from_pretrained(generator)
        model = AutoModelForSeq2SeqLM.from_pretrained(generator).eval()
    made = []
    bar = tqdm(total=len(chosen), desc="Generating queries", unit="doc", disable=not show_progress)
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start : start + batch_size]
        # one seed per batch, from the seed and the batch's first document: reruns give the same queries
        torch.manual_seed(random.Random(f"{seed}/{batch[0][0]}").getrandbits(63))
        inputs = tokenizer(
            [d.full_text for _, d in batch], truncation=True, max_length=384, padding=True, return_tensors="pt"
        )
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            output = model.generate(
                **inputs, do_sample=True, top_p=0.95, top_k=0, max_new_tokens=max_length, num_return_sequences=per_doc
            )
        texts = [_clean_query(t) for t in tokenizer.batch_decode(output, skip_special_tokens=True)]
        counts["empty_generations"] += sum(not t for t in texts)
        for i, (doc_id, _) in enumerate(batch):
            made.append((doc_id, texts[i * per_doc : (i + 1) * per_doc]))
        bar.update(len(batch))
    bar.close()
    return made


def write_pseudo_queries(pseudo: PseudoQueries, out: str | os.PathLike, corpus: str | None = None) -> Path:
    """Writes `queries.tsv` (`qid<TAB>text`), `query_sources.tsv` (`qid<TAB>document id`) and
    `pseudo_queries.json` (parameters and counts) into the folder `out`, all at once."""
    out = Path(out)
    with atomic_folder(out) as staging:
        (staging / QUERIES_FILE).write_text("".join(f"{q}\t{t}\n" for q, t in pseudo.queries.items()), "utf-8")
        (staging / SOURCES_FILE).write_text("".join(f"{q}\t{d}\n" for q, d in pseudo.sources.items()), "utf-8")
        stats = {**pseudo.stats, "corpus": corpus}
        (staging / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", "utf-8")
    return out


def read_query_sources(path: str | os.PathLike) -> dict[str, str]:
    """Query id -> source document id, from a `query_sources.tsv` (or the folder holding it)."""
    from .ir_files import _read_id_text_tsv

    path = Path(path)
    return _read_id_text_tsv(path / SOURCES_FILE if path.is_dir() else path, "qid")


def as_dict(pseudo: PseudoQueries) -> dict:
    return asdict(pseudo)
