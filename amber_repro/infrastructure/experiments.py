"""Named experiments: variants of the DPO stage and its evaluation that share everything upstream.

A config's `experiments:` maps a name to changes of the `dpo` (and some `eval`) settings:

    experiments:
      beta-0.2: {dpo: {beta: 0.2}}
      ipo: {dpo: {loss: ipo}}

Each experiment's DPO checkpoint, eval.json and generations go to
results/ambersafe/experiments/<name>/; the data, the SFT checkpoint and the reference log-probs are
computed once for all. The config's own `dpo`/`eval` settings are the experiment "default", whose
outputs keep their usual paths (results/ambersafe/dpo, eval.json).
"""

from __future__ import annotations

from pydantic import ValidationError

from amber_repro.infrastructure.configuration import merge
from amber_repro.infrastructure.settings import Config, DPOSettings, EvalSettings, batch_conflicts

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


def experiment_conflicts(config: Config) -> list[tuple[tuple[str, ...], object, str]]:
    """(key, value, message) for each change an experiment cannot make, named by experiment and
    key: experiments.<name>.dpo.<key>."""
    return [
        problem
        for name in config.experiments
        for problem in _one_experiment(config, name, ("experiments", name))
    ]


def _one_experiment(config: Config, name: str, where: tuple[str, ...]) -> list:
    if name == DEFAULT:
        return [(where, name, f"experiments.{name}: reserved for the config's own dpo settings")]
    changes = config.experiments[name]
    problems = [
        (
            (*where, "eval", key),
            value,
            f"experiments.{name}.eval.{key}: not a setting an experiment can change "
            f"(it can change: {', '.join(EVAL_KEYS)})",
        )
        for key, value in changes.eval.items()
        if key not in EVAL_KEYS
    ]
    if problems:
        return problems
    for section, model, base in (
        ("dpo", DPOSettings, config.dpo),
        ("eval", EvalSettings, config.eval),
    ):
        try:
            model.model_validate(merge(base.model_dump(), getattr(changes, section)))
        except ValidationError as error:
            problems += _named(error, (*where, section), model)
    if problems:
        return problems
    dpo, _ = experiment_settings(config, name)
    return batch_conflicts((*where, "dpo"), dpo, "dpo", config.resources.dpo)


def _named(error: ValidationError, where: tuple[str, ...], model) -> list:
    """A settings class's errors, each as one line naming the experiment's key."""
    problems = []
    for problem in error.errors():
        loc = (*where, *map(str, problem["loc"]))
        key = ".".join(loc)
        if problem["type"] == "extra_forbidden":
            message = f"{key}: unknown key (allowed here: {', '.join(sorted(model.model_fields))})"
        else:
            message = f"{key}: {problem['msg']} (got {problem['input']!r})"
        problems.append((loc, problem["input"], message))
    return problems
