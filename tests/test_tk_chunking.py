"""TK's kernel pooling a few kernels at a time: the same features and scores as all kernels at once."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, BertConfig

from hf_kd import EncodedBatch, TKConfig, TKModel
from hf_kd.models.modeling_tk import match_matrix
from hf_kd.models.ranking_functions import kernel_pooling

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
MUS = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9])


def random_masks(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(n, length) masks of 1..length real tokens, then padding."""
    lengths = torch.randint(1, length + 1, (n, 1), generator=generator)
    return (torch.arange(length)[None] < lengths).long()


def random_batch(n: int, length: int, dim: int, generator: torch.Generator) -> EncodedBatch:
    mask = random_masks(n, length, generator)
    vectors = torch.nn.functional.normalize(torch.randn(n, length, dim, generator=generator), dim=-1)
    return EncodedBatch(vectors * mask[..., None], mask)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 11, 20])
def test_chunked_kernel_pooling_equals_all_kernels_at_once(chunk_size):
    generator = torch.Generator().manual_seed(chunk_size)
    match = torch.rand(7, 5, 13, generator=generator) * 2 - 1
    query_mask, passage_mask = random_masks(7, 5, generator), random_masks(7, 13, generator)
    sigmas = torch.full_like(MUS, 0.1)
    expected = kernel_pooling(match, query_mask, passage_mask, MUS, sigmas, log_scale=0.01)
    got = kernel_pooling(match, query_mask, passage_mask, MUS, sigmas, log_scale=0.01, chunk_size=chunk_size)
    assert got.shape == (7, len(MUS))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def reference_kernel_pooling(match, query_mask, passage_mask, mus, sigmas, log_scale):
    """The formula of the docstring, written out with loops over pairs, kernels and query tokens."""
    features = torch.zeros(match.shape[0], len(mus), dtype=torch.float64)
    for n in range(match.shape[0]):
        real = match[n][:, passage_mask[n].bool()].double()
        for k, (mu, sigma) in enumerate(zip(mus.tolist(), sigmas.tolist())):
            for i in range(match.shape[1]):
                if query_mask[n, i]:
                    kernel_sum = torch.exp(-((real[i] - mu) ** 2) / (2 * sigma**2)).sum()
                    features[n, k] += torch.log(torch.clamp(kernel_sum, min=1e-10)) * log_scale
    return features


@pytest.mark.parametrize("grad", [False, True])
def test_kernel_pooling_equals_the_formula_with_and_without_gradients(grad):
    generator = torch.Generator().manual_seed(3)
    match = (torch.rand(4, 5, 9, generator=generator) * 2 - 1).requires_grad_(grad)
    query_mask, passage_mask = random_masks(4, 5, generator), random_masks(4, 9, generator)
    mus = torch.cat([MUS, torch.tensor([0.2])])
    sigmas = torch.cat([torch.full_like(MUS, 0.1), torch.tensor([0.5])])
    sigmas[0] = 1e-3  # TK's exact-match kernel
    expected = reference_kernel_pooling(match.detach(), query_mask, passage_mask, mus, sigmas, 0.01)
    with torch.set_grad_enabled(grad):
        got = kernel_pooling(match, query_mask, passage_mask, mus, sigmas, log_scale=0.01, chunk_size=2)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)
    if grad:  # padded passage tokens get no gradient; real ones get the formula's
        got.sum().backward()
        assert match.grad[~passage_mask.bool()[:, None, :].expand_as(match)].abs().max() == 0
        reference = match.detach().double().requires_grad_(True)
        dense = torch.where(passage_mask.bool()[:, None, :], reference, torch.full_like(reference, 1e4))
        kernels = torch.exp(
            -((dense[None] - mus.double()[:, None, None, None]) ** 2) / (2 * sigmas.double()[:, None, None, None] ** 2)
        )
        pooled = (torch.log(kernels.sum(-1).clamp(min=1e-10)) * 0.01 * query_mask[None]).sum()
        pooled.backward()
        torch.testing.assert_close(match.grad.double(), reference.grad, atol=1e-6, rtol=1e-4)


def test_kernel_pooling_in_half_precision_ignores_padding():
    generator = torch.Generator().manual_seed(4)
    match = torch.rand(3, 4, 6, generator=generator) * 2 - 1
    query_mask, passage_mask = random_masks(3, 4, generator), random_masks(3, 6, generator)
    sigmas = torch.full_like(MUS, 0.1)
    expected = reference_kernel_pooling(match, query_mask, passage_mask, MUS, sigmas, 1.0)
    got = kernel_pooling(match.bfloat16(), query_mask, passage_mask, MUS.bfloat16(), sigmas.bfloat16())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, atol=0.5, rtol=0.05)


