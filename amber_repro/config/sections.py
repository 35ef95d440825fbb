"""Every setting of every stage, defined once: its type, the published recipe's value, what it
means.

The defaults are the AmberSafe recipe (docs/recipe.md). A config file only holds what it changes:
config/presets/embedded.yaml shrinks the recipe for a laptop or CI, config/config.yaml adds the
user's own changes. From these classes come the stage's flags and `--help`
(`configuration.add_settings_arguments`), the flags a rule passes (`configuration.settings_flags`),
the config schema (config/schema.json) and docs/settings.md. Strings that can reach a command line
are constrained to the characters they can legitimately hold."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StringConstraints,
)

from amber_repro.config.types import (
    NAME,
    NOT_AN_OPTION,
    HubId,
    ImageRef,
    Precision,
    Revision,
    Section,
    SplitName,
)


class HubSplits(Section):
    train: SplitName = Field("train", description="the hub's name of the training split")
    test: SplitName = Field("test", description="the hub's name of the held-out split")


class HubDataset(Section):
    dataset: HubId = Field("PKU-Alignment/PKU-SafeRLHF", description="Hugging Face dataset id")
    revision: Revision = Field(
        "v0", description="tag, branch or commit sha; v0 is the 2023 layout the recipe used"
    )
    splits: HubSplits = Field(default_factory=HubSplits, description="our split -> the hub's split")


class SyntheticData(Section):
    seed: int = Field(0, description="generator seed; the same seed gives byte-identical files")
    train_rows: int = Field(3000, ge=1, description="raw training rows (before filtering)")
    test_rows: int = Field(400, ge=1, description="raw held-out rows (before filtering)")


class DataSettings(Section):
    source: Literal["hub", "synthetic"] = Field(
        "hub", description="hub: PKU-SafeRLHF at data.hub; synthetic: generated offline"
    )
    hub: HubDataset = Field(default_factory=HubDataset, description="the pinned hub dataset")
    synthetic: SyntheticData = Field(default_factory=SyntheticData, description="the offline data")
    on_malformed: Literal["error", "drop"] = Field(
        "error", description="a null text or label: stop naming it, or drop and count it"
    )


class HubModel(Section):
    name: HubId = Field("LLM360/AmberChat", description="the base model's hub id")
    revision: Revision = Field(
        "main", description="tag, branch or commit sha (the resolved sha is recorded)"
    )


class TinyModel(Section):
    """The embedded default's base model: a LlamaForCausalLM built here, with its own tokenizer."""

    vocab_size: int = Field(1024, ge=300, description="byte-level BPE vocabulary trained here")
    hidden_size: int = Field(96, ge=8, description="LlamaConfig.hidden_size")
    intermediate_size: int = Field(256, ge=8, description="LlamaConfig.intermediate_size")
    num_layers: int = Field(3, ge=1, description="LlamaConfig.num_hidden_layers")
    num_heads: int = Field(4, ge=1, description="attention (and key-value) heads")
    max_position_embeddings: int = Field(512, ge=16, description="longest sequence")
    seed: int = Field(0, description="seed of the random initialisation")


class BaseModelSettings(Section):
    source: Literal["hub", "tiny", "amberchat"] = Field(
        "hub",
        description="hub: base_model.hub; tiny: build base_model.tiny here, offline; amberchat: "
        "this workflow's own AmberChat (results/amberchat/model, built from amberchat.*)",
    )
    hub: HubModel = Field(default_factory=HubModel, description="the pinned hub model")
    tiny: TinyModel = Field(default_factory=TinyModel, description="the embedded tiny model")


class Tokenization(Section):
    """The reference implementation's keep-start truncation, shared by SFT, ref-logps, DPO, eval."""

    max_length: int = Field(512, ge=2, description="prompt + response tokens at most")
    max_prompt_length: int = Field(256, ge=1, description="prompt tokens kept when truncating")


class Training(Section):
    """What SFT and DPO share; batch_size is GLOBAL (examples per optimizer step, all processes)."""

    batch_size: int = Field(ge=1, description="GLOBAL examples per optimizer step")
    gradient_accumulation_steps: int = Field(ge=1, description="micro-steps per optimizer step")
    n_epochs: int = Field(3, ge=1, description="passes over the training data")
    lr: float = Field(gt=0, description="peak learning rate (RMSprop)")
    warmup_steps: int = Field(150, ge=0, description="linear warmup steps, then constant")
    max_grad_norm: float = Field(10.0, gt=0, description="gradient clipping norm")
    seed: int = Field(0, description="seed of the per-epoch shuffle and the held-out sample")
    shuffle: Literal["prompts", "examples"] = Field(
        "prompts",
        description="prompts: the reference's order (prompts shuffled each epoch, each prompt's "
        "examples one after another); examples: each example shuffled on its own",
    )
    precision: Precision = Field("float32", description="float32 (the recipe) or bf16 autocast")
    gradient_checkpointing: bool = Field(False, description="recompute activations (saves memory)")
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between checkpoints")
    eval_every: int = Field(
        20_000,
        ge=1,
        description="training examples between held-out evaluations, rounded down to a multiple "
        "of batch_size (the reference's)",
    )
    do_first_eval: bool = Field(True, description="evaluate before the first optimizer step too")
    eval_examples: int = Field(
        256,
        ge=1,
        description="held-out examples per evaluation, drawn in the shuffle's order from the seed "
        "(rounded up to whole eval batches)",
    )
    eval_batch_size: int = Field(32, ge=1, description="held-out examples per forward pass")


