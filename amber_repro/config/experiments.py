"""Named experiments: variants of the DPO stage and its evaluation that share everything upstream.

A config's `experiments:` maps a name to changes of the `dpo` (and some `eval`) settings:

    experiments:
      beta-0.2: {dpo: {beta: 0.2}}
      ipo: {dpo: {loss: ipo}}

Each experiment's DPO checkpoint, eval.json and generations go to
results/ambersafe/experiments/<name>/; the data, the SFT checkpoint and the reference log-probs are
computed once for all. The config's own `dpo`/`eval` settings are the experiment "default", whose
outputs keep their usual paths (results/ambersafe/dpo, eval.json)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amber_repro.config.eval_sections import EvalSettings
from amber_repro.config.sections import DPOSettings
from amber_repro.config.types import merge

if TYPE_CHECKING:  # the checks of Config's validation call these
    from amber_repro.config.schema import Config

DEFAULT = "default"


# An experiment's evaluation shares the harness tasks and their datasets cache with the default's.
EVAL_KEYS = ("batch_size", "limit", "bootstrap_iters", "generations")


def experiment_names(config: Config) -> list[str]:
    """The default first, then the configured experiments in config order."""
    return [DEFAULT, *config.experiments]


def experiment_settings(config: Config, name: str) -> tuple[DPOSettings, EvalSettings]:
    """The dpo and eval settings experiment `name` runs with: the config's, changed by it."""
    if name == DEFAULT:
        return config.dpo, config.eval
    changes = config.experiments[name]
    dpo = DPOSettings.model_validate(merge(config.dpo.model_dump(), changes.dpo))
    evaluation = EvalSettings.model_validate(merge(config.eval.model_dump(), changes.eval))
    return dpo, evaluation
