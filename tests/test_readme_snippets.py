"""Every Python snippet of the README's "Using the models" section runs as written, each in a fresh interpreter, with
its placeholder names replaced by tiny saved models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SECTION = "## Using the models"
MODEL_TYPE_MESSAGE = "You are using a model of type"


def section_snippets() -> list[str]:
    """The ```python blocks of the README's "Using the models" section, in order."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n{SECTION}\n")
    end = readme.index("\n## ", start + len(SECTION) + 2)
    return re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.DOTALL)


@pytest.fixture(scope="module")
def tiny_cat_folder(tmp_path_factory, tokenizer) -> Path:
    """A saved BERT_CAT on a random 2-layer BERT of hidden size 32, with the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig

    from hf_kd import BertCatConfig, BertCatModel

    torch.manual_seed(0)
    backbone = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    folder = tmp_path_factory.mktemp("models") / "tiny-cat"
    BertCatModel(BertCatConfig(backbone_config=backbone)).save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.fixture(scope="module")
def placeholders(tiny_dot_folder, tiny_cat_folder, minilm_path) -> dict[str, str]:
    """What each placeholder name of the section stands for here."""
    return {
        "path/or/org/bert_dot-margin-mse": str(tiny_dot_folder),
        "my-bert-dot": str(tiny_dot_folder),
        "my-bert-cat": str(tiny_cat_folder),
        "distilbert-base-uncased": minilm_path,
    }


def run_snippet(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh Python in `cwd` (offline, with its own Hugging Face cache for remote code), then prints
    whether hf_kd was imported."""
    program = code + "\nimport sys\nprint('hf_kd imported:', 'hf_kd' in sys.modules)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


def test_the_section_has_the_snippets_and_names_its_placeholders(placeholders):
    snippets = section_snippets()
    assert len(snippets) == 4
    text = "".join(snippets)
    for name in placeholders:
        assert f'"{name}"' in text, name
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index(f"\n{SECTION}\n") :]
    section = section[: section.index("```")]
    assert "placeholders" in section and "outputs/adapt/students/colbert-teacher-s42" in section


def test_the_main_job_leaves_its_student_where_the_readme_says():
    """The README's first command, parsed by the CLI: the adapted student and its self control it trains are the
    folders "Using the models" names."""
    import shlex

    from hf_kd.adapt import get_adapt_budget
    from hf_kd.cli import build_parser

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    first = re.findall(r"```bash\n(.*?)\n```", readme[readme.index("## Set-up") :], flags=re.DOTALL)[0]
    command = first.split(" && ")[-1]
    assert command.startswith("hf-kd adapt ")
    args = build_parser().parse_args(shlex.split(command)[1:])
    students = get_adapt_budget(args.budget, {}).student_runs(with_sources=False)
    section = readme[readme.index(f"\n{SECTION}\n") :]
    for name, *_ in students:
        assert f"{args.out}/students/{name}" in section[: section.index("```")], name
    assert [(a, s) for _, a, s, _ in students] == [("colbert", "teacher"), ("colbert", "self")]
    assert args.queries == args.corpus and args.queries_split == "train"  # the unjudged training claims


@pytest.mark.parametrize("index", range(4))
def test_each_snippet_runs_as_written(index, placeholders, tmp_path):
    code = section_snippets()[index]
    for name, replacement in placeholders.items():
        code = code.replace(f'"{name}"', repr(replacement))
    result = run_snippet(code, tmp_path)
    assert result.returncode == 0, f"snippet {index + 1} failed:\n{code}\n{result.stderr[-3000:]}"
    uses_hf_kd = "import hf_kd" in code or "from hf_kd" in code
    assert f"hf_kd imported: {uses_hf_kd}" in result.stdout  # the snippet without hf-kd really runs without it
    assert MODEL_TYPE_MESSAGE not in result.stderr
    if "my-colbert" in code:  # the folder it saves is a complete ColBERT checkpoint with its tokenizer
        config = json.loads((tmp_path / "my-colbert" / "config.json").read_text())
        assert config["model_type"] == "hfkd_colbert" and config["compression_dim"] == 128
        assert (tmp_path / "my-colbert" / "tokenizer.json").is_file()
