"""Ranking losses for training students from teacher scores.

Every loss takes the student's raw scores for one query and its `1 + N` passages, shape `(batch, 1 + N)` with
column 0 the positive, and (where it needs a teacher) teacher labels: raw teacher scores of shape `(batch, 1 + N)`
or, where the loss allows it, teacher margins `t_0 - t_j` of shape `(batch,)` (pairwise) or `(batch, N)`.
Pairwise training is the case `N = 1`. Losses are computed in float32 whatever the scores' precision.

`LOSSES` maps the names used in training configs to the classes; `get_loss(name, **kwargs)` builds one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CITATION",
    "KL_DISTILLATION_CITATION",
    "LOSSES",
    "RANKNET_CITATION",
    "ListwiseKLLoss",
    "MarginMSELoss",
    "PointwiseMSELoss",
    "RankNetLoss",
    "RankingLoss",
    "WeightedRankNetLoss",
    "get_loss",
]

CITATION = """@article{hofstaetter2020improving,
    title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
    author={Sebastian Hofst{\\"a}tter and Sophia Althammer and Michael Schr{\\"o}der and Mete Sertkan
        and Allan Hanbury},
    journal={arXiv preprint arXiv:2010.02666},
    year={2020}
}"""

RANKNET_CITATION = """@inproceedings{burges2005learning,
    title={Learning to Rank using Gradient Descent},
    author={Chris Burges and Tal Shaked and Erin Renshaw and Ari Lazier and Matt Deeds and Nicole Hamilton
        and Greg Hullender},
    booktitle={Proceedings of the 22nd International Conference on Machine Learning},
    pages={89--96},
    year={2005}
}"""


KL_DISTILLATION_CITATION = """@article{hinton2015distilling,
    title={Distilling the Knowledge in a Neural Network},
    author={Geoffrey Hinton and Oriol Vinyals and Jeff Dean},
    journal={arXiv preprint arXiv:1503.02531},
    year={2015}
}"""


class RankingLoss(nn.Module):
    """Base class: input validation and the flags the trainer checks before training starts.

    Class attributes:
        requires_teacher (`bool`): whether the loss needs teacher labels.
        supports_n_way (`bool`): whether the loss accepts more than one negative per query (`N > 1`).
        accepts_margins (`bool`): whether teacher margins (instead of raw teacher scores) are enough.
    """

    requires_teacher: bool = True
    supports_n_way: bool = True
    accepts_margins: bool = True

    @property
    def citation(self) -> str:
        """BibTeX entry of the paper that defines or compares this loss."""
        return CITATION

    def get_config_dict(self) -> dict[str, Any]:
        """The loss's hyper-parameters, as recorded in model cards."""
        return {}

    def _check_scores(self, scores: Tensor) -> Tensor:
        """Validate the student scores and return them in float32 (losses are computed in full precision)."""
        if scores.ndim != 2 or scores.shape[1] < 2:
            raise ValueError(
                f"{type(self).__name__}: scores have shape {tuple(scores.shape)}, expected (batch, 1+N) with N >= 1: "
                "one row per query, column 0 the positive passage, columns 1..N the negatives"
            )
        if scores.shape[1] > 2 and not self.supports_n_way:
            raise ValueError(
                f"{type(self).__name__}: scores have shape {tuple(scores.shape)} ({scores.shape[1] - 1} negatives "
                "per query) but this loss is pairwise only; use triples (query, positive, negative) or an n-way "
                "loss such as 'margin_mse' or 'listwise_kl'"
            )
        return scores.float()

    def _expected_labels(self) -> str:
        if self.accepts_margins:
            return "(batch,) margins, (batch, N) margins or (batch, 1+N) raw scores"
        return "(batch, 1+N) raw scores"

    def _check_labels(self, scores: Tensor, labels: Tensor | None) -> Tensor:
        """Validate teacher labels against `scores` and return them detached, in float32."""
        if labels is None:
            raise ValueError(
                f"{type(self).__name__} needs teacher labels: pass {self._expected_labels()} "
                "(for training without a teacher use 'ranknet')"
            )
        batch, num_passages = scores.shape
        allowed = [(batch, num_passages)]
        if self.accepts_margins:
            allowed += [(batch, num_passages - 1)] + ([(batch,)] if num_passages == 2 else [])
        if tuple(labels.shape) not in allowed:
            raise ValueError(
                f"{type(self).__name__}: labels have shape {tuple(labels.shape)}, expected "
                f"{self._expected_labels()} for scores of shape {tuple(scores.shape)} "
                f"(batch={batch}, N={num_passages - 1})"
            )
        return labels.detach().float()


