"""The last encoder layer computed for the first position alone: scores equal to the whole model's, used only where
the head reads the first token."""

from __future__ import annotations

import pytest
import torch
from conftest import dl20_pairs
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertPreTrainedModel,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)
from transformers.modeling_outputs import SequenceClassifierOutput

import hf_kd
from hf_kd.models.first_token import can_run_last_layer_for_first_token, last_layer_for_first_token
from hf_kd.teachers import SequenceClassificationTeacher, load_teacher, score_pairs

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def pairs(ci_data):
    """Real DL20 pairs of different lengths, so that batches carry padding."""
    queries, passages = dl20_pairs(ci_data, max_rank=3)
    return queries[:12], passages[:12]


def spread(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights wide enough that every token matters to every position (BERT's 0.02 init nearly averages)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" not in name:
                parameter.normal_(0.0, 0.3)
    return model


class QueryRows:
    """Records how many positions the last layer computes queries for, batch by batch."""

    def __init__(self, layer: torch.nn.Module):
        self.rows: list[int] = []
        self.handle = layer.attention.self.query.register_forward_hook(
            lambda module, args, output: self.rows.append(output.shape[1])
        )


def last_layer(model) -> torch.nn.Module:
    return model.backbone.encoder.layer[-1]


@pytest.mark.parametrize("backbone", ["bert", "electra"])
@pytest.mark.parametrize("architecture", ["bert_cat", "prett"])
def test_ranker_in_evaluation_scores_from_the_first_position_equal_to_the_whole_layer(
    architecture, backbone, pairs, tokenizer
):
    backbone_config = (BertConfig if backbone == "bert" else ElectraConfig)(**SIZES, **NO_DROPOUT)
    model_class = hf_kd.model_class_for(architecture)
    extra = {"split_layer": 1} if architecture == "prett" else {"classifier_dropout": 0.0}
    model = spread(model_class(model_class.config_class(backbone_config=backbone_config, **extra)), 0)
    rows = QueryRows(last_layer(model))

    with torch.no_grad():  # training runs every position (there is no dropout here)
        whole = model.train()(**model.prepare_inputs(*pairs, tokenizer)).scores
    assert len(rows.rows) == 1 and rows.rows[0] > 100
    rows.rows.clear()
    first = model.eval().score(*pairs, tokenizer, batch_size=5)
    assert rows.rows == [1, 1, 1]

    assert whole.std() > 0.1  # the pairs' scores differ, so equality says something
    torch.testing.assert_close(first, whole, rtol=1e-5, atol=1e-5)


def test_mean_cosine_score_reads_every_token_so_the_whole_layer_runs(pairs, tokenizer):
    config = hf_kd.BertCatConfig(backbone_config=BertConfig(**SIZES), mean_cosine_score=True)
    model = spread(hf_kd.BertCatModel(config), 0).eval()
    rows = QueryRows(last_layer(model))
    model.score(*pairs, tokenizer, batch_size=12)
    assert rows.rows[0] > 1


def test_the_layer_is_put_back_after_the_block_also_on_an_error():
    model = BertModel(BertConfig(**SIZES))
    layer = model.encoder.layer[-1]
    with pytest.raises(RuntimeError, match="inside"), last_layer_for_first_token(model) as applies:
        assert applies and model.encoder.layer[-1] is not layer
        raise RuntimeError("inside")
    assert model.encoder.layer[-1] is layer
    assert can_run_last_layer_for_first_token(model)
    model.config._attn_implementation = "flash_attention_2"
    assert not can_run_last_layer_for_first_token(model)


class MeanPoolingClassifier(BertPreTrainedModel):
    """A cross-encoder whose head reads the mean of every token: the shortcut would change its scores."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.head = torch.nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
        logits = self.head((hidden.last_hidden_state * mask).sum(1) / mask.sum(1))
        return SequenceClassifierOutput(logits=logits)


@pytest.mark.parametrize("head", ["bert", "roberta", "electra", "cross_encoder", "mean_pooling"])
def test_teachers_use_the_first_position_only_where_their_scores_stay_equal(head, pairs, tokenizer, tmp_path):
    config = dict(vocab_size=tokenizer.vocab_size, type_vocab_size=2, num_labels=1, **SIZES)
    if head in ("bert", "cross_encoder"):
        model = spread(BertForSequenceClassification(BertConfig(**config)), 1)
    elif head == "roberta":
        model = spread(RobertaForSequenceClassification(RobertaConfig(pad_token_id=0, **config)), 1)
    elif head == "electra":
        model = spread(ElectraForSequenceClassification(ElectraConfig(**config)), 1)
    else:
        model = spread(MeanPoolingClassifier(BertConfig(**config)), 1)
    model.eval()
    features = tokenizer(*pairs, padding=True, truncation="longest_first", max_length=96, return_tensors="pt")
    with torch.inference_mode():
        whole = model(**features).logits.squeeze(-1)

    if head == "mean_pooling":
        teacher = SequenceClassificationTeacher(model, tokenizer, "mean-pooling", max_length=96)
    else:
        model.save_pretrained(tmp_path / "teacher")
        tokenizer.save_pretrained(tmp_path / "teacher")
        folder = tmp_path / "teacher"
        if head == "cross_encoder":
            from sentence_transformers import CrossEncoder

            CrossEncoder(str(folder), device="cpu").save(str(tmp_path / "cross_encoder"))
            folder = tmp_path / "cross_encoder"
        teacher = load_teacher(folder, device="cpu", max_length=96)
        model = teacher.model.model if head == "cross_encoder" else teacher.model
    rows = QueryRows(model.base_model.encoder.layer[-1])

    scores = score_pairs(teacher, *pairs, batch_size=5)
    exact = head != "mean_pooling"
    assert teacher.first_token_scoring.exact is exact
    # the first batch is checked both ways; later batches compute one position in the last layer where exact
    assert rows.rows[1] == 1 and rows.rows[0] > 1
    assert all((n == 1) == exact for n in rows.rows[2:]) and len(rows.rows) == 4
    assert whole.std() > 0.1
    torch.testing.assert_close(torch.from_numpy(scores), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", ["bert", "mean_pooling"])
def test_teachers_in_bfloat16_keep_the_first_position_shortcut_only_for_first_token_heads(head, pairs, tokenizer):
    config = BertConfig(vocab_size=tokenizer.vocab_size, type_vocab_size=2, num_labels=1, **SIZES)
    model_class = BertForSequenceClassification if head == "bert" else MeanPoolingClassifier
    model = spread(model_class(config), 1).eval()
    features = tokenizer(*pairs, padding=True, truncation="longest_first", max_length=96, return_tensors="pt")
    with torch.inference_mode():
        whole = model(**features).logits.squeeze(-1)

    teacher = SequenceClassificationTeacher(model.to(torch.bfloat16), tokenizer, head, max_length=96)
    scores = score_pairs(teacher, *pairs, batch_size=5)
    # bfloat16 rounds the whole model and the shortcut differently, yet a first-token head keeps the shortcut
    assert teacher.first_token_scoring.exact is (head == "bert")
    torch.testing.assert_close(torch.from_numpy(scores), whole, rtol=0.05, atol=0.05 * float(whole.std()))
