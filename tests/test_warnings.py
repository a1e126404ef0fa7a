"""Warnings the project itself caused are gone at their source: training on a CPU warns neither about pinned memory
nor about the tokenizer's PAD token, and loading a saved checkpoint's tokenizer without hf-kd prints nothing when
done the way the README shows."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import warnings

import torch

from hf_kd import BertDotConfig
from hf_kd.reproduce import get_budget
from hf_kd.reproduce.stages import make_backbone
from hf_kd.training.stage import train_model

PAD_MESSAGE = "The tokenizer has new PAD/BOS/EOS tokens"
PIN_MEMORY_MESSAGE = "'pin_memory' argument is set as true but no accelerator is found"
MODEL_TYPE_MESSAGE = "You are using a model of type"


@contextlib.contextmanager
def transformers_log():
    """The messages transformers logs in the block (its loggers write to the stream they found at import, which
    pytest's capture fixtures do not see)."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        logging.getLogger("transformers.trainer_utils").warning("probe")  # where the PAD message comes from
        assert messages == ["probe"]
        messages.clear()
        yield messages
    finally:
        logger.removeHandler(handler)


def test_training_on_a_cpu_warns_neither_about_pinned_memory_nor_about_the_pad_token(ci_data, tmp_path):
    assert not torch.cuda.is_available()  # the pinned-memory warning is about a machine without CUDA
    budget = get_budget("ci", {"batch_size": 4})
    backbone = make_backbone(budget, 1, tmp_path / "backbone-L1", seed=0)
    with warnings.catch_warnings(record=True) as caught, transformers_log() as logged:
        warnings.simplefilter("always")
        summary = train_model(
            budget,
            tmp_path / "student",
            architecture="bert_dot",
            backbone=backbone,
            loss="ranknet",
            train_file=str(ci_data / "msmarco-train-100.triples.tsv"),
            steps=2,
            seed=0,
            learning_rate=1e-3,
        )
    assert summary is not None and (tmp_path / "student" / "model.safetensors").is_file()
    messages = [str(warning.message) for warning in caught]
    assert not [m for m in messages if PIN_MEMORY_MESSAGE in m], messages
    assert not [m for m in logged if PAD_MESSAGE in m], logged
    # the trained checkpoint's config still says what the tokenizer pads with
    assert json.loads((tmp_path / "student" / "config.json").read_text())["pad_token_id"] == 0


def test_a_ranking_config_carries_its_backbones_pad_token():
    from transformers import AlbertConfig, BertConfig

    assert BertDotConfig(backbone_config=BertConfig(pad_token_id=3)).pad_token_id == 3
    assert BertDotConfig(backbone_config=AlbertConfig(pad_token_id=0), pad_token_id=5).pad_token_id == 5
    # a config saved before it carried the id takes it from its backbone when read back
    saved = BertDotConfig(backbone_config=BertConfig(pad_token_id=2)).to_dict()
    del saved["pad_token_id"]
    assert BertDotConfig.from_dict(saved).pad_token_id == 2


def _without_hf_kd(code: str, folder) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh Python without hf-kd imported (stdin closed: no terminal to ask questions on)."""
    program = f"import sys\nfolder = {str(folder)!r}\n{code}\nassert 'hf_kd' not in sys.modules\n"
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
    )


def test_the_readme_loads_a_checkpoints_tokenizer_without_hf_kd_and_without_a_message(tiny_dot_folder):
    # the README's recipe: the class tokenizer_config.json names reads the tokenizer files only
    recipe = "from transformers import BertTokenizer\nt = BertTokenizer.from_pretrained(folder)"
    recipe += "\nprint(t('a cat').input_ids)"
    result = _without_hf_kd(recipe, tiny_dot_folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[101, 1037, 4937, 102]"
    assert result.stderr == ""
    assert json.loads((tiny_dot_folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"
    # AutoTokenizer reads config.json first; refused the config's code, transformers reads it as a plain config and
    # logs the model-type message (the library's, about a file the tokenizer does not need): the README says so
    auto = "from transformers import AutoTokenizer\nt = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)"
    result = _without_hf_kd(auto + "\nprint(t('a cat').input_ids)", tiny_dot_folder)
    assert result.returncode == 0 and result.stdout.strip() == "[101, 1037, 4937, 102]", result.stderr
    assert MODEL_TYPE_MESSAGE in result.stderr
