"""Training: arguments, data, collator, checkpoints, the trainer, and whole runs of train_scripts/train.py."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig, BertModel, TrainingArguments

import hf_kd
from hf_kd.data import load_train_dataset
from hf_kd.data.errors import DataFormatError
from hf_kd.jobs import output_lock
from hf_kd.losses import get_loss
from hf_kd.training import (
    CachingTokenizer,
    ConfigError,
    DistillationTrainer,
    HfKdArguments,
    RankingCollator,
    check_dataset_for_loss,
    last_complete_checkpoint,
    parse_train_args,
)
from hf_kd.training.checkpoints import COMPLETE_MARKER, resolve_resume_checkpoint, rotate_checkpoints
from hf_kd.training.commands import add_subcommands
from hf_kd.training.run import build_trainer, main, training_passages
from hf_kd.training.trainer import split_backbone_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "train_scripts" / "train.py"
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their spin-waits cost seconds a step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_triples(path: Path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def overlap_score(query: str, passage: str) -> float:
    """The test's fixed teacher: distinct query words found in the passage."""
    words = set(query.lower().split())
    return float(sum(word in words for word in set(passage.lower().split())))


@pytest.fixture(scope="module")
def triples(ci_data: Path) -> list[list[str]]:
    rows = read_triples(ci_data / "msmarco-train-100.triples.tsv")
    assert len(rows) == 100
    return rows


@pytest.fixture(scope="module")
def scored_file(tmp_path_factory, triples) -> Path:
    """The 100 real triples with fixed teacher scores, as Parquet."""
    path = tmp_path_factory.mktemp("data") / "scored.parquet"
    datasets.Dataset.from_dict(
        {
            "query": [q for q, _, _ in triples],
            "positive": [p for _, p, _ in triples],
            "negative": [n for _, _, n in triples],
            "pos_score": [overlap_score(q, p) for q, p, _ in triples],
            "neg_score": [overlap_score(q, n) for q, _, n in triples],
        }
    ).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def nway_file(tmp_path_factory, triples) -> Path:
    """n-way rows (positive, its negative, the next query's negative) with fixed teacher scores."""
    path = tmp_path_factory.mktemp("data") / "nway.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i, (query, positive, negative) in enumerate(triples):
            passages = [positive, negative, triples[(i + 1) % len(triples)][2]]
            scores = [overlap_score(query, p) for p in passages]
            handle.write(json.dumps({"query": query, "passages": passages, "scores": scores}) + "\n")
    return path


def save_backbone(folder: Path, tokenizer, dropout: float) -> str:
    torch.manual_seed(0)
    config = BertConfig(**TINY, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, tokenizer) -> str:
    """A tiny randomly initialised BERT checkpoint with the MiniLM tokenizer (dropout 0.1)."""
    return save_backbone(tmp_path_factory.mktemp("tiny-bert"), tokenizer, dropout=0.1)


@pytest.fixture(scope="module")
def backbone_no_dropout(tmp_path_factory, tokenizer) -> str:
    return save_backbone(tmp_path_factory.mktemp("tiny-bert-no-dropout"), tokenizer, dropout=0.0)


MODEL_CONFIGS = {
    "bert_cat": {},
    "bert_dot": {},
    "colbert": {"compression_dim": 16},
    "prett": {"split_layer": 1},
    "tk": {"intermediate_size": 32},
}


def make_model(architecture: str, backbone: str):
    model_class = hf_kd.model_class_for(architecture)
    return model_class.from_backbone(
        backbone, max_query_length=16, max_passage_length=32, **MODEL_CONFIGS[architecture]
    )


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def base_config(backbone: str, train_file: Path, output_dir: Path, **overrides) -> dict:
    config = {
        "architecture": "bert_dot",
        "backbone": backbone,
        "max_query_length": 16,
        "max_passage_length": 48,
        "loss": "margin_mse",
        "train_files": [str(train_file)],
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "learning_rate": 1.0e-3,
        "max_steps": 6,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 7,
    }
    config.update(overrides)
    return config


# --------------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------------