def test_one_query_match_matrix_equals_aligned_pairs():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 4, 8, generator=generator)
    passages = torch.randn(6, 9, 8, generator=generator)
    expected = torch.einsum("nqd,npd->nqp", query.repeat(6, 1, 1), passages)
    torch.testing.assert_close(match_matrix(query.expand(6, -1, -1), passages), expected, atol=1e-6, rtol=1e-6)


def test_tk_scores_do_not_depend_on_the_chunk_size(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = TKModel(TKConfig(backbone_config=BertConfig(**TINY), kernel_chunk_size=2)).eval()
    generator = torch.Generator().manual_seed(1)
    queries, passages = random_batch(1, 6, 32, generator), random_batch(40, 30, 32, generator)
    with torch.no_grad():
        unchunked = model.dense(model.kernel_features(queries.expand(40), passages, chunk_size=0)).squeeze(-1)
        aligned = model.dense(model.kernel_features(queries.repeat_interleave(40), passages, chunk_size=0)).squeeze(-1)
    broadcast = model.score_encoded(queries, passages)
    torch.testing.assert_close(broadcast, unchunked, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(broadcast, aligned, atol=1e-6, rtol=1e-6)

    model.save_pretrained(tmp_path / "tk", tokenizer=tokenizer)
    loaded = AutoModel.from_pretrained(tmp_path / "tk").eval()
    assert loaded.config.kernel_chunk_size == 2
    torch.testing.assert_close(loaded.score_encoded(queries, passages), broadcast, atol=1e-6, rtol=1e-6)
    # a checkpoint saved before the option existed scores with the default, one kernel at a time
    config = json.loads((tmp_path / "tk" / "config.json").read_text())
    del config["kernel_chunk_size"]
    (tmp_path / "tk" / "config.json").write_text(json.dumps(config))
    older = AutoModel.from_pretrained(tmp_path / "tk").eval()
    assert older.config.kernel_chunk_size == 1
    torch.testing.assert_close(older.score_encoded(queries, passages), broadcast, atol=1e-6, rtol=1e-6)


def test_kernel_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="kernel_chunk_size"):
        TKConfig(backbone_config=BertConfig(**TINY), kernel_chunk_size=0)


def test_compiled_kernel_pooling_scores_equal_eager_ones_and_training_stays_eager(tokenizer):
    torch.manual_seed(0)
    eager = TKModel(TKConfig(backbone_config=BertConfig(**TINY))).eval()
    compiled = TKModel(TKConfig(backbone_config=BertConfig(**TINY), compile_kernel_pooling=True)).eval()
    compiled.load_state_dict(eager.state_dict())
    generator = torch.Generator().manual_seed(5)
    queries = random_batch(1, 6, 32, generator)
    for length in (30, 17):  # two passage widths: one compiled graph with dynamic shapes
        passages = random_batch(25, length, 32, generator)
        torch.testing.assert_close(
            compiled.score_encoded(queries, passages), eager.score_encoded(queries, passages), atol=1e-5, rtol=1e-5
        )
    from hf_kd.models import ranking_functions

    assert not ranking_functions._compilation_failed  # compiled indeed, not the eager fallback
    # with gradients the model pools eagerly, so training is unchanged
    passages = random_batch(4, 9, 32, generator)
    features = compiled.kernel_features(queries.repeat_interleave(4), passages)
    torch.testing.assert_close(features, eager.kernel_features(queries.repeat_interleave(4), passages))


def test_compiled_kernel_pooling_falls_back_to_eager_with_a_warning(monkeypatch):
    from hf_kd.models import ranking_functions

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(ranking_functions, "_compiled_kernel_pooling", broken)
    monkeypatch.setattr(ranking_functions, "_compilation_failed", False)
    generator = torch.Generator().manual_seed(6)
    match = torch.rand(3, 4, 6, generator=generator) * 2 - 1
    query_mask, passage_mask = random_masks(3, 4, generator), random_masks(3, 6, generator)
    sigmas = torch.full_like(MUS, 0.1)
    with pytest.warns(UserWarning, match="compiled kernel pooling failed .RuntimeError: no C.. compiler.; scoring"):
        got = ranking_functions.compiled_kernel_pooling(match, query_mask, passage_mask, MUS, sigmas, 0.01)
    torch.testing.assert_close(got, kernel_pooling(match, query_mask, passage_mask, MUS, sigmas, 0.01))
    assert ranking_functions._compilation_failed  # later calls go straight to eager pooling
