"""The AmberChat data: FastChat's split rule, both source schemas, the seeded mix, the manifest."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber_repro.__main__ import main as cli
from amber_repro.config.chat_sections import ChatDataSettings
from amber_repro.data.chat_data import build_conversations
from amber_repro.data.chat_download import check_sha256
from amber_repro.data.chat_sources import raw_texts, read_source
from amber_repro.data.chat_split import (
    BAD_ROLES,
    DANGLING,
    EMPTY_PIECE,
    LOST_TAIL,
    NOT_HUMAN_FIRST,
    TOO_SHORT,
    piece_bounds,
    split_conversation,
)
from amber_repro.data.chat_synthetic import KINDS, generate_source, synthesize
from amber_repro.data.chat_template import message_token_length
from amber_repro.errors import DataError


class WordTokenizer:
    """A stand-in tokenizer: BOS plus one token per word, as `tokenizer(text).input_ids`."""

    def __call__(self, text):
        return SimpleNamespace(input_ids=[1] + [2] * len(text.split()))


def words(text: str) -> int:
    return message_token_length(text, WordTokenizer())


def conversation(*pairs, roles=None):
    """Messages whose texts have the given word counts; roles alternate human/gpt unless given."""
    counts = [n for pair in pairs for n in pair] if pairs and isinstance(pairs[0], tuple) else pairs
    roles = roles or ["human", "gpt"] * len(counts)
    return [{"from": r, "value": " ".join(["w"] * n)} for r, n in zip(roles, counts, strict=False)]


# --- the split rule -------------------------------------------------------------------------------


def test_a_message_counts_its_tokens_with_bos_plus_six():
    assert words("a b c") == 1 + 3 + 6


@pytest.mark.parametrize(
    ("lengths", "max_length", "bounds"),
    [
        ([10, 10, 10, 10], 100, [(0, 4)]),  # fits: one piece
        ([30, 30, 30, 30, 30, 30, 5, 5], 130, [(0, 4), (4, 8)]),  # cut before an overflowing pair
        ([30, 30, 35, 35], 130, [(0, 4)]),  # exactly max_length is not over it
        ([30, 30, 35, 36], 130, [(0, 2)]),  # a cut at the last pair loses it (FastChat's quirk)
        ([200, 10, 5, 5, 1, 1], 100, [(0, 0), (0, 2), (2, 6)]),  # first pair too long: empty piece
        ([30, 30, 60, 60, 10, 10, 10, 10], 130, [(0, 2), (2, 4), (4, 8)]),  # restart at 0
        ([10, 10, 10], 100, [(0, 2)]),  # a dangling last message is ignored
        ([10], 100, []),
    ],
)
def test_piece_bounds_follow_fastchat(lengths, max_length, bounds):
    assert piece_bounds(lengths, max_length) == bounds


def test_split_counts_plus_six_per_message():
    # 4 words -> 11 counted tokens; a pair is 22: two pairs fit 44, not 43.
    messages = conversation((4, 4), (4, 4))
    assert [p for p, _ in split_conversation("c", messages, words, 44).pieces] == ["c_0"]
    outcome = split_conversation("c", messages, words, 43)
    assert [p for p, _ in outcome.pieces] == ["c_0"]
    assert outcome.dropped[LOST_TAIL] == 2  # the second pair triggered the cut at the end


def test_pieces_are_cut_between_pairs_with_start_index_ids():
    messages = conversation((4, 4), (4, 4), (4, 4), (1, 1))  # pairs 22, 22, 22, 16
    outcome = split_conversation("abc_0", messages, words, 50)
    assert [(pid, len(m)) for pid, m in outcome.pieces] == [("abc_0_0", 4), ("abc_0_4", 4)]
    assert outcome.pieces[1][1] == messages[4:8]
    assert all(m[0]["from"] == "human" for _, m in outcome.pieces)
    assert sum(outcome.dropped.values()) == 0


def test_too_long_first_pair_gives_a_dropped_empty_piece_and_a_kept_long_one():
    messages = conversation((100, 100), (1, 1), (1, 1))
    outcome = split_conversation("x", messages, words, 50)
    assert [pid for pid, _ in outcome.pieces] == ["x_0", "x_2"]
    assert outcome.dropped[EMPTY_PIECE] == 1
    assert outcome.over_max_length == 1


def test_dangling_last_message_is_cut_and_the_rest_kept():
    outcome = split_conversation("d", conversation(3, 3, 3), words, 100)
    assert [len(m) for _, m in outcome.pieces] == [2]
    assert outcome.dropped == Counter({DANGLING: 1, LOST_TAIL: 0})


@pytest.mark.parametrize("messages", [[], conversation(3)])
def test_fewer_than_two_messages_drop_the_conversation(messages):
    outcome = split_conversation("s", messages, words, 100)
    assert outcome.pieces == []
    assert outcome.dropped[TOO_SHORT] == 1


def test_roles_are_checked_per_piece_after_splitting():
    # Piece 1 is fine, piece 2 holds a "bing" message: only piece 2 is dropped.
    roles = ["human", "gpt", "human", "bing", "human", "gpt", "human", "gpt"]
    messages = conversation((20, 20), (20, 20), (1, 1), (1, 1), roles=roles)
    outcome = split_conversation("r", messages, words, 60)  # pieces [0, 2), [2, 4), [4, 8)
    assert [pid for pid, _ in outcome.pieces] == ["r_0", "r_4"]
    assert outcome.dropped[BAD_ROLES] == 1
    # Starting with the answer: every piece starts with gpt.
    outcome = split_conversation("g", conversation(1, 1, roles=["gpt", "human"]), words, 60)
    assert outcome.pieces == [] and outcome.dropped[NOT_HUMAN_FIRST] == 1
    outcome = split_conversation("s", conversation(1, 1, roles=["system", "human"]), words, 60)
    assert outcome.dropped[NOT_HUMAN_FIRST] == 1


role = st.sampled_from(["human", "gpt", "human", "gpt", "system"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(role, st.integers(0, 40)), max_size=12),
    st.integers(16, 120),
)
def test_every_message_is_kept_or_counted(spec, max_length):
    """Kept pieces are disjoint even-start slices; kept + dropped + lost = all messages."""
    messages = conversation(*[n for _, n in spec], roles=[r for r, _ in spec])
    outcome = split_conversation("p", messages, words, max_length)
    starts = [int(pid.rsplit("_", 1)[1]) for pid, _ in outcome.pieces]
    assert starts == sorted(set(starts)) and all(s % 2 == 0 for s in starts)
    for start, (_, piece) in zip(starts, outcome.pieces, strict=True):
        assert piece == messages[start : start + len(piece)] and len(piece) % 2 == 0
        assert [m["from"] for m in piece] == ["human", "gpt"] * (len(piece) // 2)
    bounds = piece_bounds([words(m["value"]) for m in messages], max_length)
    kept = sum(len(piece) for _, piece in outcome.pieces)
    dropped_pieces = sum(n for k, n in outcome.dropped.items() if k.startswith("pieces:"))
    assert len(bounds) == len(outcome.pieces) + dropped_pieces
    in_bounds = sum(end - start for start, end in bounds)
    assert in_bounds + outcome.dropped[LOST_TAIL] + outcome.dropped[DANGLING] == len(messages) or (
        outcome.dropped[TOO_SHORT] == 1
    )
    assert kept <= in_bounds


# --- the source schemas ---------------------------------------------------------------------------


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_both_schemas_are_read_with_their_id_key(tmp_path):
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello", "extra": 1}]
    wizard = write_json(tmp_path / "w.json", [{"idx": "a1", "conversations": turns}])
    share = write_json(tmp_path / "s.json", [{"id": "b2_0", "conversations": turns, "x": 0}])
    expected = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    assert read_source(wizard, "wizardlm_evol_instruct") == [
        {"id": "a1", "conversations": expected}
    ]
    assert read_source(share, "sharegpt") == [{"id": "b2_0", "conversations": expected}]
    assert list(raw_texts([wizard, share])) == ["hi", "hello", "hi", "hello"]


@pytest.mark.parametrize(
    ("schema", "row", "message"),
    [
        ("wizardlm_evol_instruct", {"id": "a", "conversations": []}, "row 1: missing key 'idx'"),
        ("sharegpt", {"id": "a"}, "row 1 (id 'a'): missing key 'conversations'"),
        ("sharegpt", {"id": 7, "conversations": []}, "key 'id': text expected, got 7"),
        ("sharegpt", {"id": "a", "conversations": {}}, "'conversations' must be a list"),
        (
            "sharegpt",
            {"id": "a", "conversations": [{"value": "x"}]},
            "message 0: missing key 'from'",
        ),
        (
            "sharegpt",
            {"id": "a", "conversations": [{"from": "human", "value": None}]},
            "message 0: key 'value': text expected, got None",
        ),
    ],
)
def test_malformed_rows_name_file_row_and_key(tmp_path, schema, row, message):
    good = {"idx" if schema.startswith("wizard") else "id": "ok", "conversations": []}
    path = write_json(tmp_path / "bad.json", [good, row])
    with pytest.raises(DataError, match=re.escape(message)) as error:
        read_source(path, schema)
    assert str(path) in str(error.value)


def test_a_file_that_is_not_a_list_is_refused(tmp_path):
    with pytest.raises(DataError, match="a JSON list of conversations expected, got dict"):
        read_source(write_json(tmp_path / "x.json", {"id": "a"}), "sharegpt")


# --- synthetic data, the mix and the manifest -----------------------------------------------------


def test_synthetic_sources_are_deterministic_and_hold_every_kind(tmp_path):
    assert generate_source("sharegpt", 3, 40) == generate_source("sharegpt", 3, 40)
    assert generate_source("sharegpt", 3, 40) != generate_source("sharegpt", 4, 40)
    rows = generate_source("wizardlm_evol_instruct", 0, len(KINDS))
    assert all(set(row) == {"idx", "conversations"} for row in rows)
    lengths = [len(row["conversations"]) for row in rows]
    assert 0 in lengths and 1 in lengths and any(n % 2 for n in lengths)
    firsts = {row["conversations"][0]["from"] for row in rows if row["conversations"]}
    assert {"human", "gpt", "system"} <= firsts
    a, b = synthesize(tmp_path / "a", 0, 30), synthesize(tmp_path / "b", 0, 30)
    assert a.keys() == b.keys() == {"sharegpt", "wizardlm"}
    for name in a:
        assert (tmp_path / "a" / f"{name}.json").read_bytes() == (
            tmp_path / "b" / f"{name}.json"
        ).read_bytes()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    synthesize(folder, 0, 60)
    return {
        name: (folder / f"{name}.json", folder / f"{name}.source.json")
        for name in ("sharegpt", "wizardlm")
    }


def build(raw, out: Path, **changes) -> dict:
    values = {"max_length": 120, "held_out": 10, **changes}
    return build_conversations(
        raw, Path("unused"), out, ChatDataSettings(**values), token_length=words
    )


def test_the_mix_is_seeded(raw, tmp_path):
    first, again = build(raw, tmp_path / "a"), build(raw, tmp_path / "b")
    other = build(raw, tmp_path / "c", seed=1)
    assert first["order_sha256"] == again["order_sha256"] != other["order_sha256"]
    for name in ("train", "test"):
        assert (tmp_path / "a" / f"conversations-{name}.parquet").read_bytes() == (
            tmp_path / "b" / f"conversations-{name}.parquet"
        ).read_bytes()
    ids = {d: pl.read_parquet(tmp_path / d / "conversations-train.parquet")["id"] for d in "ac"}
    assert ids["a"].to_list() != ids["c"].to_list()
    # The same pieces overall: a seed changes the order and which conversations are held out.
    both = {
        d: sorted(
            ids[d].to_list()
            + pl.read_parquet(tmp_path / d / "conversations-test.parquet")["id"].to_list()
        )
        for d in "ac"
    }
    assert both["a"] == both["c"]


def test_manifest_counts_match_the_files(raw, tmp_path):
    manifest = build(raw, tmp_path)
    sources = {n: json.loads(p.read_text()) for n, (p, _) in raw.items()}
    total = sum(len(rows) for rows in sources.values())
    assert {n: s["conversations_read"] for n, s in manifest["sources"].items()} == {
        n: len(rows) for n, rows in sources.items()
    }
    splits = manifest["splits"]
    assert splits["test"]["conversations"] == 10
    assert splits["train"]["conversations"] + 10 == total
    frames = {
        s: pl.read_parquet(tmp_path / f"conversations-{s}.parquet") for s in ("train", "test")
    }
    for split, frame in frames.items():
        assert frame.schema == pl.Schema(
            {
                "id": pl.String,
                "source": pl.String,
                "turns": pl.List(pl.Struct({"role": pl.String, "text": pl.String})),
            }
        )
        assert splits[split]["pieces"] == frame.height
        by_source = dict(frame.group_by("source").len().iter_rows())
        assert splits[split]["pieces_by_source"] == by_source
    assert set(frames["train"]["source"]) == {
        "synthetic:sharegpt",
        "synthetic:wizardlm_evol_instruct",
    }
    # Recount what is decided by the raw files alone: dangling and too-short conversations.
    all_rows = [row["conversations"] for rows in sources.values() for row in rows]
    dropped = Counter()
    for split in splits.values():
        dropped.update(split["dropped"])
    assert dropped[DANGLING] == sum(len(c) % 2 for c in all_rows)
    assert dropped[TOO_SHORT] == sum(len(c) < 2 for c in all_rows)
    assert dropped[EMPTY_PIECE] > 0 and dropped[BAD_ROLES] > 0 and dropped[NOT_HUMAN_FIRST] > 0
    # A held-out conversation has no piece in the training file.
    base = {s: {i.rsplit("_", 1)[0] for i in f["id"]} for s, f in frames.items()}
    assert not base["train"] & base["test"]
    assert manifest["outputs"] and all(Path(p).exists() for p in manifest["outputs"])


def test_holding_out_everything_is_refused(raw, tmp_path):
    with pytest.raises(DataError, match=r"amberchat\.data\.held_out: 120 leaves no training"):
        build(raw, tmp_path, held_out=120)


def test_recipe_default_holds_nothing_out(raw, tmp_path):
    manifest = build(raw, tmp_path, held_out=0)
    assert manifest["splits"]["test"]["pieces"] == 0
    assert pl.read_parquet(tmp_path / "conversations-test.parquet").height == 0


def test_cli_splits_with_a_sentencepiece_tokenizer(raw, tmp_path):
    """The stage as the rule runs it, with a LLaMA SentencePiece tokenizer trained here."""
    from amber_repro.models.tiny_amber import load_tokenizer, train_llama_sentencepiece

    folder = train_llama_sentencepiece(
        raw_texts([p for p, _ in raw.values()]), tmp_path / "tok", 400
    )
    args = ["chat-data", "--tokenizer", str(folder), "--out-dir", str(tmp_path / "out")]
    for name, (path, record) in raw.items():
        args += [f"--{name}", str(path), str(record)]
    assert cli([*args, "--max-length", "100", "--held-out", "0", "--seed", "5"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["max_length"] == 100
    tokenizer = load_tokenizer(folder)
    frame = pl.read_parquet(tmp_path / "out" / "conversations-train.parquet")
    over = 0
    for turns in frame["turns"].to_list():
        total = sum(message_token_length(t["text"], tokenizer) for t in turns)
        over += total > 100
        assert total <= 100 or len(turns) == 2  # only a single too-long pair exceeds the limit
    assert over == manifest["splits"]["train"]["pieces_over_max_length"]


def test_cli_reports_a_bad_source_file(raw, tmp_path, capsys):
    bad = write_json(tmp_path / "sharegpt.json", [{"id": "a", "turns": []}])
    args = ["chat-data", "--tokenizer", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    args += ["--sharegpt", str(bad), str(raw["sharegpt"][1])]
    args += ["--wizardlm", *map(str, raw["wizardlm"])]
    assert cli(args) == 2
    assert "row 0 (id 'a'): missing key 'conversations'" in capsys.readouterr().err


def test_a_download_with_the_wrong_sha256_is_refused(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("[]")
    actual = check_sha256(path, None, "x")
    assert check_sha256(path, actual, "x") == actual
    with pytest.raises(DataError, match=f"sha256 {actual} does not match the pinned 0{{64}}"):
        check_sha256(path, "0" * 64, "ds@c/f.json")


def test_the_shuffle_permutes_sharegpt_then_wizardlm_as_the_original(raw, tmp_path):
    """prepare_evol_datamix.py: list(sharegpt) + wizardlm, then random.shuffle (seeded here)."""
    import random

    build(raw, tmp_path, held_out=0, seed=3, max_length=10_000)
    ids = [
        row["id"] for name in ("sharegpt", "wizardlm") for row in read_source(*_source(raw, name))
    ]
    random.Random(3).shuffle(ids)
    frame = pl.read_parquet(tmp_path / "conversations-train.parquet")
    # No cuts at this max_length: each kept conversation is one piece, "<id>_0", in mix order.
    kept = [i.removesuffix("_0") for i in frame["id"]]
    assert kept == [i for i in ids if i in set(kept)]
    assert len(kept) > 60


def _source(raw, name):
    return raw[name][0], {"sharegpt": "sharegpt", "wizardlm": "wizardlm_evol_instruct"}[name]


def test_changing_one_key_of_a_source_keeps_its_other_defaults():
    from amber_repro.config.schema import Config

    pin = "a" * 64
    data = Config.model_validate(
        {"amberchat": {"data": {"wizardlm": {"sha256": pin}}}}
    ).amberchat.data
    assert data.wizardlm.sha256 == pin
    assert data.wizardlm.file == "WizardLM_evol_instruct_V2_143k.json"
    assert data.sharegpt.dataset == "anon8231489123/ShareGPT_Vicuna_unfiltered"