def test_yaml_config_with_command_line_overrides(tmp_path):
    config = write_config(
        tmp_path / "run.yaml",
        loss="listwise_kl",
        loss_kwargs={"temperature": 2.0},
        model_config={"compression_dim": 64},
        learning_rate="7e-6",  # YAML 1.1 reads this as a string: argparse converts it like a command-line value
        per_device_train_batch_size=32,
        train_files=["a.parquet", "b.parquet"],
        output_dir=str(tmp_path / "out"),
        group_by_length=True,
    )
    hf_kd_args, training_args = parse_train_args(
        ["--config", str(config), "--per_device_train_batch_size", "16", "--loss_kwargs", '{"temperature": 3}']
    )
    assert hf_kd_args.loss == "listwise_kl"
    assert hf_kd_args.loss_kwargs == {"temperature": 3}
    assert hf_kd_args.model_config == {"compression_dim": 64}
    assert hf_kd_args.train_files == ["a.parquet", "b.parquet"]
    assert hf_kd_args.group_by_length is True
    assert training_args.learning_rate == pytest.approx(7e-6)
    assert training_args.per_device_train_batch_size == 16


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'lr'"):
        parse_train_args(["--config", str(write_config(tmp_path / "a.yaml", lr=1.0, output_dir="x"))])
    with pytest.raises(ConfigError, match=r"b.yaml: learning_rate: could not convert string to float: 'fast'"):
        parse_train_args(["--config", str(write_config(tmp_path / "b.yaml", learning_rate="fast", output_dir="x"))])
    with pytest.raises(ConfigError, match="--config: .*missing.yaml does not exist"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="loss_kwargs: expected a JSON object"):
        parse_train_args(["--output_dir", "x", "--loss_kwargs", "{temperature: 2}"])
    with pytest.raises(SystemExit):  # argparse: invalid choice, listing the losses
        parse_train_args(["--output_dir", "x", "--loss", "margin-mse"])


def test_shipped_configs_parse_with_paper_hyper_parameters():
    names = ("bert_cat", "bert_dot", "colbert", "prett", "tk", "bert_cat_teacher")
    for path in (REPO_ROOT / "train_scripts" / "configs" / f"{name}.yaml" for name in names):
        hf_kd_args, training_args = parse_train_args(["--config", str(path)])
        assert training_args.learning_rate == pytest.approx(7e-6), path.name
        assert training_args.per_device_train_batch_size == 32, path.name
        assert (hf_kd_args.max_query_length, hf_kd_args.max_passage_length) == (30, 200), path.name
        assert hf_kd_args.architecture == path.stem.removesuffix("_teacher"), path.name
        assert hf_kd_args.loss == ("ranknet" if path.stem == "bert_cat_teacher" else "margin_mse"), path.name
    tk_args, _ = parse_train_args(["--config", str(REPO_ROOT / "train_scripts/configs/tk.yaml")])
    assert tk_args.non_backbone_learning_rate == pytest.approx(1e-4)


