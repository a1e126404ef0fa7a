"""`--max-batch-tokens` of `hf-kd evaluate`, `index`, `retrieve` and `mine` reaches the models: every forward pass
of a BERT backbone holds at most that many padded tokens (a single text or pair longer than the cap goes alone), the
default is the models' CPU cap, and a bad value is refused in one line."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import wide_random_cat_teacher
from transformers.models.bert.modeling_bert import BertModel

from hf_kd.cli import main
from hf_kd.data.ir_files import read_collection_tsv, read_queries_tsv, read_run
from hf_kd.evaluation.commands import load_model
from hf_kd.evaluation.indexing import build_dense_index
from hf_kd.evaluation.rerank import rerank
from hf_kd.mining import mine_hard_negatives
from hf_kd.mining.retrieval import load_dense_encoder
from hf_kd.models.ranking_functions import CPU_MAX_BATCH_TOKENS


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dl20(ci_data):
    folder = ci_data / "msmarco-dl20"
    return {
        "queries": folder / "queries.tsv",
        "collection": folder / "collection.tsv",
        "qrels": folder / "qrels.txt",
        "run": folder / "runs" / "bm25.top30.trec",
    }


@pytest.fixture(scope="module")
def cat_folder(tmp_path_factory, tokenizer):
    return wide_random_cat_teacher(tmp_path_factory.mktemp("models") / "tiny-cat", tokenizer, seed=0)


class Passes(list):
    """(rows, padded length) of forward passes; `backbones`: the ids of the BERT models that ran them."""

    def __init__(self):
        super().__init__()
        self.backbones: set[int] = set()

    def clear(self) -> None:
        super().clear()
        self.backbones.clear()


@pytest.fixture
def passes(monkeypatch) -> Passes:
    """(rows, padded length) of every forward pass of every BERT backbone while the test runs."""
    shapes = Passes()
    original = BertModel.forward

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is not None:
            shapes.append(tuple(input_ids.shape))
            shapes.backbones.add(id(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", forward)
    return shapes


def run_cli(argv, passes: Passes) -> Passes:
    """Runs `hf-kd ARGV`; returns the forward passes it made."""
    passes.clear()
    assert main([str(arg) for arg in argv]) == 0
    made = Passes()
    made.extend(passes)
    made.backbones.update(passes.backbones)
    return made


def assert_capped(shapes, cap: int, batch_size: int) -> None:
    assert shapes, "no forward pass recorded"
    for rows, width in shapes:
        assert rows <= batch_size
        assert rows * width <= cap or rows == 1, (rows, width, cap)


def largest(shapes) -> int:
    return max(rows * width for rows, width in shapes)


def read_scores(path) -> dict[tuple[str, str], float]:
    return {(qid, pid): score for qid, candidates in read_run(path).items() for pid, score in candidates.items()}


@pytest.mark.parametrize(
    "model, options",
    [("dot", []), ("dot", ["--no-cache"]), ("cat", [])],
    ids=["bert-dot-cached", "bert-dot-pairs", "bert-cat"],
)
def test_evaluate_caps_every_forward_pass(model, options, dl20, tiny_dot_folder, cat_folder, tmp_path, passes, capsys):
    folder = tiny_dot_folder if model == "dot" else cat_folder
    argv = ["evaluate", "--model", folder, "--queries", dl20["queries"], "--collection", dl20["collection"]]
    argv += ["--qrels", dl20["qrels"], "--run", dl20["run"], "--top-k", "30", "--device", "cpu", *options]
    capped = run_cli([*argv, "--out", tmp_path / "capped", "--batch-size", "64", "--max-batch-tokens", "200"], passes)
    assert_capped(capped, 200, 64)
    uncapped = run_cli([*argv, "--out", tmp_path / "uncapped", "--batch-size", "64", "--max-batch-tokens", "0"], passes)
    assert largest(uncapped) > 200 and len(uncapped) < len(capped)
    # the default is the models' CPU cap: batches of 512 pairs or passages would pad far beyond it
    default = run_cli([*argv, "--out", tmp_path / "default", "--batch-size", "512"], passes)
    assert_capped(default, CPU_MAX_BATCH_TOKENS, 512)
    unlimited = run_cli(
        [*argv, "--out", tmp_path / "unlimited", "--batch-size", "512", "--max-batch-tokens", "0"], passes
    )
    assert largest(unlimited) > CPU_MAX_BATCH_TOKENS
    capsys.readouterr()
    # how the batches are cut changes no score
    expected = read_scores(tmp_path / "uncapped" / "run.trec")
    for name in ("capped", "default", "unlimited"):
        assert read_scores(tmp_path / name / "run.trec") == pytest.approx(expected, abs=1e-4)


def test_index_and_retrieve_cap_every_forward_pass(dl20, tiny_dot_folder, tmp_path, passes, capsys):
    index = ["index", "--model", tiny_dot_folder, "--collection", dl20["collection"], "--device", "cpu"]
    capped = run_cli([*index, "--out", tmp_path / "capped", "--batch-size", "32", "--max-batch-tokens", "300"], passes)
    assert_capped(capped, 300, 32)
    assert sum(rows for rows, _ in capped) == len(read_collection_tsv(dl20["collection"]))
    uncapped = run_cli(
        [*index, "--out", tmp_path / "uncapped", "--batch-size", "32", "--max-batch-tokens", "0"], passes
    )
    assert largest(uncapped) > 300

    retrieve = ["retrieve", "--model", tiny_dot_folder, "--queries", dl20["queries"], "--qrels", dl20["qrels"]]
    retrieve += ["--k", "5", "--device", "cpu", "--batch-size", "8"]
    searched = run_cli(
        [*retrieve, "--index", tmp_path / "capped", "--out", tmp_path / "r1", "--max-batch-tokens", "24"], passes
    )
    assert_capped(searched, 24, 8)
    assert sum(rows for rows, _ in searched) == len(read_queries_tsv(dl20["queries"]))
    assert largest(run_cli([*retrieve, "--index", tmp_path / "uncapped", "--out", tmp_path / "r2"], passes)) > 24
    capsys.readouterr()
    assert read_scores(tmp_path / "r1" / "run.trec") == pytest.approx(
        read_scores(tmp_path / "r2" / "run.trec"), abs=1e-4
    )


def test_mine_caps_the_dense_retriever_and_the_teacher(dl20, tiny_dot_folder, cat_folder, tmp_path, passes, capsys):
    argv = ["mine", "--queries", dl20["queries"], "--collection", dl20["collection"], "--qrels", dl20["qrels"]]
    argv += ["--retriever", tiny_dot_folder, "--teacher", cat_folder, "--min-grade", "2", "--skip-missing"]
    argv += ["--range", "1:10", "--num-negatives", "2", "--device", "cpu", "--format", "triples-tsv"]
    capped = run_cli(
        [*argv, "--out", tmp_path / "capped.tsv", "--batch-size", "64", "--max-batch-tokens", "200"], passes
    )
    assert_capped(capped, 200, 64)
    uncapped = run_cli(
        [*argv, "--out", tmp_path / "uncapped.tsv", "--batch-size", "64", "--max-batch-tokens", "0"], passes
    )
    assert largest(uncapped) > 200
    capsys.readouterr()
    assert len(capped.backbones) == 2  # the retriever's passes and the teacher's, all capped
    assert (tmp_path / "capped.tsv").read_text(encoding="utf-8") == (tmp_path / "uncapped.tsv").read_text("utf-8")


def test_a_sentence_transformers_retriever_is_capped_too(dl20, minilm_path, passes):
    encoder, _ = load_dense_encoder(minilm_path, "cpu")
    texts = list(read_collection_tsv(dl20["collection"]).values())[:40]
    capped = encoder.encode_passages(texts, batch_size=16, max_batch_tokens=300).embeddings
    assert_capped(list(passes), 300, 16)
    passes.clear()
    uncapped = encoder.encode_passages(texts, batch_size=16, max_batch_tokens=0).embeddings
    assert largest(passes) > 300
    torch.testing.assert_close(capped, uncapped, atol=1e-5, rtol=1e-4)  # rows back in the order of the texts


@pytest.mark.parametrize("command", ["evaluate", "index", "retrieve", "mine"])
@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_a_bad_value_is_refused_in_one_line(command, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--max-batch-tokens", value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"hf-kd {command}: error: argument --max-batch-tokens: expected an integer >= 0 (0: no cap), got '{value}'"
    )


def test_the_library_refuses_a_bad_value_before_any_work(dl20, tiny_dot_folder, tmp_path, passes):
    model, tokenizer = load_model(str(tiny_dot_folder), "cpu")
    queries, collection = read_queries_tsv(dl20["queries"]), read_collection_tsv(dl20["collection"])
    run = read_run(dl20["run"])
    for bad in (-1, 1.5, "64", True):
        with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 0"):
            rerank(model, tokenizer, queries, collection, run, top_k=5, max_batch_tokens=bad, show_progress=False)
        with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 0"):
            build_dense_index(tiny_dot_folder, collection, tmp_path / "index", max_batch_tokens=bad)
        with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 0"):
            mine_hard_negatives(queries, collection, {}, max_batch_tokens=bad, show_progress=False)
    assert passes == [] and list(tmp_path.iterdir()) == []
