"""The synthetic data's held-out split and classes, measured on the generated files themselves, and
the statistics source.json records about them."""

from __future__ import annotations

import statistics

import polars as pl
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from amber_repro.config.sections import SyntheticData
from amber_repro.data.synthetic import synthesize
from amber_repro.data.synthetic_stats import split_statistics
from amber_repro.data.synthetic_text import (
    TEST_TEMPLATES,
    TEST_TOPICS,
    TRAIN_TEMPLATES,
    TRAIN_TOPICS,
)
from amber_repro.storage import read_json

DEFAULTS = SyntheticData()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The embedded default's rows (default seed and sizes) and their source.json."""
    out = tmp_path_factory.mktemp("synthetic")
    synthesize(out, DEFAULTS.seed, {"train": DEFAULTS.train_rows, "test": DEFAULTS.test_rows})
    frames = {split: pl.read_parquet(out / f"{split}.parquet") for split in ("train", "test")}
    return frames, read_json(out / "source.json")


def responses(frame: pl.DataFrame) -> list[tuple[str, bool]]:
    """(text, is safe) of every response."""
    return [
        (row[f"response_{i}"], row[f"is_response_{i}_safe"])
        for row in frame.iter_rows(named=True)
        for i in (0, 1)
    ]


def pairs(frame: pl.DataFrame) -> list[tuple[str, str]]:
    """(chosen, rejected): the safe and the unsafe response of each row whose labels differ."""
    out = []
    for row in frame.iter_rows(named=True):
        if row["is_response_0_safe"] != row["is_response_1_safe"]:
            safe = 0 if row["is_response_0_safe"] else 1
            out.append((row[f"response_{safe}"], row[f"response_{1 - safe}"]))
    return out


def topics_in(prompts) -> set[str]:
    every = [t for t, _ in TRAIN_TOPICS + TEST_TOPICS]
    return {topic for prompt in prompts for topic in every if topic in prompt}


def test_no_topic_is_part_of_another_so_a_substring_search_finds_topics():
    every = [t for t, _ in TRAIN_TOPICS + TEST_TOPICS]
    assert len(set(every)) == len(every)
    assert not [(a, b) for a in every for b in every if a != b and a in b]


def test_test_split_shares_no_topic_template_prompt_response_or_pair_with_training(generated):
    (frames, _source) = generated
    train, test = frames["train"], frames["test"]
    assert topics_in(test["prompt"]).isdisjoint(topics_in(train["prompt"]))
    assert topics_in(test["prompt"]) == {t for t, _ in TEST_TOPICS}
    assert set(TRAIN_TEMPLATES).isdisjoint(TEST_TEMPLATES)
    for frame, topics, templates in (
        (train, TRAIN_TOPICS, TRAIN_TEMPLATES),
        (test, TEST_TOPICS, TEST_TEMPLATES),
    ):
        allowed = {tpl.format(t=t) for t, _ in topics for tpl in templates}
        assert set(frame["prompt"]) <= allowed
    train_texts = {text for text, _ in responses(train)}
    assert not {text for text, _ in responses(test)} & train_texts
    assert not set(pairs(test)) & set(pairs(train))
    # Stricter than whole responses: no test sentence after the first (the shared openings) occurs
    # in training.
    train_sentences = {s for text in train_texts for s in text.split(". ")[1:]}
    assert not {s for text, _ in responses(test) for s in text.split(". ")[1:]} & train_sentences


@pytest.mark.parametrize("split", ["train", "test"])
def test_safe_and_unsafe_answers_are_as_long_and_open_the_same_ways(generated, split):
    frame = generated[0][split]
    chars = {safe: [len(t) for t, s in responses(frame) if s == safe] for safe in (True, False)}
    assert statistics.mean(chars[True]) == pytest.approx(statistics.mean(chars[False]), rel=0.1)
    assert statistics.median(chars[True]) == pytest.approx(statistics.median(chars[False]), rel=0.1)
    split_pairs = pairs(frame)
    longer = sum(len(chosen) > len(rejected) for chosen, rejected in split_pairs)
    assert 0.4 <= longer / len(split_pairs) <= 0.6
    firsts = {
        safe: {t.split()[0] for t, s in responses(frame) if s == safe} for safe in (True, False)
    }
    assert len(firsts[True] & firsts[False]) >= 0.8 * len(firsts[True] | firsts[False])


def test_no_single_word_tells_the_classes_apart(generated):
    """The old generator's 'help' was in every safe answer and no unsafe one."""
    items = responses(generated[0]["train"])
    counts = CountVectorizer(binary=True, lowercase=True).fit(t for t, _ in items)
    matrix = counts.transform(t for t, _ in items)
    safe = [s for _, s in items]
    rate = {
        label: matrix[[i for i, s in enumerate(safe) if s == label]].mean(axis=0).A1
        for label in (True, False)
    }
    assert abs(rate[True] - rate[False]).max() < 0.5