def test_hf_kd_train_subcommand_forwards_only_explicit_values(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser(prog="hf-kd")
    add_subcommands(parser.add_subparsers(dest="command"))
    namespace = parser.parse_args(
        ["train", "--config", "run.yaml", "--learning_rate", "3e-5", "--no_remove_unused_columns", "--bf16"]
    )
    received = []
    monkeypatch.setattr("hf_kd.training.commands.main", lambda explicit_values: received.append(explicit_values) or 0)
    assert namespace.func(namespace) == 0
    assert received == [{"config": "run.yaml", "learning_rate": 3e-05, "remove_unused_columns": False, "bf16": True}]


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


def test_load_train_dataset_formats(ci_data, tmp_path, triples):
    unscored = load_train_dataset([str(ci_data / "msmarco-train-100.triples.tsv")])
    assert unscored.column_names == ["query", "positive", "negative"]
    assert len(unscored) == 100 and unscored[0]["query"] == triples[0][0]

    paper_tsv = tmp_path / "paper.tsv"
    paper_tsv.write_text("".join(f"{i}.5\t{-i}\t{q}\t{p}\t{n}\n" for i, (q, p, n) in enumerate(triples[:3])))
    scored = load_train_dataset([str(paper_tsv)])
    assert scored[2]["pos_score"] == 2.5 and scored[2]["neg_score"] == -2.0 and scored[2]["negative"] == triples[2][2]

    renamed = tmp_path / "renamed.parquet"
    datasets.Dataset.from_dict(
        {"query": ["q"], "positive": ["p"], "negative": ["n"], "teacher_margin": [1.5]}
    ).to_parquet(renamed)
    margins = load_train_dataset([str(renamed), str(renamed)], margin_column="teacher_margin")
    assert margins.column_names == ["query", "positive", "negative", "margin"] and margins["margin"] == [1.5, 1.5]


def test_load_train_dataset_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1.0\t2.0\tq\tp\tn\n1.0\tq\tp\tn\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv, line 2: expected 5 tab-separated columns"):
        load_train_dataset([str(bad)])
    bad.write_text("1.0\t2.0\tq\tp\tn\nhigh\t2.0\tq\tp\tn\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv, line 2: pos_score must be a number, got 'high'"):
        load_train_dataset([str(bad)])
    other = tmp_path / "other.parquet"
    datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]}).to_parquet(other)
    with pytest.raises(ConfigError, match=r"other.parquet: columns \['answer', 'question'\] match no training"):
        load_train_dataset([str(other)])


def test_dataset_must_suit_the_loss(ci_data, scored_file, nway_file, tmp_path):
    unscored = load_train_dataset([str(ci_data / "msmarco-train-100.triples.tsv")])
    with pytest.raises(ConfigError, match="'margin_mse' needs teacher scores but the training data are unscored"):
        check_dataset_for_loss(unscored, "margin_mse")
    assert check_dataset_for_loss(unscored, "ranknet") == "triples"
    nway = load_train_dataset([str(nway_file)])
    with pytest.raises(ConfigError, match="'weighted_ranknet' is pairwise only but the training data are n-way"):
        check_dataset_for_loss(nway, "weighted_ranknet")
    assert check_dataset_for_loss(nway, "margin_mse") == "nway"
    margins = datasets.Dataset.from_dict({"query": ["q"], "positive": ["p"], "negative": ["n"], "margin": [1.0]})
    with pytest.raises(ConfigError, match="'pointwise_mse' needs raw teacher scores"):
        check_dataset_for_loss(margins, "pointwise_mse")


# --------------------------------------------------------------------------------------------------------------------
# Collator
# --------------------------------------------------------------------------------------------------------------------


def test_caching_tokenizer_gives_the_tokenizers_ids_and_tokenises_each_text_once(tokenizer):
    cached = CachingTokenizer(tokenizer)
    texts = ["what is knowledge distillation", "a cat", "what is knowledge distillation"]
    options = dict(add_special_tokens=False, truncation=True, max_length=4)
    first = cached(texts, **options)
    assert first["input_ids"] == tokenizer(texts, **options)["input_ids"]
    assert (cached.misses, cached.hits) == (2, 1)
    cached(texts, **options)
    assert (cached.misses, cached.hits) == (2, 4)
    cached(texts, add_special_tokens=False, truncation=True, max_length=8)  # other options: other cache entries
    assert cached.misses == 4
    assert cached(texts, return_tensors="pt", padding=True)["input_ids"].shape[0] == 3  # passed through
    assert cached.cls_token_id == tokenizer.cls_token_id
    small = CachingTokenizer(tokenizer, max_entries=2)
    small(["a", "b", "c"])
    assert len(small.cache) == 2


