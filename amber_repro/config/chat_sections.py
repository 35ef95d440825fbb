"""The `amberchat:` config section: Amber -> AmberChat (FastChat's instruction finetuning).

Defaults are the published AmberChat recipe (LLM360/amber-train `finetune/amberchat/
instruction_finetune.sh`, run with FastChat v0.2.33's `train_mem.py`; docs/amberchat.md). FastChat
counts the batch per device (2 x accumulation 16 x 8 GPUs); here, as for SFT and DPO, `batch_size`
is GLOBAL: 256 sequences per optimizer step, the same run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from amber_repro.config.eval_sections import LLM360_TASKS
from amber_repro.config.types import (
    NOT_AN_OPTION,
    RELATIVE_PATH,
    HarnessTask,
    HubId,
    Precision,
    Revision,
    Section,
)

# A file inside a hub repository (relative, portable characters) and a hex sha256.
RepoFile = Annotated[str, StringConstraints(pattern=rf"^{RELATIVE_PATH}$"), NOT_AN_OPTION]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$"), NOT_AN_OPTION]


class ChatSource(Section):
    """One source dataset of the mix: one JSON file of a hub dataset repository, pinned."""

    dataset: HubId = Field(description="Hugging Face dataset id")
    revision: Revision = Field(
        description="tag, branch or commit sha (the resolved commit is recorded)"
    )
    file: RepoFile = Field(description="the data file inside the dataset repository")
    sha256: Sha256 | None = Field(
        description="the file's expected sha256 (a mismatch stops the download); null: record only"
    )


class WizardLMSource(ChatSource):
    """Its defaults, so that a config changing one key (say sha256) keeps the others."""

    # The hub moved the repository to WizardLMTeam/ (the old id redirects); 8a7d15a was its main on
    # 2026-08-11, as a public dataset card records; not downloaded from here, so the file's sha256
    # is still unset (the download records it).
    dataset: HubId = Field("WizardLMTeam/WizardLM_evol_instruct_V2_196k", description="dataset id")
    revision: Revision = Field(
        "8a7d15a83028b5c93915677704f492839e2675f6", description="tag, branch or commit sha"
    )
    file: RepoFile = Field("WizardLM_evol_instruct_V2_143k.json", description="the data file")
    sha256: Sha256 | None = Field(None, description="expected sha256; null: record only")


class ShareGPTSource(ChatSource):
    dataset: HubId = Field("anon8231489123/ShareGPT_Vicuna_unfiltered", description="dataset id")
    revision: Revision = Field("main", description="tag, branch or commit sha")
    file: RepoFile = Field("ShareGPT_V3_unfiltered_cleaned_split.json", description="the data file")
    sha256: Sha256 | None = Field(None, description="expected sha256; null: record only")


class ChatSyntheticData(Section):
    """The embedded default's conversations, written in both source schemas (chat_synthetic.py)."""

    seed: int = Field(0, description="generator seed; the same seed gives byte-identical files")
    conversations: int = Field(
        120, ge=20, description="conversations per source schema (some invalid on purpose)"
    )


class ChatDataSettings(Section):
    """prepare_evol_datamix.py (concatenate, shuffle) then FastChat's split_long_conversation."""

    source: Literal["hub", "synthetic"] = Field(
        "hub", description="hub: the two pinned datasets; synthetic: generated offline"
    )
    wizardlm: WizardLMSource = Field(
        default_factory=WizardLMSource,
        description="WizardLM evol-instruct V2 (143k conversations; its idx becomes id)",
    )
    sharegpt: ShareGPTSource = Field(
        default_factory=ShareGPTSource,
        description="ShareGPT V3, already cleaned and split by FastChat",
    )
    synthetic: ChatSyntheticData = Field(
        default_factory=ChatSyntheticData, description="the offline conversations"
    )
    seed: int = Field(
        0, description="seed of the mix's shuffle (the original's random.shuffle had none)"
    )
    max_length: int = Field(
        2048, ge=16, description="split_long_conversation --max-length, in tokens"
    )
    held_out: int = Field(
        0,
        ge=0,
        description="shuffled conversations set aside (all their pieces) for the test file; "
        "0: train on everything, as the recipe",
    )


