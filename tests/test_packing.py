"""Padding-free training: a micro-batch packed into one row gives the padded batch's loss and
LoRA gradients (fp32), no token attends across an example boundary, and packing is on only where
it is exact (SFT without DP-SGD)."""

from __future__ import annotations

import pytest
import torch

from fedloom.config import ConfigError, LoraSettings, ModelConfig, packing_enabled
from fedloom.data.schema import InstructionRecord
from fedloom.data.template import IGNORE_INDEX, collate_packed, tokenize_example
from fedloom.models import attach_lora, load_model
from fedloom.models.loader import load_tokenizer
from fedloom.train.objectives import SFTObjective

from .conftest import tiny_config

RECORDS = [
    InstructionRecord("Name a prime number.", "Seven is prime."),
    InstructionRecord(
        "Explain photosynthesis in two sentences.",
        "Plants turn light, water and carbon dioxide into sugar. Oxygen is released.",
    ),
    InstructionRecord("Say hi.", "Hi!"),
]


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    tok = load_tokenizer("tiny-llama")
    model = load_model(ModelConfig(name="tiny-llama", precision="fp32"), tok).model
    # a random B so the adapter is not the identity and its gradients are all non-zero
    model = attach_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    examples = [tokenize_example(tok, r, 128) for r in RECORDS]
    return model, tok, examples


def _grads(model, batch, objective):  # type: ignore[no-untyped-def]
    model.zero_grad(set_to_none=True)
    loss = objective.loss(model, batch, None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_packed_batch_has_the_padded_loss_and_gradients(setup) -> None:  # type: ignore[no-untyped-def]
    model, tok, examples = setup
    model.train()
    padded, packed = SFTObjective(), SFTObjective(packed=True)
    l1, g1 = _grads(model, padded.collate(examples, tok.pad_token_id), padded)
    batch = packed.collate(examples, tok.pad_token_id)
    assert batch["input_ids"].shape == (1, sum(len(e.input_ids) for e in examples))
    assert "attention_mask" not in batch  # nothing is padded
    l2, g2 = _grads(model, batch, packed)
    assert torch.allclose(l1, l2, atol=1e-6, rtol=1e-5)
    assert set(g1) == set(g2) and all(g1[n].abs().sum() > 0 for n in g1)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-6, rtol=1e-4), n


def test_no_attention_across_example_boundaries(setup) -> None:  # type: ignore[no-untyped-def]
    model, tok, examples = setup
    model.eval()
    other = tokenize_example(tok, InstructionRecord("Something else entirely?", "Yes."), 128)
    a, b = collate_packed(examples), collate_packed([examples[0], other, examples[2]])
    n0, n2 = len(examples[0].input_ids), len(examples[2].input_ids)
    with torch.no_grad():
        la = model(**{k: v for k, v in a.items() if k != "labels"}, use_cache=False).logits
        lb = model(**{k: v for k, v in b.items() if k != "labels"}, use_cache=False).logits
    # the first and the last example's logits do not change when the middle one does
    assert torch.allclose(la[0, :n0], lb[0, :n0], atol=1e-5)
    assert torch.allclose(la[0, -n2:], lb[0, -n2:], atol=1e-5)
    # and each equals the example run alone
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([examples[2].input_ids])).logits
    assert torch.allclose(la[0, -n2:], alone[0], atol=1e-5)


