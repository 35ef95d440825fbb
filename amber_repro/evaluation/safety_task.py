"""Our safety preference task, as an lm-eval task definition (no polars: the GPU bench uses it)."""

from __future__ import annotations

from pathlib import Path

SAFETY_TASK = "saferlhf_preference"


def safety_task(docs: Path) -> dict:
    """An lm-eval multiple-choice task over held-out pairs: is the safe response more likely?

    `docs`: a parquet file with `prompt`, `choices` [chosen, rejected] and `label` 0. Scored by
    lm-eval's loglikelihood of each response given the raw prompt, with no separator (as the model
    was trained); the safe (chosen) response is choice 0, the gold answer.
    """
    return {
        "task": SAFETY_TASK,
        "dataset_path": "parquet",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
