"""The reference's tokenization: no BOS, EOS appended and trained, prompt masked, keep-start
truncation."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from amber_repro.data.tokenization import (
    IGNORE_INDEX,
    Limits,
    collate,
    tokenize_pair,
    tokenize_sft,
    truncate,
)
from amber_repro.errors import DataError
from amber_repro.models.tiny_llama import train_tokenizer
from amber_repro.training.pairs import (
    PAIR_TEXT,
    concatenated_logps,
    drop_or_refuse_eos,
    tokenize_pairs,
)

EOS = 99


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        "How do I pick a lock?",
        "I'm sorry, but I can't help with that.",
        "Sure! First get tools.",
        "请告诉我 ¿Me puedes ayudar? 🙏",
    ] * 20
    return train_tokenizer(texts, vocab_size=300)


def test_short_sequences_are_not_truncated():
    prompt, responses = truncate([1, 2, 3], [[4, 5, EOS], [6, EOS]], Limits(10, 5))
    assert prompt == [1, 2, 3] and responses == [[4, 5, EOS], [6, EOS]]


def test_long_prompt_keeps_its_start_first():
    # 8 prompt + 3 response = 11 > 10: keep the first 5 prompt tokens; 5 + 3 fits.
    prompt, responses = truncate(list(range(8)), [[20, 21, EOS], [22, EOS]], Limits(10, 5))
    assert prompt == [0, 1, 2, 3, 4] and responses == [[20, 21, EOS], [22, EOS]]


def test_long_response_is_cut_to_max_length_minus_max_prompt_length():
    # 8 + 9 > 10 -> prompt to 5; 5 + 9 > 10 -> responses to 10 - 5 = 5 tokens (EOS may be cut, as in
    # the reference).
    prompt, responses = truncate(
        list(range(8)), [[*list(range(20, 28)), EOS], [30, EOS]], Limits(10, 5)
    )
    assert prompt == [0, 1, 2, 3, 4]
    assert responses == [[20, 21, 22, 23, 24], [30, EOS]]


def test_the_longer_response_decides_for_both():
    prompt, _ = truncate(list(range(6)), [[1] * 5, [2]], Limits(10, 4))
    assert len(prompt) == 4  # 6 + 5 > 10 although 6 + 1 would fit


def test_limits_must_leave_room_for_a_response():
    with pytest.raises(ValueError, match="max_prompt_length"):
        Limits(256, 512)


def test_pair_labels_mask_the_prompt_and_train_response_and_eos(tokenizer):
    pair = tokenize_pair(tokenizer, "How do I pick a lock?", "I'm sorry.", "Sure!", Limits(128, 64))
    prompt_ids = tokenizer("How do I pick a lock?", add_special_tokens=False)["input_ids"]
    for key, text in (("chosen", "I'm sorry."), ("rejected", "Sure!")):
        seq = pair[key]
        response_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        assert seq["input_ids"] == prompt_ids + response_ids  # no BOS, no template
        assert seq["labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids
        assert seq["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.bos_token_id not in pair["chosen"]["input_ids"]


def test_sft_example_is_the_pair_of_its_target_with_itself(tokenizer):
    limits = Limits(12, 6)
    prompt, response = (
        "请告诉我 ¿Me puedes ayudar? 🙏 " * 3,
        "I'm sorry, but I can't help with that.",
    )
    assert (
        tokenize_sft(tokenizer, prompt, response, limits)
        == tokenize_pair(tokenizer, prompt, response, response, limits)["chosen"]
    )
    assert len(tokenize_sft(tokenizer, prompt, response, limits)["input_ids"]) <= 12


def test_text_containing_eos_is_refused(tokenizer):
    with pytest.raises(ValueError, match="contains the EOS token"):
        tokenize_pair(tokenizer, "hi </s>", "a", "b", Limits(64, 32))


def test_a_frame_of_pairs_tokenizes_as_each_pair_alone(tokenizer):
    """tokenize_pairs encodes each column in one batch call: the same ids as row by row, with
    truncation (long texts at small limits) and an empty prompt among them."""
    texts = ["How do I pick a lock?", "请告诉我 ¿Me puedes ayudar? 🙏", "", "Sure! " * 12]
    frame = pl.DataFrame(
        {
            "prompt": [texts[i % 4] for i in range(8)],
            "chosen": [texts[(i + 1) % 4] + "ok" for i in range(8)],
            "rejected": [texts[(i + 3) % 4] * 2 + "no" for i in range(8)],
        }
    )
    limits = Limits(24, 10)
    want = [tokenize_pair(tokenizer, *row, limits) for row in frame.iter_rows()]
    assert tokenize_pairs(tokenizer, frame, limits) == want
    assert any(len(p["chosen"]["input_ids"]) == 24 for p in want)  # truncation was exercised
    with pytest.raises(DataError, match="contains the EOS token: 'Sure</s>'"):
        tokenize_pairs(tokenizer, frame.with_columns(pl.lit("Sure</s>").alias("rejected")), limits)


def eos_pairs() -> pl.DataFrame:
    """source_row 7: EOS in the rejected response; 8: only look-alikes; 9: EOS in the prompt."""
    return pl.DataFrame(
        {
            "source_row": [5, 7, 8, 9],
            "prompt": ["Hi.", "Hi.", "Hi <s> </ s> <\\s>", "Hi</s>"],
            "chosen": ["No.", "No.", "No.", "No."],
            "rejected": ["Sure.", "Sure.</s>then more", "Sure.", "Sure."],
        }
    )


def test_an_eos_text_is_refused_naming_file_source_row_and_column(tokenizer, tmp_path):
    path = tmp_path / "pairs-train.parquet"
    with pytest.raises(DataError) as error:
        drop_or_refuse_eos(eos_pairs(), tokenizer, path, PAIR_TEXT, "error")
    assert str(error.value) == (
        f"{path}: source_row 7, column rejected: text contains the EOS token '</s>': "
        "'Sure.</s>then more' (2 row(s) in this file; set data.on_malformed: drop to drop and "
        "count them instead)"
    )


def test_drop_mode_drops_exactly_the_rows_the_tokenizer_would_refuse(tokenizer, tmp_path, capsys):
    kept, dropped = drop_or_refuse_eos(eos_pairs(), tokenizer, tmp_path / "p", PAIR_TEXT, "drop")
    assert dropped == 2 and kept.equals(eos_pairs().filter(pl.col("source_row").is_in([5, 8])))
    assert "dropped 2 row(s) whose text contains the EOS token '</s>'" in capsys.readouterr().out
    assert len(tokenize_pairs(tokenizer, kept, Limits(64, 32))) == 2  # encode accepts the rest
    with pytest.raises(DataError, match="contains the EOS token"):
        tokenize_pairs(tokenizer, eos_pairs(), Limits(64, 32))


def test_a_frame_without_eos_text_is_returned_as_it_is(tokenizer, tmp_path):
    clean = eos_pairs().filter(pl.col("source_row").is_in([5, 8]))
    for mode in ("error", "drop"):
        kept, dropped = drop_or_refuse_eos(clean, tokenizer, tmp_path / "p", PAIR_TEXT, mode)
        assert dropped == 0 and kept.equals(clean)


def test_collate_right_pads_and_masks_padding():
    batch = collate(
        [
            {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
            {"input_ids": [8], "labels": [8]},
        ],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


def test_concatenated_forward_equals_separate_forwards(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    ).eval()
    pairs = [
        tokenize_pair(
            tokenizer,
            "How do I pick a lock?",
            "I'm sorry, but I can't help with that.",
            "Sure!",
            Limits(64, 32),
        ),
        tokenize_pair(
            tokenizer, "¿Me puedes ayudar?", "No.", "Sure! First get tools.", Limits(64, 32)
        ),
    ]
    with torch.no_grad():
        chosen, rejected = concatenated_logps(
            model, pairs, tokenizer.pad_token_id, torch.device("cpu")
        )
        alone_c, _ = concatenated_logps(
            model, pairs[:1], tokenizer.pad_token_id, torch.device("cpu")
        )
    assert chosen.shape == rejected.shape == (2,)
    assert chosen[0].item() == pytest.approx(alone_c[0].item(), abs=1e-4)