def test_collator_batches_triples_margins_and_n_way(backbone, tokenizer, triples):
    model = make_model("bert_dot", backbone)
    collator = RankingCollator(model, tokenizer)
    rows = [
        {"query": q, "positive": p, "negative": n, "pos_score": 3.0 + i, "neg_score": 1.0}
        for i, (q, p, n) in enumerate(triples[:3])
    ]
    batch = collator(rows)
    passages = [text for row in rows for text in (row["positive"], row["negative"])]
    expected = model.prepare_inputs([row["query"] for row in rows], passages, tokenizer)
    for key, value in expected.items():
        assert torch.equal(batch[key], value), key
    assert batch["group_size"] == 2
    assert torch.equal(batch["labels"], torch.tensor([[3.0, 1.0], [4.0, 1.0], [5.0, 1.0]]))
    margin_rows = [{"query": q, "positive": p, "negative": n, "margin": 2.0} for q, p, n in triples[:2]]
    assert torch.equal(collator(margin_rows)["labels"], torch.tensor([2.0, 2.0]))
    assert "labels" not in collator([{"query": q, "positive": p, "negative": n} for q, p, n in triples[:2]])
    nway_rows = [{"query": q, "passages": [p, n, n], "scores": [3.0, 2.0, 1.0]} for q, p, n in triples[:2]]
    nway = collator(nway_rows)
    assert nway["group_size"] == 3 and nway["labels"].shape == (2, 3) and nway["passage_input_ids"].shape[0] == 6
    with pytest.raises(ValueError, match="row 1 of the batch has 2 passages, expected 3"):
        collator([nway_rows[0], {"query": "q", "passages": ["a", "b"], "scores": [1.0, 0.0]}])


def test_collator_does_not_tokenise_again_in_later_epochs(backbone, tokenizer, triples):
    collator = RankingCollator(make_model("colbert", backbone), tokenizer)
    rows = [{"query": q, "positive": p, "negative": n, "margin": 1.0} for q, p, n in triples[:20]]
    first_epoch = [collator(rows[i : i + 5]) for i in range(0, 20, 5)]
    misses = collator.tokenizer.misses
    assert misses > 0
    second_epoch = [collator(rows[i : i + 5]) for i in range(0, 20, 5)]
    assert collator.tokenizer.misses == misses
    for a, b in zip(first_epoch, second_epoch):
        assert torch.equal(a["query_input_ids"], b["query_input_ids"])
        assert torch.equal(a["passage_input_ids"], b["passage_input_ids"])


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------


def make_checkpoint(output_dir: Path, step: int, complete: bool) -> Path:
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"partial")
    if complete:
        (folder / COMPLETE_MARKER).write_text(json.dumps({"global_step": step}))
    return folder


def test_resume_never_picks_a_half_written_checkpoint(tmp_path):
    assert resolve_resume_checkpoint("auto", str(tmp_path)) is None
    with pytest.raises(ValueError, match="no complete checkpoint"):
        resolve_resume_checkpoint(True, str(tmp_path))
    make_checkpoint(tmp_path, 10, complete=True)
    make_checkpoint(tmp_path, 20, complete=True)
    half_written = make_checkpoint(tmp_path, 30, complete=False)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None
    with pytest.raises(ValueError, match=r"checkpoint-30 is incomplete .*last complete checkpoint is .*checkpoint-20"):
        resolve_resume_checkpoint(str(half_written), str(tmp_path))


