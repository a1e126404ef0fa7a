"""Each loss by hand on small tensors; Margin-MSE against sentence-transformers' MarginMSELoss."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MarginMSELoss as STMarginMSELoss

from hf_kd import losses
from hf_kd.losses import (
    LOSSES,
    ListwiseKLLoss,
    MarginMSELoss,
    PointwiseMSELoss,
    RankNetLoss,
    WeightedRankNetLoss,
    get_loss,
)

# Two queries, one positive and two negatives each.
SCORES = torch.tensor([[2.0, 1.0, -1.0], [0.5, 1.5, 0.0]])
TEACHER = torch.tensor([[9.0, 6.0, 4.0], [3.0, 2.0, 3.5]])


def test_docstring_examples_run():
    result = doctest.testmod(losses)
    assert result.attempted >= 6
    assert result.failed == 0


def test_margin_mse_pairwise_by_hand():
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    teacher = torch.tensor([[5.0, 2.0], [1.0, 1.5]])
    # student margins 1, -3; teacher margins 3, -0.5 -> ((1-3)^2 + (-3+0.5)^2) / 2
    expected = (4.0 + 6.25) / 2
    assert MarginMSELoss()(scores, teacher).item() == pytest.approx(expected)
    assert MarginMSELoss()(scores, torch.tensor([3.0, -0.5])).item() == pytest.approx(expected)
    assert MarginMSELoss()(scores, torch.tensor([[3.0], [-0.5]])).item() == pytest.approx(expected)


def test_margin_mse_n_way_by_hand():
    # student margins [1, 3], [-1, 0.5]; teacher margins [3, 5], [1, -0.5]
    expected = ((1 - 3) ** 2 + (3 - 5) ** 2 + (-1 - 1) ** 2 + (0.5 + 0.5) ** 2) / 4
    assert MarginMSELoss()(SCORES, TEACHER).item() == pytest.approx(expected)
    margins = torch.tensor([[3.0, 5.0], [1.0, -0.5]])
    assert MarginMSELoss()(SCORES, margins).item() == pytest.approx(expected)


def _sentence_transformers_margin_mse(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Run sentence-transformers' MarginMSELoss on fixed scores.

    Its score computation is `pairwise_dot_score(query_embedding, passage_embedding)`; with one-dimensional
    embeddings, query = 1 and passage = the score, the dot product is exactly the given score.
    """
    st_loss = STMarginMSELoss(model=None)
    query = torch.ones(scores.shape[0], 1)
    passages = [scores[:, j : j + 1] for j in range(scores.shape[1])]
    return st_loss.compute_loss_from_embeddings([query, *passages], labels)


@pytest.mark.parametrize("num_passages", [2, 4])
def test_margin_mse_equals_sentence_transformers(num_passages):
    generator = torch.Generator().manual_seed(num_passages)
    scores = torch.randn(8, num_passages, generator=generator) * 3
    teacher = torch.randn(8, num_passages, generator=generator) * 5
    ours = MarginMSELoss()(scores, teacher)
    theirs = _sentence_transformers_margin_mse(scores, teacher)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    margins = teacher[:, :1] - teacher[:, 1:]
    if num_passages == 2:
        margins = margins.squeeze(1)
    assert MarginMSELoss()(scores, margins).item() == pytest.approx(
        _sentence_transformers_margin_mse(scores, margins).item(), rel=1e-6
    )


def test_pointwise_mse_by_hand():
    scores = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    teacher = torch.tensor([[5.0, 1.0], [1.0, -1.0]])
    mse_pos = ((3 - 5) ** 2 + (0 - 1) ** 2) / 2
    mse_neg = ((1 - 1) ** 2 + (2 + 1) ** 2) / 2
    assert PointwiseMSELoss()(scores, teacher).item() == pytest.approx((mse_pos + mse_neg) / 2)
    expected_n_way = ((SCORES - TEACHER) ** 2).sum().item() / 6
    assert PointwiseMSELoss()(SCORES, TEACHER).item() == pytest.approx(expected_n_way)


def test_pointwise_mse_rejects_margins():
    with pytest.raises(ValueError, match=r"labels have shape \(2,\), expected \(batch, 1\+N\) raw scores"):
        PointwiseMSELoss()(torch.zeros(2, 2), torch.zeros(2))


def _bce_positive(x: float) -> float:
    return math.log1p(math.exp(-x))


def test_weighted_ranknet_by_hand():
    scores = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 3.0]])
    teacher_margins = torch.tensor([2.0, 0.5, -1.5])
    clamp = (2.0 * _bce_positive(1.0) + 0.5 * _bce_positive(-1.0) + 0.0) / 3
    assert WeightedRankNetLoss()(scores, teacher_margins).item() == pytest.approx(clamp)
    # flip: the third pair is scored as BCE(s- - s+, 1) with weight 1.5
    flip = (2.0 * _bce_positive(1.0) + 0.5 * _bce_positive(-1.0) + 1.5 * _bce_positive(2.0)) / 3
    loss = WeightedRankNetLoss(negative_margins="flip")
    assert loss(scores, teacher_margins).item() == pytest.approx(flip)
    raw = torch.stack([teacher_margins + 4.0, torch.full((3,), 4.0)], dim=1)
    assert loss(scores, raw).item() == pytest.approx(flip)


