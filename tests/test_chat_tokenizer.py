"""The LLaMA-style SentencePiece tokenizer and the embedded tiny Amber (models/tiny_amber.py)."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from chat_fixtures import corpus, train_tokenizer
from sentencepiece import sentencepiece_model_pb2

from amber_repro.__main__ import main as cli
from amber_repro.data.chat_synthetic import synthesize
from amber_repro.errors import AmberError
from amber_repro.models.tiny_amber import load_tokenizer, train_sentencepiece_model
from amber_repro.models.tiny_llama import train_tokenizer as train_byte_level_tokenizer

# Unseen characters (byte fallback), digits (split one by one), runs of spaces, a tab, a newline.
PROBES = ["日本語 ✓ 2024-12-31", "two  spaces\tand a tab\nline   end ", "café 3.14 naïve"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_the_model_has_llamas_settings(folder):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    assert trainer.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert (trainer.byte_fallback, trainer.split_digits, trainer.allow_whitespace_only_pieces) == (
        True,
        True,
        True,
    )
    assert (trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id) == (0, 1, 2, -1)
    assert normalizer.name == "identity"
    assert normalizer.add_dummy_prefix and not normalizer.remove_extra_whitespaces
    assert trainer.vocab_size == len(proto.pieces) == 400


def test_training_is_deterministic():
    assert train_sentencepiece_model(corpus(), 400) == train_sentencepiece_model(corpus(), 400)


def test_hugging_face_folder_tokenizes_as_sentencepiece(folder):
    processor = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokenizer = load_tokenizer(folder)
    assert type(tokenizer).__name__ == "LlamaTokenizer"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<s>",
        "</s>",
        "<unk>",
    )
    assert tokenizer.pad_token_id == tokenizer.unk_token_id == 0
    for text in PROBES + corpus()[:50]:
        assert tokenizer(text).input_ids == [1, *processor.encode(text)], text
        assert tokenizer.decode(processor.encode(text)) == text


def test_leading_whitespace_is_where_transformers_and_sentencepiece_differ(folder):
    """transformers 5 has no SentencePiece-backed LLaMA tokenizer; its Metaspace pre-tokenizer adds
    no dummy prefix to text that already starts with a space, SentencePiece (and so FastChat's
    slow tokenizer) does. Conversations never start with a space (the system prompt comes first);
    a message that does counts one token fewer in the split rule (docs/amberchat.md)."""
    processor = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokenizer = load_tokenizer(folder)
    ours = tokenizer(" fox", add_special_tokens=False).input_ids
    assert processor.encode(" fox") == [processor.piece_to_id("▁"), *ours]


@pytest.mark.parametrize("legacy", [True, False])
def test_legacy_mode_survives_save_pretrained(folder, tmp_path, legacy):
    tokenizer = load_tokenizer(folder, legacy=legacy)
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["legacy"] is legacy
    reloaded = load_tokenizer(tmp_path)
    assert reloaded.legacy is legacy
    text = "Hi.</s>USER: Why?"
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    # The mode is what changes the tokens right after "</s>": a dummy-prefix space or none.
    after_eos = reloaded.convert_ids_to_tokens(reloaded(text).input_ids)
    after_eos = after_eos[after_eos.index("</s>") + 1]
    assert after_eos.startswith("▁") is legacy


def test_a_folder_without_legacy_defaults_to_fastchats_assumption(folder, tmp_path):
    load_tokenizer(folder, legacy=False).save_pretrained(tmp_path)
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    del config["legacy"]
    config_file.write_text(json.dumps(config))
    assert load_tokenizer(tmp_path).legacy is True


def test_a_tokenizer_without_a_legacy_mode_is_refused(tmp_path):
    train_byte_level_tokenizer(corpus()[:200], 300).save_pretrained(tmp_path)
    with pytest.raises(AmberError, match="not a LLaMA SentencePiece tokenizer"):
        load_tokenizer(tmp_path)


def test_a_vocabulary_too_large_for_the_text_names_the_setting():
    with pytest.raises(AmberError, match=r"amberchat\.amber\.tokenizer\.vocab_size"):
        train_sentencepiece_model(["a b c"] * 10, 5000)


def test_chat_base_builds_the_tiny_amber(tmp_path):
    from transformers import AutoModelForCausalLM

    raw = tmp_path / "raw"
    synthesize(raw, seed=0, conversations=120)  # the embedded default's data
    out = tmp_path / "amber"
    texts = [str(raw / "wizardlm.json"), str(raw / "sharegpt.json")]
    flags = ["--no-legacy", "--hidden-size", "16", "--intermediate-size", "32", "--num-layers", "1"]
    assert cli(["chat-base", "--texts", *texts, "--out-dir", str(out), *flags]) == 0
    assert (out / "tokenizer.model").is_file()
    tokenizer = load_tokenizer(out)
    assert tokenizer.legacy is False
    assert len(tokenizer) == 1024
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 1024 and model.config.hidden_size == 16
    assert model.config.pad_token_id == tokenizer.unk_token_id
    record = json.loads((out / "amber_repro.json").read_text())
    assert record["stage"] == "chat-base" and record["settings"]["legacy"] is False
    assert set(record["inputs"]) == set(texts)