def test_rotation_deletes_only_after_commit_and_keeps_the_best(tmp_path):
    for step in (10, 20, 30):
        make_checkpoint(tmp_path, step, complete=True)
    make_checkpoint(tmp_path, 25, complete=False)  # left by a crash
    deleted = rotate_checkpoints(tmp_path, 1, str(tmp_path / "checkpoint-10"), current_step=30)
    assert sorted(Path(p).name for p in deleted) == ["checkpoint-20", "checkpoint-25"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-30"]


# --------------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------------


def test_bad_configs_fail_before_training(backbone, scored_file, nway_file, ci_data, tmp_path):
    def build(**overrides):
        config = base_config(backbone, scored_file, tmp_path / "out", **overrides)
        argv = ["--config", str(write_config(tmp_path / "run.yaml", **config))]
        return build_trainer(*parse_train_args(argv))

    with pytest.raises(ConfigError, match=r"train_files: .*missing.parquet does not exist"):
        build(train_files=[str(tmp_path / "missing.parquet")])
    with pytest.raises(ConfigError, match="'weighted_ranknet' is pairwise only but the training data are n-way"):
        build(train_files=[str(nway_file)], loss="weighted_ranknet")
    with pytest.raises(ConfigError, match="needs teacher scores but the training data are unscored"):
        build(train_files=[str(ci_data / "msmarco-train-100.triples.tsv")])
    with pytest.raises(ConfigError, match="eval_strategy is 'steps' but no dev set"):
        build(eval_strategy="steps", eval_steps=2)
    with pytest.raises(ConfigError, match="loss_kwargs: loss 'margin_mse' does not take"):
        build(loss_kwargs={"temperature": 2.0})
    with pytest.raises(ConfigError, match=r"model_config: \['compresion_dim'\] are not fields of the colbert config"):
        build(architecture="colbert", model_config={"compresion_dim": 16})
    with pytest.raises(ConfigError, match="max_passage_length is given twice: 64 as max_passage_length and 48"):
        build(max_passage_length=64, model_config={"max_passage_length": 48})
    with pytest.raises(ConfigError, match="loss: unknown 'margin-mse'"):
        HfKdArguments(loss="margin-mse", backbone=backbone, train_files=[str(scored_file)]).validate()
    assert main(["--config", str(tmp_path / "run.yaml"), "--train_files", str(tmp_path / "nope.tsv")]) == 2
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_a_continued_checkpoint_keeps_its_own_lengths_unless_told_otherwise(tokenizer, scored_file, tmp_path):
    from hf_kd.training.run import build_model

    backbone = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = hf_kd.BertDotConfig(backbone_config=backbone, max_query_length=12, max_passage_length=48)
    hf_kd.BertDotModel(config).save_pretrained(tmp_path / "saved", tokenizer=tokenizer)
    args = HfKdArguments(model_name_or_path=str(tmp_path / "saved"), train_files=[str(scored_file)])
    args.validate()
    model, _ = build_model(args)
    assert (model.config.max_query_length, model.config.max_passage_length) == (12, 48)
    args = HfKdArguments(
        model_name_or_path=str(tmp_path / "saved"), train_files=[str(scored_file)], max_passage_length=7
    )
    args.validate()
    assert build_model(args)[0].config.max_passage_length == 7


def test_group_by_length_batches_by_the_longest_passage(backbone, scored_file, tmp_path):
    config = base_config(backbone, scored_file, tmp_path / "out", group_by_length=True)
    trainer = build_trainer(*parse_train_args(["--config", str(write_config(tmp_path / "run.yaml", **config))]))
    assert trainer.args.train_sampling_strategy == "group_by_length"
    rows = trainer.train_dataset
    assert rows[0]["length"] == len(rows[0]["query"]) + max(len(rows[0]["positive"]), len(rows[0]["negative"]))


def test_non_backbone_parameters_get_their_own_learning_rate(backbone, scored_file, tmp_path):
    model = make_model("tk", backbone)
    trainer = DistillationTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), learning_rate=7e-6, use_cpu=True, report_to="none"),
        loss=get_loss("margin_mse"),
        train_dataset=load_train_dataset([str(scored_file)]),
        processing_class=None,
        non_backbone_learning_rate=1e-4,
    )
    optimizer = trainer.create_optimizer()
    backbone_params, other_params = split_backbone_parameters(model)
    assert backbone_params and other_params
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert {lr_of[id(p)] for p in backbone_params} == {7e-6}
    assert {lr_of[id(p)] for p in other_params} == {1e-4}
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())


def dataset_loss(model, collator, rows, loss) -> float:
    model.eval()
    with torch.no_grad():
        batch = collator(rows)
        labels, group_size = batch.pop("labels"), batch.pop("group_size")
        value = loss(model(**batch).scores.view(-1, group_size), labels).item()
    model.train()
    return value


# a tiny random model learns the overlap teacher within a few dozen steps at these rates (TK's kernels need more)
LEARNING_RATES = {"bert_cat": 5e-3, "bert_dot": 5e-3, "colbert": 5e-3, "prett": 5e-3, "tk": 1e-2}


