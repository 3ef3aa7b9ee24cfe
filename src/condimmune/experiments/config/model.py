"""The deep ``model`` section: the backbone and where its weights come from."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator

from condimmune.experiments.config.fields import WHERE_NOT_WHAT, Choice, _Schema


class ModelConfig(_Schema):
    """The deep backbone (:mod:`condimmune.deep.backbones`) and where its weights come from."""

    _prefix: ClassVar[str] = "model"

    backbone: Choice = Field(
        default="small-cnn", description="a condimmune.deep.backbones.Backbone"
    )
    weights: str | None = Field(
        default=None,
        description="a local safetensors file or torch state_dict; 'imagenet' = the installed "
        "ImageNet checkpoint (mobilenet-v2); None = seeded random init",
    )
    image_size: int = Field(default=28, ge=4, le=1024, description="input side in pixels, 4–1024")
    trainable_blocks: int = Field(
        default=2,
        ge=0,
        le=17,
        description="mobilenet-v2: inverted-residual blocks trained (plus the final conv), 0–17",
    )
    cache_prefix: bool = Field(
        default=False,
        description="run the frozen prefix once per image (turns training augmentation off)",
    )
    cache_dir: str | None = Field(
        default=None,
        description="weights and prefix cache; None = $CONDIMMUNE_CACHE_DIR or "
        "$XDG_CACHE_HOME/condimmune (~/.cache/condimmune)",
        json_schema_extra=WHERE_NOT_WHAT,
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from condimmune.core._choices import parse_choice
        from condimmune.deep.backbones import Backbone

        return parse_choice(Backbone, value, "model.backbone").value

    @model_validator(mode="after")
    def _blocks_of_mobilenet(self) -> Self:
        default = type(self).model_fields["trainable_blocks"].default
        if self.backbone != "mobilenet-v2" and self.trainable_blocks != default:
            raise ValueError(
                f"model.trainable_blocks is read by backbone mobilenet-v2 only, not {self.backbone}"
            )
        if self.weights == "imagenet" and self.backbone != "mobilenet-v2":
            raise ValueError(
                "model.weights=imagenet names the installed mobilenet-v2 checkpoint; give "
                f"{self.backbone} a weights file"
            )
        return self