def student_margins(scores: Tensor) -> Tensor:
    """`s_0 - s_j` for j in 1..N: (batch, 1+N) scores -> (batch, N) margins."""
    return scores[:, :1] - scores[:, 1:]


def teacher_margins(labels: Tensor, num_passages: int) -> Tensor:
    """Teacher margins `t_0 - t_j` of shape (batch, N) from (batch,) / (batch, N) margins or (batch, 1+N) scores."""
    if labels.ndim == 1:
        return labels.unsqueeze(1)
    if labels.shape[1] == num_passages:
        return student_margins(labels)
    return labels


def teacher_scores(labels: Tensor, num_passages: int) -> Tensor:
    """Teacher scores of shape (batch, 1+N); margins become `[0, -m_1, ..., -m_N]` (same differences)."""
    if labels.ndim == 2 and labels.shape[1] == num_passages:
        return labels
    margins = teacher_margins(labels, num_passages)
    return torch.cat([torch.zeros_like(margins[:, :1]), -margins], dim=1)


class MarginMSELoss(RankingLoss):
    """Margin-MSE: the student's score margins match the teacher's.

    `loss = mean_i mean_j ((s_i0 - s_ij) - (t_i0 - t_ij))^2` over queries i and negatives j = 1..N, on raw
    student scores and raw teacher logits (no normalisation, no temperature). With one negative this is the
    paper's `mean(((s+ - s-) - (t+ - t-))^2)`; with N negatives it is the mean over the N margins.

    Args:
        None. The loss has no hyper-parameters.

    Reference:
        Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
        Distillation", arXiv:2010.02666 (BibTeX: `hf_kd.losses.CITATION`).

    Shapes:
        +----------------------------+----------------------------------------------+
        | scores                     | labels                                       |
        +============================+==============================================+
        | (batch, 2) [s+, s-]        | (batch,) margins t+ - t-, or (batch, 2) raw  |
        +----------------------------+----------------------------------------------+
        | (batch, 1+N) [s+, s-_1..N] | (batch, N) margins, or (batch, 1+N) raw      |
        +----------------------------+----------------------------------------------+

    Example:
        >>> import torch
        >>> loss = MarginMSELoss()
        >>> scores = torch.tensor([[3.0, 1.0], [0.0, 1.0]])
        >>> float(loss(scores, torch.tensor([[10.0, 7.0], [5.0, 5.0]])))  # margins 2, -1 vs 3, 0
        1.0
        >>> float(loss(scores, torch.tensor([3.0, 0.0])))  # the same teacher, given as margins
        1.0
    """

    def forward(self, scores: Tensor, labels: Tensor | None = None) -> Tensor:
        scores = self._check_scores(scores)
        labels = self._check_labels(scores, labels)
        return F.mse_loss(student_margins(scores), teacher_margins(labels, scores.shape[1]))


class PointwiseMSELoss(RankingLoss):
    """Pointwise MSE: the student's raw scores match the teacher's raw scores.

    `loss = mean_i mean_j (s_ij - t_ij)^2` over queries i and passages j = 0..N. With one negative this is the
    paper's `(MSE(s+, t+) + MSE(s-, t-)) / 2`; with N negatives the mean runs over all 1+N passages. It needs raw
    teacher scores: margins do not fix the scores' offset.

    Args:
        None. The loss has no hyper-parameters.

    Reference:
        Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
        Distillation", arXiv:2010.02666, baseline loss (BibTeX: `hf_kd.losses.CITATION`).

    Shapes:
        +----------------------------+---------------------------+
        | scores                     | labels                    |
        +============================+===========================+
        | (batch, 2) [s+, s-]        | (batch, 2) raw [t+, t-]   |
        +----------------------------+---------------------------+
        | (batch, 1+N) [s+, s-_1..N] | (batch, 1+N) raw          |
        +----------------------------+---------------------------+

    Example:
        >>> import torch
        >>> loss = PointwiseMSELoss()
        >>> float(loss(torch.tensor([[3.0, 1.0]]), torch.tensor([[5.0, 1.0]])))  # ((3-5)^2 + (1-1)^2) / 2
        2.0
    """

    accepts_margins = False

    def forward(self, scores: Tensor, labels: Tensor | None = None) -> Tensor:
        scores = self._check_scores(scores)
        labels = self._check_labels(scores, labels)
        return F.mse_loss(scores, labels)