@pytest.mark.parametrize("architecture", list(MODEL_CONFIGS))
def test_training_reduces_the_loss(architecture, backbone_no_dropout, scored_file, tokenizer, tmp_path):
    """30 Margin-MSE steps on the 100 real triples: the loss over all of them (eval mode) drops by a quarter.

    Before training the tiny models score every passage alike, so the loss starts at mean((t+ - t-)^2), the loss of
    a student that has learned nothing; ending well below it means the student learned the teacher's margins.
    """
    train_dataset = load_train_dataset([str(scored_file)])
    rows = list(train_dataset)
    torch.manual_seed(0)
    model = make_model(architecture, backbone_no_dropout)
    loss = get_loss("margin_mse")
    collator = RankingCollator(model, tokenizer)
    before = dataset_loss(model, collator, rows, loss)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=10,
        max_steps=30,
        learning_rate=LEARNING_RATES[architecture],
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    trainer = DistillationTrainer(
        model=model, args=args, loss=loss, train_dataset=train_dataset, processing_class=tokenizer
    )
    trainer.train()
    after = dataset_loss(model, collator, rows, loss)
    assert after < 0.75 * before, (architecture, before, after)
    assert trainer.examples_seen == 300


# --------------------------------------------------------------------------------------------------------------------
# Whole runs of train_scripts/train.py
# --------------------------------------------------------------------------------------------------------------------


SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(config: Path, *extra: str, launcher: tuple[str, ...] = (sys.executable,), timeout: int = 300):
    command = [*launcher, str(TRAIN_SCRIPT), "--config", str(config), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=SUBPROCESS_ENV)