class ChatTokenizer(Section):
    """Amber's LLaMA SentencePiece tokenizer as FastChat's preprocess sees it (amber_repro/
    models/tiny_amber.py)."""

    legacy: bool | None = Field(
        None,
        description="LlamaTokenizer's legacy mode (text right after an end-of-sequence token "
        "gets a dummy-prefix space); it moves FastChat's turn offsets. null: the tokenizer "
        "folder's value, or true where it has none (what FastChat's transformers 4.3x assumed)",
    )
    vocab_size: int = Field(
        1024, ge=300, description="tiny only: SentencePiece BPE vocabulary trained here"
    )


class AmberModel(Section):
    """The model AmberChat starts from: LLM360/Amber from the hub, or the embedded tiny one."""

    source: Literal["hub", "tiny"] = Field(
        "hub",
        description="hub: amberchat.amber.hub; tiny: a tiny LLaMA with a SentencePiece tokenizer "
        "built here (sizes from base_model.tiny)",
    )
    name: HubId = Field("LLM360/Amber", description="Amber's hub id")
    revision: Revision = Field(
        "main",
        description="tag, branch or commit sha; main holds the final checkpoint (ckpt_359), the "
        "one the recipe used (the resolved sha is recorded)",
    )
    tokenizer: ChatTokenizer = Field(
        default_factory=ChatTokenizer, description="the LLaMA tokenizer's mode and, tiny, size"
    )


class ChatTrainSettings(Section):
    """FastChat's train.py through the Hugging Face Trainer: AdamW, cosine schedule with warmup,
    loss = token mean over each micro-batch's assistant tokens, averaged over micro-batches."""

    batch_size: int = Field(256, ge=1, description="GLOBAL sequences per optimizer step")
    gradient_accumulation_steps: int = Field(16, ge=1, description="micro-steps per optimizer step")
    n_epochs: int = Field(3, ge=1, description="passes over the training conversations")
    lr: float = Field(2e-5, gt=0, description="peak learning rate (AdamW)")
    warmup_ratio: float = Field(
        0.04,
        ge=0,
        le=1,
        description="linear warmup over ceil(ratio x total steps), then cosine decay to 0",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1 (the Trainer's default)")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2 (the Trainer's default)")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon (the Trainer's default)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping (the Trainer's default)")
    model_max_length: int = Field(
        2048, ge=8, description="tokens per conversation at most (longer ones are truncated)"
    )
    seed: int = Field(42, description="seed of the per-epoch shuffle (the Trainer's default seed)")
    precision: Precision = Field("bf16", description="bf16 autocast (the recipe) or float32")
    gradient_checkpointing: bool = Field(True, description="recompute activations (saves memory)")
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between checkpoints")


class ChatGenerations(Section):
    prompts: int = Field(8, ge=0, description="held-out conversations answered greedily")
    max_new_tokens: int = Field(256, ge=1, description="tokens generated per answer at most")


class ChatEvalSettings(Section):
    harness_tasks: list[HarnessTask] = Field(
        LLM360_TASKS, description="lm-eval tasks as name:shots (LLM360's reported AmberChat set)"
    )
    precision: Literal["float32", "float16", "bf16"] = Field(
        "float16", description="the models' dtype in lm-eval (its half precision for 7B models)"
    )
    batch_size: int = Field(16, ge=1, description="documents (or conversations) per forward batch")
    limit: int | None = Field(None, ge=1, description="documents per task at most; null: all")
    bootstrap_iters: int = Field(100000, ge=0, description="lm-eval's bootstrap resamples")
    generations: ChatGenerations = Field(
        default_factory=ChatGenerations, description="greedy answers, vicuna_v1.1 template"
    )


class AmberChatSettings(Section):
    data: ChatDataSettings = Field(
        default_factory=ChatDataSettings, description="the conversation mix and its split"
    )
    amber: AmberModel = Field(default_factory=AmberModel, description="the model to finetune")
    train: ChatTrainSettings = Field(
        default_factory=ChatTrainSettings, description="instruction finetuning (FastChat)"
    )
    eval: ChatEvalSettings = Field(
        default_factory=ChatEvalSettings, description="lm-eval, held-out loss, generations"
    )