def test_the_label_is_learnable_from_content_on_unseen_data_but_not_from_form(generated):
    """A bag-of-words classifier trained on training responses labels test responses well; the same
    classifier given only the first word or only the length is near chance."""
    (frames, _source) = generated
    train, test = responses(frames["train"]), responses(frames["test"])

    def heldout_accuracy(feature) -> float:
        vectorizer = TfidfVectorizer(token_pattern=r"\S+")
        x = vectorizer.fit_transform(feature(t) for t, _ in train)
        model = LogisticRegression(max_iter=1000).fit(x, [s for _, s in train])
        return model.score(vectorizer.transform(feature(t) for t, _ in test), [s for _, s in test])

    assert heldout_accuracy(lambda text: text) > 0.9
    assert heldout_accuracy(lambda text: text.split()[0]) < 0.6
    assert heldout_accuracy(lambda text: f"len{len(text) // 20}") < 0.6


def test_source_json_records_the_statistics_of_the_files_written(generated):
    (frames, source) = generated
    recorded = source["statistics"]
    held_out = recorded["held_out"]
    assert {k: v["seen_in_train"] for k, v in held_out.items() if k != "pairs"} == {
        "topics": 0,
        "templates": 0,
        "prompts": 0,
        "responses": 0,
    }
    assert held_out["topics"]["distinct"] == len(TEST_TOPICS)
    assert held_out["pairs"] == {"copied_from_train": 0, "pairs": len(pairs(frames["test"]))}
    for split, frame in frames.items():
        stats = recorded[split]
        for name, safe in (("safe", True), ("unsafe", False)):
            texts = [t for t, s in responses(frame) if s == safe]
            assert stats[name]["responses"] == len(texts)
            assert stats[name]["median_chars"] == statistics.median(map(len, texts))
            assert stats[name]["mean_words"] == pytest.approx(
                statistics.mean(len(t.split()) for t in texts), abs=0.01
            )
        split_pairs = pairs(frame)
        longer = sum(len(c) > len(r) for c, r in split_pairs) / len(split_pairs)
        assert stats["chosen_longer_share"] == pytest.approx(longer, abs=1e-4)


def row(prompt, r0, r1, s0, s1, topic, template="T"):
    return {
        "prompt": prompt,
        "response_0": r0,
        "response_1": r1,
        "is_response_0_safe": s0,
        "is_response_1_safe": s1,
        "_topic": topic,
        "_template": template,
    }


def test_statistics_count_what_leaks_from_training_into_the_test_split():
    """Hand-made splits with known overlaps: a statistic stuck at 0 would miss them."""
    train = pl.DataFrame(
        [
            row("p1", "Sure. safe one", "Sure. bad one", True, False, "a"),
            row("p2", "bad two", "Well safe two", False, True, "b", "U"),
        ]
    )
    test = pl.DataFrame(
        [
            row("q1", "Sure. safe one", "Sure. bad one", True, False, "a"),  # copied pair
            row("q2", "No. bad two", "Well safe two", False, True, "c"),  # one copied response
            row("q3", "new safe", "new safe too", True, True, "c", "V"),  # not a pair
        ]
    )
    stats = split_statistics(train, test)
    held_out = stats["held_out"]
    assert held_out["topics"] == {"seen_in_train": 1, "distinct": 2}
    assert held_out["templates"] == {"seen_in_train": 1, "distinct": 2}
    assert held_out["prompts"] == {"seen_in_train": 0, "distinct": 3}
    assert held_out["responses"] == {"seen_in_train": 3, "distinct": 6}
    assert held_out["pairs"] == {"copied_from_train": 1, "pairs": 2}
    # test: safe answers "Sure. safe one" (14), "Well safe two" (13), "new safe" (8), "new safe
    # too" (12); unsafe: "Sure. bad one" (13), "No. bad two" (11).
    assert stats["test"]["safe"]["median_chars"] == 12.5
    assert stats["test"]["unsafe"]["mean_words"] == 3.0
    assert stats["test"]["chosen_longer_share"] == 1.0
    assert stats["test"]["first_words"] == {"safe": 3, "unsafe": 2, "shared": 1}


def test_a_split_too_small_for_a_pair_records_no_length_share_instead_of_failing(tmp_path):
    synthesize(tmp_path, seed=0, rows={"train": 1, "test": 1})
    test = pl.read_parquet(tmp_path / "test.parquet")
    # Seed 0's one test row holds two unsafe answers: no pair, no safe answer.
    assert not pairs(test) and not [t for t, s in responses(test) if s]
    recorded = read_json(tmp_path / "source.json")["statistics"]
    assert recorded["test"]["chosen_longer_share"] is None
    assert recorded["test"]["safe"] == {
        "responses": 0,
        "mean_chars": None,
        "median_chars": None,
        "mean_words": None,
        "median_words": None,
    }
    assert recorded["held_out"]["pairs"] == {"copied_from_train": 0, "pairs": 0}