def test_train_script_end_to_end(backbone, scored_file, ci_data, tmp_path):
    dev = ci_data / "msmarco-dl20"
    config = base_config(
        backbone,
        scored_file,
        tmp_path / "out",
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="nDCG@10",
        dev_queries=str(dev / "queries.tsv"),
        dev_collection=str(dev / "collection.tsv"),
        dev_run=str(dev / "runs" / "bm25.top30.trec"),
        dev_qrels=str(dev / "qrels.txt"),
        dev_top_k=10,
    )
    result = run_script(write_config(tmp_path / "run.yaml", **config))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["examples_seen"] == 32
    assert set(summary["final_dev_metrics"]) >= {"eval_nDCG@10", "eval_MRR@10"}
    assert 0.0 <= summary["final_dev_metrics"]["eval_nDCG@10"] <= 1.0
    assert summary["best_model_checkpoint"] in {str(out / "checkpoint-2"), str(out / "checkpoint-4")}
    assert summary["final_dev_metrics"]["eval_nDCG@10"] == pytest.approx(summary["best_metric"])
    losses = [entry["loss"] for entry in summary["log_history"] if "loss" in entry]
    assert len(losses) == 4 and summary["train_samples_per_second"] > 0 and summary["wall_time_s"] > 0
    assert (
        summary["arguments"]["hf_kd"]["dev_top_k"] == 10 and summary["arguments"]["hf_kd"]["architecture"] == "bert_dot"
    )
    assert summary["arguments"]["training"]["max_steps"] == 4 and summary["arguments"]["training"]["save_steps"] == 2
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "BertDotModel"
    assert not (out / ".final-model.tmp").exists()
    assert all((path / COMPLETE_MARKER).is_file() for path in out.glob("checkpoint-*"))


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(backbone, scored_file, tmp_path):
    # dropout on: the resumed run must restore the RNG state as well as model, optimizer, scheduler and data position
    common = dict(max_steps=30, save_strategy="steps", save_steps=5, lr_scheduler_type="linear")
    config_a = write_config(tmp_path / "a.yaml", **base_config(backbone, scored_file, tmp_path / "a", **common))
    config_b = write_config(tmp_path / "b.yaml", **base_config(backbone, scored_file, tmp_path / "b", **common))
    uninterrupted = run_script(config_a)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    process = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), "--config", str(config_b)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=SUBPROCESS_ENV,
    )
    marker = tmp_path / "b" / "checkpoint-10" / COMPLETE_MARKER
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "b" / "model.safetensors").exists()
    killed_at = last_complete_checkpoint(tmp_path / "b")
    assert killed_at is not None and int(killed_at.rsplit("-", 1)[1]) < 30
    # a save cut short by the kill: a checkpoint folder without its marker, newer than every complete one
    make_checkpoint(tmp_path / "b", 29, complete=False)

    resumed = run_script(config_b, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary_a = json.loads((tmp_path / "a" / "train_summary.json").read_text())
    summary_b = json.loads((tmp_path / "b" / "train_summary.json").read_text())
    assert summary_b["global_step"] == summary_a["global_step"] == 30
    assert summary_b["resumed_from_checkpoint"] == killed_at  # not the half-written checkpoint-29
    assert summary_b["steps_this_run"] == 30 - int(killed_at.rsplit("-", 1)[1])
    assert summary_a["resumed_from_checkpoint"] is None and summary_a["steps_this_run"] == 30
    assert summary_b["examples_seen"] == summary_a["examples_seen"] == 2 * 100 + 4 * 8  # 13 batches an epoch
    weights_a, weights_b = read_weights(tmp_path / "a"), read_weights(tmp_path / "b")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:  # same CPU, same kernels: expected bit-identical; the tolerance allows fp reordering
        torch.testing.assert_close(weights_b[name], weights_a[name], rtol=0, atol=1e-6, msg=name)
    losses_a = [e["loss"] for e in summary_a["log_history"] if "loss" in e]
    losses_b = [e["loss"] for e in summary_b["log_history"] if "loss" in e]
    assert losses_b == pytest.approx(losses_a, abs=1e-6)


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(backbone_no_dropout, scored_file, tmp_path):
    common = dict(max_steps=10, lr_scheduler_type="constant")
    one = write_config(
        tmp_path / "one.yaml",
        **base_config(backbone_no_dropout, scored_file, tmp_path / "one", per_device_train_batch_size=8, **common),
    )
    two = write_config(
        tmp_path / "two.yaml",
        **base_config(backbone_no_dropout, scored_file, tmp_path / "two", per_device_train_batch_size=4, **common),
    )
    single = run_script(one)
    assert single.returncode == 0, single.stderr[-3000:]
    accelerate = Path(sys.executable).with_name("accelerate")
    # accelerate launches several CPU processes through its multi-process launcher; use_cpu selects gloo
    with socket.socket() as probe:  # a free port for the process group
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    launcher = (str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port)
    double = run_script(two, "--use_cpu", "true", launcher=launcher)
    assert double.returncode == 0, double.stderr[-3000:]
    summary_one = json.loads((tmp_path / "one" / "train_summary.json").read_text())
    summary_two = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary_two["world_size"] == 2 and summary_one["world_size"] == 1
    assert summary_two["examples_seen"] == summary_one["examples_seen"] == 80
    losses_one = [e["loss"] for e in summary_one["log_history"] if "loss" in e]
    losses_two = [e["loss"] for e in summary_two["log_history"] if "loss" in e]
    assert len(losses_one) == len(losses_two) == 10
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    assert losses_one[-1] != pytest.approx(losses_one[0], rel=1e-2)  # the trajectories move


def test_one_teacher_of_an_ensemble_dataset_can_be_trained_from(tmp_path):
    import pyarrow as pa

    from hf_kd.data import SCORED_TRIPLES_FEATURES, Provenance, ScoreDataset, load_train_dataset

    features = SCORED_TRIPLES_FEATURES.copy()
    for column in ("pos_score_a", "neg_score_a", "pos_score_b", "neg_score_b"):
        features[column] = features["pos_score"]
    table = pa.table(
        {
            "query": ["q"],
            "positive": ["p"],
            "negative": ["n"],
            "pos_score": pa.array([2.0], pa.float32()),
            "neg_score": pa.array([1.0], pa.float32()),
            "pos_score_a": pa.array([3.0], pa.float32()),
            "neg_score_a": pa.array([0.0], pa.float32()),
            "pos_score_b": pa.array([1.0], pa.float32()),
            "neg_score_b": pa.array([2.0], pa.float32()),
        }
    )
    provenance = Provenance(format="hf-kd-score", schema="scored_triples", source_files=[], teachers=["a", "b"])
    ScoreDataset.write(tmp_path / "scores", table.to_batches(), features=features, provenance=provenance)
    ensemble = load_train_dataset([str(tmp_path / "scores")])
    assert ensemble.column_names == ["query", "positive", "negative", "pos_score", "neg_score"]
    assert (ensemble[0]["pos_score"], ensemble[0]["neg_score"]) == (2.0, 1.0)
    teacher_a = load_train_dataset(
        [str(tmp_path / "scores")], pos_score_column="pos_score_a", neg_score_column="neg_score_a"
    )
    assert (teacher_a[0]["pos_score"], teacher_a[0]["neg_score"]) == (3.0, 0.0)


def _said(capsys) -> str:
    """What a run wrote to stderr, less the precision line a CPU without bfloat16 units adds."""
    lines = capsys.readouterr().err.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("hf-kd: training in"))