class SFTSettings(Training):
    batch_size: int = Field(64, ge=1, description="GLOBAL examples per optimizer step")
    gradient_accumulation_steps: int = Field(2, ge=1, description="micro-steps per optimizer step")
    lr: float = Field(2e-7, gt=0, description="peak learning rate (RMSprop)")


SHARE_PROMPT = (
    "run each pair as one row whose prompt is computed once for chosen and rejected (a mask keeps "
    "the two responses apart): fewer tokens, the same log-probs to float rounding; false: chosen "
    "and rejected as separate padded rows (the recipe's). SDPA or eager attention only"
)


class ReferenceSettings(Section):
    batch_size: int = Field(
        32, ge=1, description="pairs per forward pass at max_length (sizes the default max_tokens)"
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="padded tokens per forward pass, sequences batched longest first; "
        "null: batch_size x 2 x max_length",
    )
    precision: Literal["float32", "float16", "bf16"] = Field(
        "float16", description="the frozen reference model's dtype"
    )
    share_prompt: bool = Field(False, description=SHARE_PROMPT)


class DPOSettings(Training):
    loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="sigmoid (DPO) or ipo")
    beta: float = Field(0.1, gt=0, description="strength of the KL penalty to the reference")
    label_smoothing: float = Field(
        0.0, ge=0, le=0.5, description="> 0 turns sigmoid DPO into conservative DPO"
    )
    reference_free: bool = Field(False, description="ignore the reference (its log-ratio is 0)")
    batch_size: int = Field(32, ge=1, description="GLOBAL pairs per optimizer step")
    gradient_accumulation_steps: int = Field(4, ge=1, description="micro-steps per optimizer step")
    lr: float = Field(5e-7, gt=0, description="peak learning rate (RMSprop)")
    length_group_min_saving: int = Field(
        0,
        ge=0,
        description="run a micro-batch's sequences in length groups, one forward pass each, "
        "where a pass saves more than this many padded tokens; 0: one padded pass (the recipe's). "
        "Same batches and losses (to float rounding); single-process runs only",
    )
    share_prompt: bool = Field(False, description=SHARE_PROMPT)


class Reproducibility(Section):
    """How GPU stages compute: every GPU stage takes these (CPU results are the same either way)."""

    deterministic: bool = Field(
        False,
        description="deterministic kernels, no TF32: bitwise repeatable on one GPU model and stack",
    )
    tf32: bool = Field(
        True,
        description="TF32 matmuls and convolutions on A100/H100-class GPUs, as the reference turns "
        "them on; off when deterministic",
    )


class ContainerSettings(Section):
    image: ImageRef = Field(
        "results/containers/amber-repro.sif",
        description="the GPU rules' Apptainer image: a local path or a registry URI",
    )


# An experiment's name: a folder under results/ambersafe/experiments/.
ExperimentName = Annotated[
    str, StringConstraints(pattern=rf"^{NAME}$", max_length=64), NOT_AN_OPTION
]


class Experiment(Section):
    """A named variant of the DPO stage and its evaluation; the data, the SFT checkpoint and the
    reference log-probs are shared with every other experiment
    (amber_repro/config/experiments.py)."""

    dpo: dict[str, Any] = Field(
        default_factory=dict, description="changes to the dpo settings, e.g. {beta: 0.2}"
    )
    eval: dict[str, Any] = Field(
        default_factory=dict,
        description="changes to eval.batch_size, limit, bootstrap_iters or generations",
    )


# A person's or an organisation's name as the crate credits it: printable, one line.
CreditName = Annotated[
    str,
    StringConstraints(pattern=r"^[^\x00-\x1f\x7f-][^\x00-\x1f\x7f]*$", max_length=200),
    NOT_AN_OPTION,
]
# An identifier of a person or organisation: an https URL (an ORCID, ROR or home page).
CreditId = Annotated[
    str, StringConstraints(pattern=r"^https://[^\s\"<>\\]+$", max_length=300), NOT_AN_OPTION
]


class CrateSettings(Section):
    """Who the provenance crate (results/ro-crate-metadata.json and an archive's crate) credits:
    its author, who is also the agent of every job, and its publisher. A registry such as
    WorkflowHub wants both; set them before publishing a run."""

    author: CreditName | None = Field(
        None,
        description="the crate's author and the runs' agent; unset: git's user.name, else the "
        "commit's author",
    )
    author_id: CreditId | None = Field(
        None, description="the author's identifier, e.g. https://orcid.org/0000-0002-1825-0097"
    )
    author_affiliation: CreditName | None = Field(
        None, description="the organisation the author works for; unset: none is named"
    )
    publisher: CreditName | None = Field(
        None, description="the organisation publishing the crate; unset: none is named"
    )
    publisher_id: CreditId | None = Field(
        None, description="the publisher's identifier, e.g. a https://ror.org/ URL"
    )
    workflow_url: CreditId | None = Field(
        None,
        description="where the workflow's source is published (its repository's page): the "
        "workflow's url, and its rules' identifiers (<url>#rule-<rule>); unset: local ones",
    )