class WeightedRankNetLoss(RankingLoss):
    """Weighted RankNet: binary cross-entropy on the student margin, weighted by the teacher margin.

    `loss = mean_i w_i * BCEWithLogits(s_i+ - s_i-, 1)` with `BCEWithLogits(x, 1) = log(1 + exp(-x))` and the
    weight `w_i = max(t_i+ - t_i-, 0)` (`negative_margins="clamp"`, default) or `w_i = |t_i+ - t_i-|`
    (`negative_margins="flip"`, where pairs the teacher ranks the other way use target 0 instead of 1, i.e.
    `BCEWithLogits(s_i- - s_i+, 1)`).

    Negative teacher margins: the teacher prefers the labelled negative. With "clamp" such pairs get weight 0 and
    contribute nothing (the relevance label and the teacher disagree, so the pair is skipped); with "flip" the
    student is pushed towards the teacher's order. Zero margins always give weight 0.

    Args:
        negative_margins (`str`, *optional*, defaults to `"clamp"`):
            How pairs with a negative teacher margin are handled: `"clamp"` or `"flip"` (see above).

    Reference:
        Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
        Distillation", arXiv:2010.02666, baseline loss (BibTeX: `hf_kd.losses.CITATION`).

    Shapes:
        +---------------------+----------------------------------------------+
        | scores              | labels                                       |
        +=====================+==============================================+
        | (batch, 2) [s+, s-] | (batch,) margins t+ - t-, or (batch, 2) raw  |
        +---------------------+----------------------------------------------+

    Example:
        >>> import torch
        >>> loss = WeightedRankNetLoss()
        >>> scores = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
        >>> round(float(loss(scores, torch.tensor([2.0, -1.0]))), 4)  # (2 * log 2 + 0) / 2
        0.6931
    """

    supports_n_way = False

    def __init__(self, negative_margins: str = "clamp") -> None:
        super().__init__()
        if negative_margins not in ("clamp", "flip"):
            raise ValueError(f"negative_margins must be 'clamp' or 'flip', got {negative_margins!r}")
        self.negative_margins = negative_margins

    def get_config_dict(self) -> dict[str, Any]:
        return {"negative_margins": self.negative_margins}

    def forward(self, scores: Tensor, labels: Tensor | None = None) -> Tensor:
        scores = self._check_scores(scores)
        labels = self._check_labels(scores, labels)
        margin_student = student_margins(scores).squeeze(1)
        margin_teacher = teacher_margins(labels, scores.shape[1]).squeeze(1)
        if self.negative_margins == "clamp":
            targets = torch.ones_like(margin_student)
            weights = margin_teacher.clamp(min=0)
        else:
            targets = (margin_teacher >= 0).to(margin_student.dtype)
            weights = margin_teacher.abs()
        return F.binary_cross_entropy_with_logits(margin_student, targets, weight=weights)