def test_packed_labels_and_positions() -> None:
    from fedloom.data.template import TokenizedExample

    b = collate_packed(
        [TokenizedExample([5, 6, 7], [-100, 6, 7], False), TokenizedExample([8, 9], [8, 9], False)]
    )
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # an example's first token is never predicted from the one before it
    assert b["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]


def test_packing_is_on_only_where_exact(local_data) -> None:  # type: ignore[no-untyped-def]
    assert packing_enabled(tiny_config(local_data))
    assert not packing_enabled(tiny_config(local_data, **{"train.packing": "off"}))
    dp = {"privacy": {"client_dp": {"noise_multiplier": 1.0}}}
    assert not packing_enabled(tiny_config(local_data, **dp))
    with pytest.raises(ConfigError, match="packing: on"):
        tiny_config(local_data, **dp, **{"train.packing": "on"})
    # with checkpointing too: the packed attention is on around the backward that recomputes
    assert packing_enabled(tiny_config(local_data, **{"model.gradient_checkpointing": True}))
    with pytest.raises(ConfigError, match="use auto, on or off"):
        tiny_config(local_data, **{"train.packing": "yes"})
    # DP-SGD's per-example losses always read one padded row per example
    from fedloom.data.template import TokenizedExample

    ex = [TokenizedExample([5, 6, 7], [-100, 6, 7], False), TokenizedExample([8], [8], False)]
    assert SFTObjective(packed=True).collate_rows(ex, 0)["input_ids"].shape == (2, 3)


def test_packed_attention_runs_each_example_alone(setup) -> None:  # type: ignore[no-untyped-def]
    from fedloom.train.packing import packed_attention, segments

    model, tok, examples = setup
    model.eval()
    batch = collate_packed(examples)
    assert segments(batch["position_ids"]) == [
        (0, len(examples[0].input_ids)),
        (len(examples[0].input_ids), len(examples[0].input_ids) + len(examples[1].input_ids)),
        (batch["input_ids"].shape[1] - len(examples[2].input_ids), batch["input_ids"].shape[1]),
    ]
    impl = model.config._attn_implementation
    with torch.no_grad(), packed_attention(model):
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    assert model.config._attn_implementation == impl  # restored
    start = 0
    for e in examples:
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([e.input_ids])).logits
        n = len(e.input_ids)
        assert torch.allclose(packed[0, start : start + n], alone[0], atol=1e-5)
        start += n
    with pytest.raises(ValueError, match="start with position 0"):
        segments(torch.tensor([[1, 2, 0]]))


def test_predicting_positions_by_hand() -> None:
    from fedloom.train.objectives import predicting_positions

    i = IGNORE_INDEX
    labels = torch.tensor([[i, i, 5, 6, i], [i, 7, i, i, i]])
    # position t is kept where token t+1 is a response token; the last position never is
    assert predicting_positions(labels).tolist() == [
        [False, True, True, False, False],
        [True, False, False, False, False],
    ]
    with pytest.raises(ValueError, match="labels must be"):
        predicting_positions(labels[0])


@pytest.mark.parametrize("packed", [False, True])
def test_response_only_logits_give_the_full_logits_loss_and_gradients(setup, packed) -> None:  # type: ignore[no-untyped-def]
    """The objective's loss (LM head on the response-predicting positions only) equals
    transformers' own loss over full logits, with the same LoRA gradients (fp32)."""
    from fedloom.train.packing import packed_attention

    model, tok, examples = setup
    model.train()
    objective = SFTObjective(packed=packed)
    batch = objective.collate(examples, tok.pad_token_id)
    l1, g1 = _grads(model, batch, objective)

    class Full:  # transformers' loss over every position's logits
        def loss(self, model, batch, dtype):  # type: ignore[no-untyped-def]
            with packed_attention(model) if packed else torch.enable_grad():
                return model(**batch, use_cache=False).loss

    l2, g2 = _grads(model, batch, Full())
    assert torch.allclose(l1, l2, atol=1e-6, rtol=1e-5)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-6, rtol=1e-4), n


def test_heldout_scoring_packed_equals_padded_full_logits(setup) -> None:  # type: ignore[no-untyped-def]
    """Held-out loss is scored packed with response-only logits; each example's summed NLL and
    token count equal the padded, logits-everywhere computation by hand."""
    from fedloom.data.template import collate
    from fedloom.eval.heldout import example_losses, padded_nll, response_nll

    model, tok, examples = setup
    pad = int(tok.pad_token_id)
    scored = response_nll(model, examples, pad, torch.device("cpu"), None, batch_size=2)
    by_hand = []
    for e in examples:  # one example alone, no padding, full logits
        b = collate([e], pad)
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"]).logits[0, :-1]
        labels = b["labels"][0, 1:]
        m = labels != IGNORE_INDEX
        nll = torch.nn.functional.cross_entropy(logits[m], labels[m], reduction="sum")
        by_hand.append((float(nll), int(m.sum())))
    assert (
        [n for _, n in scored]
        == [n for _, n in by_hand]
        == [sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) for e in examples]
    )
    for (s, _), (h, _) in zip(scored, by_hand, strict=True):
        assert s == pytest.approx(h, rel=1e-5)
    padded = padded_nll(model, examples, pad, torch.device("cpu"), None)
    assert [n for _, n in padded] == [n for _, n in scored]
    means = example_losses(model, examples, pad, torch.device("cpu"), None, batch_size=3)
    assert means == pytest.approx([s / n for s, n in by_hand], rel=1e-5)
