"""The whole config file as one typed, validated object: the recipe's defaults, every
section, and the cross-key checks (checks.py) run on each validation."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from amber_repro.config.chat_sections import AmberChatSettings
from amber_repro.config.checks import CONFLICT, conflicts
from amber_repro.config.eval_sections import (
    EvalSettings,
)
from amber_repro.config.resource_sections import Resources
from amber_repro.config.sections import (
    BaseModelSettings,
    ContainerSettings,
    CrateSettings,
    DataSettings,
    DPOSettings,
    Experiment,
    ExperimentName,
    ReferenceSettings,
    Reproducibility,
    SFTSettings,
    Tokenization,
)
from amber_repro.config.types import (
    Section,
)


class Config(Section):
    """The whole workflow's settings: the recipe, changed by a preset and the user's config.

    Settings that must agree with each other (batch sizes and processes, prompt and total length,
    nodes and rules, CPUs and processes) are checked together here, before any job starts.
    """

    preset: Literal["recipe", "embedded"] = Field(
        "recipe",
        description="recipe: the published 7B recipe; embedded: tiny model, synthetic data, CPU",
    )
    data: DataSettings = Field(default_factory=DataSettings, description="raw data and filtering")
    base_model: BaseModelSettings = Field(
        default_factory=BaseModelSettings, description="the model SFT starts from"
    )
    tokenization: Tokenization = Field(default_factory=Tokenization, description="truncation")
    sft: SFTSettings = Field(default_factory=SFTSettings, description="supervised finetuning")
    reference: ReferenceSettings = Field(
        default_factory=ReferenceSettings, description="reference log-probs"
    )
    dpo: DPOSettings = Field(default_factory=DPOSettings, description="preference optimisation")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="evaluation")
    reproducibility: Reproducibility = Field(
        default_factory=Reproducibility, description="repeatability of GPU runs"
    )
    resources: Resources = Field(default_factory=Resources, description="scheduler requests")
    container: ContainerSettings = Field(
        default_factory=ContainerSettings, description="the GPU rules' image"
    )
    crate: CrateSettings = Field(
        default_factory=CrateSettings, description="who the provenance crate credits"
    )
    amberchat: AmberChatSettings = Field(
        default_factory=AmberChatSettings,
        description="Amber -> AmberChat: instruction finetuning and its evaluation",
    )
    experiments: dict[ExperimentName, Experiment] = Field(
        default_factory=dict,
        description="named DPO variants sharing everything upstream: name -> {dpo: ..., eval: ...}",
    )

    @model_validator(mode="after")
    def _settings_agree(self) -> Config:
        """Each problem as its own error at the key it names (see `conflicts`)."""
        problems = conflicts(self)
        if problems:
            raise ValidationError.from_exception_data(
                "Config",
                [
                    {
                        "type": PydanticCustomError(CONFLICT, "{message}", {"message": message}),
                        "loc": key,
                        "input": value,
                    }
                    for key, value, message in problems
                ],
            )
        return self
