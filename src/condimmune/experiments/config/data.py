"""The ``data`` section of both families: where the rows and images come from and how many."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator

from condimmune.core._choices import parse_choice
from condimmune.deep.canvas import DIGIT_SIDE, HarmfulImages
from condimmune.experiments.config.fields import WHERE_NOT_WHAT, Choice, _Schema


# ----------------------------------------------------------------------------- linear
class DataConfig(_Schema):
    """Where the data comes from and how it is preprocessed (fitted on training rows only).

    ``pca_components``: project both tasks on the top principal components of their
    pooled training rows (0 = raw inputs). ``drop_collinear``: drop columns that are
    exact linear combinations of others (house price). See ``docs/theory.md``. Which keys
    each experiment reads: :mod:`condimmune.experiments.registry`.
    """

    _prefix: ClassVar[str] = "data"

    root: str | None = Field(
        default=None,
        description="mnist-pair: folder of MNIST IDX files (None = packaged subset); "
        "house-price: Kaggle's train.csv; not read by digits",
        json_schema_extra=WHERE_NOT_WHAT,
    )
    benign_digit: int = Field(default=1, description="digit 0–9 of the benign one-vs-rest task")
    harmful_digit: int = Field(
        default=7, description="digit 0–9 of the harmful task, different from benign_digit"
    )
    per_class: int = Field(
        default=300,
        ge=2,
        le=100_000,
        description="training positives (= negatives) per task, 2–100,000",
    )
    test_per_class: int = Field(
        default=100, ge=1, le=100_000, description="held-out positives per task, 1–100,000"
    )
    train_rows: int = Field(
        default=200,
        ge=2,
        le=1_000_000,
        description="house-price training rows per task, 2–1,000,000",
    )
    test_rows: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="house-price held-out rows per task, 1–1,000,000",
    )
    pca_components: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="principal components kept (0 = raw inputs), ≤ 100,000",
    )
    drop_collinear: bool = Field(default=False, description="drop exactly collinear input columns")

    @model_validator(mode="after")
    def _two_digits(self) -> Self:
        for key, digit in (
            ("data.benign_digit", self.benign_digit),
            ("data.harmful_digit", self.harmful_digit),
        ):
            if not 0 <= digit <= 9:
                raise ValueError(f"{key} must be a digit 0–9, got {digit}")
        if self.benign_digit == self.harmful_digit:
            raise ValueError(
                f"data.benign_digit and data.harmful_digit are both {self.benign_digit}; "
                "choose two different digits"
            )
        return self


# ------------------------------------------------------------------------------- deep
def _digit_group(text: str, key: str) -> set[int]:
    """Mirror of :func:`condimmune.deep.images.parse_digits` (without importing torch)."""
    digits = [int(c) for c in text if c in "0123456789"]
    if not digits or any(c not in "0123456789, " for c in text):
        raise ValueError(f"{key} must list digits, e.g. '01234' or '0,1,2', got {text!r}")
    if len(set(digits)) != len(digits):
        raise ValueError(f"{key} lists a digit twice: {text!r}")
    if len(digits) < 2:
        raise ValueError(f"{key} needs at least two digits (a classification task), got {text!r}")
    return set(digits)


class DeepDataConfig(_Schema):
    """Deep-experiment data. ``mnist-cnn``: the packaged MNIST subset (or IDX files in
    ``root``) split into two digit groups. ImageNet experiments: ``root`` is the ImageNet
    folder (pre-training / benign task), ``harmful_root`` the Cars or Country211 folder.
    ``mobilenet-fashion-mnist``: ``root`` the Fashion-MNIST IDX folder, ``harmful_root`` MNIST
    IDX files (None = the packaged subset)."""

    _prefix: ClassVar[str] = "data"

    root: str | None = Field(
        default=None,
        description="mnist-cnn: MNIST IDX folder (None = packaged); ImageNet folder; "
        "Fashion-MNIST IDX folder",
        json_schema_extra=WHERE_NOT_WHAT,
    )
    harmful_root: str | None = Field(
        default=None,
        description="imagenet-*: the Stanford Cars or Country211 folder; "
        "mobilenet-fashion-mnist: MNIST IDX folder (None = packaged subset); mnist-cnn with "
        "harmful_images=fashion-mnist: Fashion-MNIST IDX folder (None = Debian's)",
        json_schema_extra=WHERE_NOT_WHAT,
    )
    benign_digits: str = Field(
        default="01234", description="mnist-cnn: benign digit group, e.g. 01234"
    )
    harmful_digits: str = Field(
        default="56789",
        description="mnist-cnn: harmful digit group (with harmful_images=fashion-mnist: the "
        "Fashion-MNIST class indices 0–9)",
    )
    harmful_images: Choice = Field(
        default="mnist",
        description="mnist-cnn: where the harmful task's images come from: 'mnist' (the digits "
        "of root) or 'fashion-mnist' (garments from the IDX files in harmful_root; unset: "
        "Debian's dataset-fashion-mnist)",
    )
    train_per_class: int = Field(
        default=400, ge=1, le=100_000, description="mnist-cnn: training images per digit, 1–100,000"
    )
    test_per_class: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="mnist-cnn, mobilenet-fashion-mnist: held-out images per digit, 1–100,000",
    )
    defence_per_class: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="mnist-cnn, mobilenet-fashion-mnist: harmful images per digit that only "
        "immunization reads (the attacks never do), 0 = immunize on the attacks' training images",
    )
    canvas: int = Field(
        default=0,
        ge=0,
        le=256,
        description="mnist-cnn: each digit at a seeded random position on a canvas of this "
        "side (≥ 28; 0 = the 28 × 28 images as they are)",
    )
    clutter: int = Field(
        default=0,
        ge=0,
        le=64,
        description="mnist-cnn: 8 × 8 fragments of other digits scattered on each image "
        "(cluttered MNIST), 0–64",
    )
    max_train_images: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="imagenet-*, mobilenet-*: seeded subsample of each training split "
        "(0 = all), ≤ 10⁷",
    )
    max_test_images: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="imagenet-*: same for the test splits; mobilenet-*: the benign test set, ≤ 10⁷",
    )
    num_workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="data-loader processes, 0–256",
        json_schema_extra=WHERE_NOT_WHAT,
    )

    @field_validator("harmful_images")
    @classmethod
    def _known_images(cls, value: str) -> str:
        return parse_choice(HarmfulImages, value, "data.harmful_images").value

    @model_validator(mode="after")
    def _digit_groups(self) -> Self:
        benign = _digit_group(self.benign_digits, "data.benign_digits")
        harmful = _digit_group(self.harmful_digits, "data.harmful_digits")
        if benign & harmful and self.harmful_images == HarmfulImages.MNIST:
            raise ValueError(
                "data.benign_digits and data.harmful_digits overlap: "
                f"{sorted(benign & harmful)} in both"
            )
        if 0 < self.canvas < DIGIT_SIDE:
            raise ValueError(
                f"data.canvas={self.canvas} is smaller than a digit: give 0 (no canvas) or a "
                f"side of at least {DIGIT_SIDE}"
            )
        return self
