"""What the synthetic data's source.json records about it: how held out the test split is, and
whether anything but content (length, the first word) separates safe from unsafe answers.

Computed from the generated rows in the v0 schema, plus each row's `_topic` and `_template` (known
to the generator only; they are not written to the parquet files).
"""

from __future__ import annotations

import polars as pl

S0, S1 = pl.col("is_response_0_safe"), pl.col("is_response_1_safe")


def responses_by_class(frame: pl.DataFrame) -> pl.DataFrame:
    """Every response of the frame as one row: `text`, `safe`."""
    return pl.concat(
        frame.select(text=pl.col(f"response_{i}"), safe=pl.col(f"is_response_{i}_safe"))
        for i in (0, 1)
    )


def mixed_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """(chosen, rejected) of the rows whose labels differ: the pairs the filter will keep."""
    return frame.filter(S0 != S1).select(
        chosen=pl.when(S0).then("response_0").otherwise("response_1"),
        rejected=pl.when(S0).then("response_1").otherwise("response_0"),
    )


def _seen(test: pl.Series, train: pl.Series) -> dict[str, int]:
    """How many distinct values of `test` occur in `train`, of how many."""
    distinct = test.unique()
    return {"seen_in_train": int(distinct.is_in(train.implode()).sum()), "distinct": distinct.len()}


def held_out_statistics(train: pl.DataFrame, test: pl.DataFrame) -> dict:
    """What of the test split also occurs in training (every `seen_in_train` should be 0)."""
    test_pairs, train_pairs = mixed_pairs(test), mixed_pairs(train)
    return {
        "topics": _seen(test["_topic"], train["_topic"]),
        "templates": _seen(test["_template"], train["_template"]),
        "prompts": _seen(test["prompt"], train["prompt"]),
        "responses": _seen(responses_by_class(test)["text"], responses_by_class(train)["text"]),
        # Counted per pair, as the held-out task scores them, not per distinct pair.
        "pairs": {
            "copied_from_train": test_pairs.join(
                train_pairs.unique(), on=["chosen", "rejected"], how="semi"
            ).height,
            "pairs": test_pairs.height,
        },
    }


def _rounded(value, digits: int = 2) -> float | None:
    """A polars mean or median as a rounded float; None for no values (a tiny split may hold no
    safe answer or no pair)."""
    return None if value is None else round(float(value), digits)


def class_statistics(frame: pl.DataFrame) -> dict:
    """Length and first word of safe vs unsafe responses, and how often chosen is the longer one."""
    texts = responses_by_class(frame).with_columns(
        chars=pl.col("text").str.len_chars(),
        words=pl.col("text").str.count_matches(r"\S+"),
        first_word=pl.col("text").str.extract(r"^\s*(\S+)"),
    )
    stats = {}
    for name, safe in (("safe", True), ("unsafe", False)):
        group = texts.filter(pl.col("safe") == safe)
        stats[name] = {
            "responses": group.height,
            "mean_chars": _rounded(group["chars"].mean()),
            "median_chars": _rounded(group["chars"].median()),
            "mean_words": _rounded(group["words"].mean()),
            "median_words": _rounded(group["words"].median()),
        }
    firsts = {
        name: set(texts.filter(pl.col("safe") == safe)["first_word"].drop_nulls())
        for name, safe in (("safe", True), ("unsafe", False))
    }
    pairs = mixed_pairs(frame)
    longer = pairs["chosen"].str.len_chars() > pairs["rejected"].str.len_chars()
    stats["chosen_longer_share"] = _rounded(longer.mean(), 4)
    stats["first_words"] = {
        "safe": len(firsts["safe"]),
        "unsafe": len(firsts["unsafe"]),
        "shared": len(firsts["safe"] & firsts["unsafe"]),
    }
    return stats


def split_statistics(train: pl.DataFrame, test: pl.DataFrame) -> dict:
    return {
        "held_out": held_out_statistics(train, test),
        "train": class_statistics(train),
        "test": class_statistics(test),
    }