def test_weighted_ranknet_is_pairwise_only():
    with pytest.raises(ValueError, match="pairwise only"):
        WeightedRankNetLoss()(SCORES, TEACHER)


def test_ranknet_by_hand():
    pairwise = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    expected = (_bce_positive(1.0) + _bce_positive(-1.0)) / 2
    assert RankNetLoss()(pairwise).item() == pytest.approx(expected)
    assert RankNetLoss()(pairwise, torch.tensor([100.0, -100.0])).item() == pytest.approx(expected)
    n_way = [-(row[0] - math.log(sum(math.exp(v) for v in row))) for row in SCORES.tolist()]
    assert RankNetLoss()(SCORES).item() == pytest.approx(sum(n_way) / 2)


def test_listwise_kl_by_hand():
    temperature = 2.0
    expected = 0.0
    for student, teacher in zip(SCORES.tolist(), TEACHER.tolist()):
        q = [math.exp(v / temperature) for v in student]
        p = [math.exp(v / temperature) for v in teacher]
        q = [v / sum(q) for v in q]
        p = [v / sum(p) for v in p]
        expected += sum(pj * math.log(pj / qj) for pj, qj in zip(p, q))
    loss = ListwiseKLLoss(temperature=temperature)
    assert loss(SCORES, TEACHER).item() == pytest.approx(expected / 2, rel=1e-5)
    margins = TEACHER[:, :1] - TEACHER[:, 1:]
    assert loss(SCORES, margins).item() == pytest.approx(expected / 2, rel=1e-5)
    assert loss.get_config_dict() == {"temperature": 2.0}


def test_teacher_labels_get_no_gradient():
    scores = SCORES.clone().requires_grad_(True)
    teacher = TEACHER.clone().requires_grad_(True)
    for name in ("margin_mse", "pointwise_mse", "listwise_kl"):
        get_loss(name)(scores, teacher).backward()
    assert teacher.grad is None
    assert scores.grad is not None and scores.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            torch.zeros(2, 5),
            (
                r"labels have shape \(2, 5\), expected \(batch,\) margins, \(batch, N\) margins or "
                r"\(batch, 1\+N\) raw scores for scores of shape \(2, 3\)"
            ),
        ),
        (torch.zeros(3, 3), r"labels have shape \(3, 3\)"),
        (torch.zeros(2), r"labels have shape \(2,\)"),  # (batch,) margins only when N == 1
        (None, "needs teacher labels"),
    ],
)
def test_bad_labels_say_what_is_expected(labels, message):
    with pytest.raises(ValueError, match=message):
        MarginMSELoss()(SCORES, labels)


def test_bad_scores_say_what_is_expected():
    with pytest.raises(ValueError, match=r"scores have shape \(4,\), expected \(batch, 1\+N\)"):
        MarginMSELoss()(torch.zeros(4), torch.zeros(4))


def test_registry_and_flags():
    assert set(LOSSES) == {"margin_mse", "pointwise_mse", "weighted_ranknet", "ranknet", "listwise_kl"}
    assert isinstance(get_loss("margin_mse"), MarginMSELoss)
    assert get_loss("listwise_kl", temperature=3.0).temperature == 3.0
    assert [name for name, cls in LOSSES.items() if not cls.requires_teacher] == ["ranknet"]
    assert [name for name, cls in LOSSES.items() if not cls.supports_n_way] == ["weighted_ranknet"]
    assert [name for name, cls in LOSSES.items() if not cls.accepts_margins] == ["pointwise_mse"]
    assert "2010.02666" in get_loss("margin_mse").citation
    assert get_loss("weighted_ranknet", negative_margins="flip").get_config_dict() == {"negative_margins": "flip"}


def test_get_loss_errors():
    with pytest.raises(ValueError, match="unknown loss 'margin-mse'; choose one of listwise_kl, margin_mse"):
        get_loss("margin-mse")
    with pytest.raises(ValueError, match="does not take the arguments"):
        get_loss("margin_mse", temperature=2.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        get_loss("listwise_kl", temperature=0.0)


def test_losses_compute_in_float32_for_low_precision_scores():
    teacher = TEACHER + 0.0123  # not representable in bfloat16: the labels must stay float32
    for name, loss_class in LOSSES.items():
        scores = SCORES if loss_class.supports_n_way else SCORES[:, :2]
        labels = teacher if loss_class.supports_n_way else teacher[:, :2]
        low = get_loss(name)(scores.to(torch.bfloat16), labels)
        full = get_loss(name)(scores.to(torch.bfloat16).float(), labels)
        assert low.dtype == torch.float32, name
        assert low.item() == pytest.approx(full.item(), rel=1e-6), name