def test_rerun_of_the_same_command_resumes_and_another_run_is_refused(
    backbone_no_dropout, scored_file, tmp_path, capsys
):
    out = tmp_path / "out"
    config = base_config(backbone_no_dropout, scored_file, out, max_steps=4, save_strategy="steps", save_steps=2)
    config_path = write_config(tmp_path / "run.yaml", **config)
    assert main(["--config", str(config_path)]) == 0
    uninterrupted = read_weights(out)
    shutil.rmtree(out / "checkpoint-4")  # as if killed after checkpoint-2
    capsys.readouterr()

    assert main(["--config", str(config_path)]) == 0
    assert _said(capsys).splitlines()[0] == (
        f"resuming from {out / 'checkpoint-2'}, the last complete checkpoint of the same run "
        "(--overwrite_output_dir true starts over)"
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_checkpoint"] == str(out / "checkpoint-2") and summary["steps_this_run"] == 2
    for name, weight in read_weights(out).items():
        torch.testing.assert_close(weight, uninterrupted[name], rtol=0, atol=1e-6, msg=name)

    assert main(["--config", str(config_path), "--learning_rate", "0.002"]) == 2
    assert _said(capsys) == (
        f"error: {out} holds checkpoints of another run (training.learning_rate: 0.001 -> 0.002); pass "
        "--overwrite_output_dir true to start over, or choose another output_dir\n"
    )
    assert main(["--config", str(config_path), "--learning_rate", "0.002", "--overwrite_output_dir", "true"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_checkpoint"] is None and summary["steps_this_run"] == 4


def test_a_second_training_into_the_same_output_dir_stops_naming_the_first(backbone, scored_file, tmp_path, capsys):
    out = tmp_path / "out"
    config_path = write_config(tmp_path / "run.yaml", **base_config(backbone, scored_file, out))
    with output_lock(out):
        assert main(["--config", str(config_path)]) == 2
    assert f"{out} is being written by pid {os.getpid()} on " in capsys.readouterr().err
    assert not (out / "train_summary.json").exists()


def test_a_tk_built_for_training_starts_its_query_term_weights_at_the_training_passages_idf(
    backbone, scored_file, nway_file, tokenizer, tmp_path
):
    config = base_config(
        backbone, scored_file, tmp_path / "out", architecture="tk", model_config={"query_term_weights": True}
    )
    trainer = build_trainer(*parse_train_args(["--config", str(write_config(tmp_path / "run.yaml", **config))]))
    rows = datasets.Dataset.from_parquet(str(scored_file))
    passages = list(dict.fromkeys([*rows["positive"], *rows["negative"]]))
    assert training_passages(trainer.train_dataset) == passages
    expected = hf_kd.TKModel.from_backbone(backbone, max_passage_length=48, query_term_weights=True)
    expected.init_query_term_weights(tokenizer, passages)
    started = trainer.model.query_term_weights.weight
    assert torch.equal(started, expected.query_term_weights.weight) and len(set(started.flatten().tolist())) > 10

    nway = load_train_dataset([str(nway_file)])
    in_rows = [json.loads(line)["passages"] for line in open(nway_file, encoding="utf-8")]
    assert training_passages(nway) == list(dict.fromkeys(text for row in in_rows for text in row))
    assert training_passages(nway, max_rows=1) == in_rows[0]