class RankNetLoss(RankingLoss):
    """RankNet without a teacher: softmax cross-entropy with the positive as the correct class.

    `loss = mean_i -log(exp(s_i0) / sum_j exp(s_ij))` over passages j = 0..N. With one negative this is the
    pairwise softmax cross-entropy `log(1 + exp(s- - s+)) = BCEWithLogits(s+ - s-, 1)` the paper trains its
    BERT_CAT teachers and no-teacher baselines with; with N negatives it is the cross-entropy over 1+N passages.
    Teacher labels, if given, are ignored.

    Args:
        None. The loss has no hyper-parameters.

    Reference:
        Burges et al., "Learning to Rank using Gradient Descent", ICML 2005 (BibTeX:
        `hf_kd.losses.RANKNET_CITATION`); used as the no-teacher baseline by Hofstätter et al., arXiv:2010.02666.

    Shapes:
        +----------------------------+--------------------+
        | scores                     | labels             |
        +============================+====================+
        | (batch, 2) [s+, s-]        | none (ignored)     |
        +----------------------------+--------------------+
        | (batch, 1+N) [s+, s-_1..N] | none (ignored)     |
        +----------------------------+--------------------+

    Example:
        >>> import torch
        >>> loss = RankNetLoss()
        >>> round(float(loss(torch.tensor([[0.0, 0.0]]))), 4)  # log 2
        0.6931
    """

    requires_teacher = False

    @property
    def citation(self) -> str:
        return RANKNET_CITATION

    def forward(self, scores: Tensor, labels: Tensor | None = None) -> Tensor:
        scores = self._check_scores(scores)
        targets = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return F.cross_entropy(scores, targets)


class ListwiseKLLoss(RankingLoss):
    """Listwise KL distillation: the student's softmax over the 1+N passages matches the teacher's.

    `loss = mean_i sum_j p_ij (log p_ij - log q_ij)` with `p_i = softmax(t_i / T)` (teacher) and
    `q_i = softmax(s_i / T)` (student), i.e. `KL(softmax(t/T) || softmax(s/T))` averaged over queries (the n-way
    distillation loss of PyLate and Tevatron). Teacher margins work as well as raw scores because the softmax
    ignores a constant offset: margins m_j become scores `[0, -m_1, ..., -m_N]`.

    Args:
        temperature (`float`, *optional*, defaults to 1.0):
            Divides student and teacher scores before the softmax; higher values soften both distributions.

    Reference:
        Hinton et al., "Distilling the Knowledge in a Neural Network", arXiv:1503.02531 (BibTeX:
        `hf_kd.losses.KL_DISTILLATION_CITATION`); the same formula as PyLate's `Distillation` loss and
        Tevatron's listwise distillation.

    Shapes:
        +----------------------------+----------------------------------------------+
        | scores                     | labels                                       |
        +============================+==============================================+
        | (batch, 2) [s+, s-]        | (batch,) margins t+ - t-, or (batch, 2) raw  |
        +----------------------------+----------------------------------------------+
        | (batch, 1+N) [s+, s-_1..N] | (batch, N) margins, or (batch, 1+N) raw      |
        +----------------------------+----------------------------------------------+

    Example:
        >>> import torch
        >>> loss = ListwiseKLLoss(temperature=2.0)
        >>> float(loss(torch.tensor([[4.0, 2.0]]), torch.tensor([[9.0, 7.0]])))  # same margin: same softmax
        0.0
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @property
    def citation(self) -> str:
        return KL_DISTILLATION_CITATION

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def forward(self, scores: Tensor, labels: Tensor | None = None) -> Tensor:
        scores = self._check_scores(scores)
        labels = self._check_labels(scores, labels)
        teacher = teacher_scores(labels, scores.shape[1])
        log_q = F.log_softmax(scores / self.temperature, dim=1)
        log_p = F.log_softmax(teacher / self.temperature, dim=1)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


LOSSES: dict[str, type[RankingLoss]] = {
    "margin_mse": MarginMSELoss,
    "pointwise_mse": PointwiseMSELoss,
    "weighted_ranknet": WeightedRankNetLoss,
    "ranknet": RankNetLoss,
    "listwise_kl": ListwiseKLLoss,
}


def get_loss(name: str, **kwargs: Any) -> RankingLoss:
    """Build the loss registered under `name` in `LOSSES`.

    Args:
        name (`str`): one of `LOSSES` (e.g. `"margin_mse"`).
        **kwargs: the loss's hyper-parameters (e.g. `temperature=2.0` for `"listwise_kl"`).

    Raises:
        ValueError: for an unknown name or a hyper-parameter the loss does not take.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"loss {name!r} does not take the arguments {sorted(kwargs)}: {error}") from error
