"""The README's evaluate-then-push workflow yields a card with a model-index; checkpoint tokenizers load without
hf-kd and without remote code."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from transformers import BertConfig

from hf_kd import BertDotConfig, BertDotModel
from hf_kd.cli import main
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401 - fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_BACKBONE = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def readme_commands(prefix: str) -> list[str]:
    """The commands of the README's workflow block that start with `prefix`, continuation lines joined."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## The workflow, one command per stage", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = re.sub(r"\\\n\s*", "", block).splitlines()
    return [line.strip() for line in lines if line.strip().startswith(prefix)]


def run_readme_command(command: str, data: Path) -> int:
    """Runs one README command through the `hf-kd` entry point, on the ci cut of DL20 (whose run is a top 30)."""
    command = command.replace("$D", str(data)).replace("bm25.top100.trec", "bm25.top30.trec")
    argv = shlex.split(command)
    assert argv[0] == "hf-kd"
    return main(argv[1:])


@pytest.fixture
def trained_bert_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer) -> Path:
    """A tiny BERT_DOT where the README's training step leaves it (`outputs/bert_dot`), the test's folder the cwd."""
    monkeypatch.chdir(tmp_path)
    model = BertDotModel(BertDotConfig(backbone_config=TINY_BACKBONE))
    model.save_pretrained("outputs/bert_dot", tokenizer=tokenizer)
    return tmp_path / "outputs" / "bert_dot"


def test_readme_workflow_evaluate_then_push_gives_a_model_index(trained_bert_dot, ci_data, hub_server: HubServer):
    (evaluate,) = readme_commands("hf-kd evaluate --model outputs/bert_dot")
    (push,) = readme_commands("hf-kd push outputs/bert_dot")
    assert "--out eval/bert_dot" in evaluate and " --metrics" not in push  # the README's workflow, as written
    assert run_readme_command(evaluate, ci_data / "msmarco-dl20") == 0
    assert run_readme_command(push, ci_data / "msmarco-dl20") == 0

    report = json.loads(Path("eval/bert_dot/metrics.json").read_text())
    repo_id = shlex.split(push)[shlex.split(push).index("--repo-id") + 1]
    results = HfApi().model_info(repo_id).card_data.eval_results
    assert {result.metric_name: result.metric_value for result in results} == pytest.approx(report["metrics"])
    assert {result.dataset_name for result in results} == {"TREC Deep Learning 2020 (passages)"}
    assert {result.task_name for result in results} == {"Passage re-ranking"}
    assert "nDCG@10" in hub_server.repo_files(repo_id)["README.md"].decode()

    # the record keeps a copy: the card still finds the results once the evaluation folder is gone
    shutil.rmtree("eval")
    assert main(["push", "outputs/bert_dot", "--repo-id", "org/moved"]) == 0
    moved = HfApi().model_info("org/moved").card_data.eval_results
    assert [result.metric_value for result in moved] == [result.metric_value for result in results]


def test_push_metrics_option_and_re_evaluation(trained_bert_dot, ci_data, hub_server: HubServer, capsys):
    data = ci_data / "msmarco-dl20"
    evaluate = (
        f"evaluate --model outputs/bert_dot --queries {data}/queries.tsv --collection {data}/collection.tsv "
        f"--run {data}/runs/bm25.top30.trec --qrels {data}/qrels.txt --top-k {{k}} --out {{out}}"
    )
    assert main(shlex.split(evaluate.format(k=10, out="eval/a"))) == 0
    assert main(shlex.split(evaluate.format(k=20, out="eval/a"))) == 0  # the same --out: its entry is replaced
    record = json.loads((trained_bert_dot / "hf_kd_evaluations.json").read_text())
    assert [entry["report"]["top_k"] for entry in record["evaluations"]] == [20]
    assert "per_query" not in record["evaluations"][0]["report"]
    assert record["evaluations"][0]["report"]["dataset"] == "msmarco-dl20"

    other = Path("elsewhere/metrics.json")
    other.parent.mkdir()
    other.write_text(json.dumps({"dataset": "scifact", "metrics": {"nDCG@10": 0.5, "MRR@10": 0.25}}))
    assert main(["push", "outputs/bert_dot", "--repo-id", "org/m", "--metrics", str(other)]) == 0
    results = HfApi().model_info("org/m").card_data.eval_results
    assert {result.dataset_name for result in results} == {"TREC Deep Learning 2020 (passages)", "BEIR SciFact"}
    capsys.readouterr()
    assert main(["push", "outputs/bert_dot", "--repo-id", "org/m", "--metrics", "missing/metrics.json"]) == 2
    assert capsys.readouterr().err.startswith("error: metrics file missing/metrics.json not found")


TOKENIZER_SCRIPT = """
import json, sys
sys.modules["hf_kd"] = None  # hf-kd is not importable here
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], **json.loads(sys.argv[2]))
texts = json.loads(sys.argv[3])
print(json.dumps({"class": type(tokenizer).__name__, "ids": [tokenizer(t)["input_ids"] for t in texts]}))
"""


def _load_tokenizer_without_hf_kd(folder: Path, kwargs: dict, texts: list[str], close_stdin: bool):
    return subprocess.run(
        [sys.executable, "-c", TOKENIZER_SCRIPT, str(folder), json.dumps(kwargs), json.dumps(texts)],
        stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: os.close(0)) if close_stdin else None,  # noqa: PLW1509 - the child starts without stdin
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd="/",
    )


def test_checkpoint_tokenizer_loads_without_hf_kd(trained_bert_dot, tokenizer, ci_data):
    texts = [line.split("\t", 1)[1] for line in (ci_data / "msmarco-dl20" / "queries.tsv").read_text().splitlines()]
    texts = texts[:5]
    expected = [tokenizer(text)["input_ids"] for text in texts]
    for kwargs, close_stdin in (({}, True), ({"trust_remote_code": False}, False)):
        result = _load_tokenizer_without_hf_kd(trained_bert_dot, kwargs, texts, close_stdin)
        assert result.returncode == 0, result.stderr
        assert "Do you wish to run the custom code" not in result.stdout + result.stderr
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
        assert loaded == {"class": type(tokenizer).__name__, "ids": expected}
