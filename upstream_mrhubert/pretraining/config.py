"""The pretraining recipe: one YAML file, read into typed sections, with the paper's ablation switches.

A recipe has six sections (every field optional; defaults are the toy size of arXiv 2410.23955 Appendix C with
fairseq's MR-HuBERT base recipe values elsewhere):

``model``     width, layers per block, the number of resolutions and the ablation switches ``downsample``
              (False: every sampling ratio is 1, the B5-a layout) and ``residual`` (``post``: fairseq's residual after
              each decoder; ``pre``: before it, Appendix C), CNN layout, dropout.
``loss``      ``aux_loss`` (False: one prediction head at 20 ms, fairseq's ``use_single_prediction``: B4-a),
              ``logit_temp``, the masked/unmasked weights and the feature penalty weight.
``masking``   fairseq's ``mask_prob`` and ``mask_length`` (see :mod:`.masking`).
``targets``   ``mfcc`` (iteration 1) or ``layer`` (iteration 2: a named layer of a previous checkpoint), clusters.
``data``      crop length, batch size, the corpus splits used for training and validation.
``optim``     AdamW, fairseq's warmup + polynomial decay, clipping, accumulation, precision.
``run``       seed and the logging / validation / checkpoint intervals.

``layers`` follows fairseq's ``override_encoder_layers`` order (encoders, middle, decoders listed from the
highest-resolution decoder back to the first), so the paper's "3-2-2-2-3" is written ``[3, 2, 2, 2, 3]``.

:func:`PretrainConfig.fairseq_cfg` turns a recipe into the ``cfg["model"]``/``cfg["task"]`` sections a fairseq
MR-HuBERT checkpoint carries, so every checkpoint written here is read by the same code as a released one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.config import FAIRSEQ_MODEL_DEFAULTS, FAIRSEQ_TASK_DEFAULTS, MIN_SAMPLES, MultiresHubertConfig
from upstream_mrhubert.errors import MrsuperbError
from upstream_mrhubert.precision import PRECISIONS

TOY_CONV_FEATURE_LAYERS = "[(128,10,5)] + [(128,3,2)] * 4 + [(128,2,2)] * 2"  # fairseq's layout, 128 channels
RESIDUAL_CHOICES = ("post", "pre")
TARGET_KINDS = ("mfcc", "layer")


class RecipeError(MrsuperbError, ValueError):
    """A pretraining recipe that cannot be used; the message names the file and the field."""


class PretrainRunError(MrsuperbError, ValueError):
    """A run folder, resume state or target file that cannot be used; the message names the file."""


class PretrainDiverged(MrsuperbError, RuntimeError):
    """Training reached a non-finite loss, gradient or weight; the last finite checkpoint is kept."""


@dataclass(frozen=True)
class Rule:
    """What a recipe field must hold: ``holds(value)``, and the words of the error when it does not."""

    holds: Callable[[Any], bool]
    says: str


def at_least(least: int, why: str = "") -> Rule:
    return Rule(lambda value: value >= least, f"must be at least {least}{why}")


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(lambda value: value in choices, f"must be one of {choices}")


FRACTION = Rule(lambda value: 0.0 <= value < 1.0, "must be in [0, 1)")
NON_NEGATIVE = Rule(lambda value: math.isfinite(value) and value >= 0, "must be a finite number >= 0")
POSITIVE = Rule(lambda value: math.isfinite(value) and value > 0, "must be a finite number > 0")


def ruled(default: Any, rule: Rule) -> Any:
    """A section field whose values must hold ``rule`` (checked by :meth:`PretrainConfig.validate`)."""
    return field(default=default, metadata={"rule": rule})


def _check_rules(section: Any, name: str, where: str) -> None:
    for item in dataclasses.fields(section):
        rule, value = item.metadata.get("rule"), getattr(section, item.name)
        if rule is not None and not rule.holds(value):
            shown = repr(value) if isinstance(value, str) else value
            raise RecipeError(f"{where}: {name}.{item.name}={shown} {rule.says}")


@dataclass(frozen=True)
class ModelSection:
    """The network. ``layers`` is in fairseq's ``override_encoder_layers`` order (2 * (resolutions - 1) + 1 entries)."""

    embed_dim: int = 192
    ffn_dim: int = 768
    num_heads: int = 12
    layers: tuple[int, ...] = (2, 2, 2)
    resolutions: int = ruled(2, at_least(2, "; MR-HuBERT needs 2 or more"))
    downsample: bool = True
    residual: str = ruled("post", one_of(RESIDUAL_CHOICES))
    conv_feature_layers: str = TOY_CONV_FEATURE_LAYERS
    conv_pos: int = 128
    conv_pos_groups: int = 16
    sampler_kernel_size: int = 1
    final_dim: int = 64
    dropout: float = ruled(0.1, FRACTION)
    attention_dropout: float = ruled(0.1, FRACTION)
    activation_dropout: float = ruled(0.0, FRACTION)
    encoder_layerdrop: float = ruled(0.05, FRACTION)
    dropout_input: float = ruled(0.1, FRACTION)
    dropout_features: float = ruled(0.1, FRACTION)
    feature_grad_mult: float = 0.1

    def validate(self, where: str) -> None:
        if len(self.layers) != 2 * self.resolutions - 1:
            raise RecipeError(
                f"{where}: model.layers={list(self.layers)} has {len(self.layers)} entries; {self.resolutions} "
                f"resolutions need {2 * self.resolutions - 1} (encoders, middle, decoders), e.g. [2, 2, 2] or [3, 2, 2, 2, 3]"
            )

    @property
    def label_rate_ratios(self) -> list[int]:
        """fairseq's flat (upsample, downsample) list: [1, 2] per level, or [1, 1] per level without downsampling."""
        return [1, 2 if self.downsample else 1] * (self.resolutions - 1)


@dataclass(frozen=True)
class LossSection:
    """fairseq's ``hubert`` criterion and the model's prediction-head options. ``logit_temp`` divides the cosines:
    0 makes every loss NaN, a negative one inverts the ranking."""

    aux_loss: bool = True
    logit_temp: float = ruled(0.1, POSITIVE)
    pred_masked_weight: float = ruled(1.0, NON_NEGATIVE)
    pred_nomask_weight: float = ruled(0.0, NON_NEGATIVE)
    feature_pen_weight: float = ruled(10.0, NON_NEGATIVE)


@dataclass(frozen=True)
class MaskingSection:
    mask_prob: float = ruled(0.8, Rule(lambda value: 0.0 < value <= 1.0, "must be in (0, 1]"))
    mask_length: int = ruled(10, at_least(1))
    min_masks: int = 2


@dataclass(frozen=True)
class TargetsSection:
    """``kind: mfcc``: k-means on 39-dim MFCCs (HuBERT iteration 1). ``kind: layer``: k-means on ``layer`` (a state
    name such as ``T4``) of ``checkpoint`` (HuBERT iteration 2)."""

    kind: str = ruled("mfcc", one_of(TARGET_KINDS))
    clusters: int = ruled(100, at_least(2))
    checkpoint: str | None = None
    layer: str | None = None
    fit_frames: int = 100_000
    batch_size: int = ruled(10_000, at_least(1, " (k-means' mini-batch)"))

    def validate(self, where: str) -> None:
        if self.kind == "layer" and (not self.checkpoint or not self.layer):
            raise RecipeError(
                f"{where}: targets.kind=layer needs targets.checkpoint (a previous iteration's checkpoint_best.pt) "
                "and targets.layer (a state name such as T4)"
            )
        if self.fit_frames < self.clusters:
            raise RecipeError(
                f"{where}: targets.fit_frames={self.fit_frames} must be at least targets.clusters={self.clusters} "
                "(k-means needs a frame per cluster; the default is 100000)"
            )


@dataclass(frozen=True)
class DataSection:
    """Training crops: like fairseq's task (``max_sample_size``, ``random_crop``), every utterance of a batch is
    cropped to the batch's shortest (at most ``crop_seconds``), so no padding enters training."""

    crop_seconds: float = 2.0
    min_seconds: float = 1.0
    batch_size: int = ruled(8, at_least(1))
    train_splits: tuple[str, ...] = ("train-clean-100",)
    valid_splits: tuple[str, ...] = ("dev-clean",)

    def validate(self, where: str) -> None:
        if not (math.isfinite(self.min_seconds) and self.min_seconds * SAMPLE_RATE >= MIN_SAMPLES):
            raise RecipeError(
                f"{where}: data.min_seconds={self.min_seconds} must be at least {MIN_SAMPLES / SAMPLE_RATE} s (the "
                f"CNN's first window, {MIN_SAMPLES} samples): shorter utterances give no frame"
            )
        if not (math.isfinite(self.crop_seconds) and self.crop_seconds >= self.min_seconds):
            raise RecipeError(
                f"{where}: data.crop_seconds={self.crop_seconds} must be at least data.min_seconds={self.min_seconds}"
            )


@dataclass(frozen=True)
class OptimSection:
    """AdamW with fairseq's ``polynomial_decay`` schedule (linear warmup to ``lr``, then decay to ``end_lr``)."""

    lr: float = ruled(5e-4, POSITIVE)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = ruled(1e-6, NON_NEGATIVE)
    weight_decay: float = ruled(0.01, NON_NEGATIVE)
    warmup_steps: int = ruled(100, at_least(0))
    max_steps: int = ruled(1000, at_least(1))
    end_lr: float = ruled(0.0, NON_NEGATIVE)
    power: float = ruled(1.0, NON_NEGATIVE)
    clip_norm: float = ruled(10.0, POSITIVE)
    accumulate: int = ruled(1, at_least(1))
    precision: str = ruled("fp32", one_of(tuple(PRECISIONS)))


@dataclass(frozen=True)
class RunSection:
    seed: int = ruled(0, at_least(0))
    log_every: int = ruled(10, at_least(1))
    valid_every: int = ruled(100, at_least(1))
    save_every: int = ruled(100, at_least(1))
    valid_batches: int = ruled(8, at_least(1, " (a validation from no batches has no loss)"))


@dataclass(frozen=True)
class PretrainConfig:
    """A whole recipe. Build it with :func:`load_recipe` (YAML) or :meth:`from_mapping`."""

    model: ModelSection = field(default_factory=ModelSection)
    loss: LossSection = field(default_factory=LossSection)
    masking: MaskingSection = field(default_factory=MaskingSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "the recipe") -> PretrainConfig:
        """Read nested mappings (the YAML's sections); unknown sections or fields are errors naming them."""
        if not isinstance(raw, Mapping):
            raise RecipeError(f"{where}: expected a mapping of sections, got {type(raw).__name__}")
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise RecipeError(f"{where}: unknown section(s) {unknown}; known: {sorted(sections)}")
        built: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            section_type = _SECTION_TYPES[f.name]
            built[f.name] = _build_section(section_type, raw.get(f.name) or {}, f"{where}: {f.name}")
        config = cls(**built)
        config.validate(where)
        return config

    def validate(self, where: str = "the recipe") -> None:
        """Every field's rule, then what a section's fields must hold together (each section's ``validate``)."""
        for item in dataclasses.fields(self):
            section = getattr(self, item.name)
            _check_rules(section, item.name, where)
            if hasattr(section, "validate"):
                section.validate(where)
        try:
            self.network_config()
        except ValueError as error:
            raise RecipeError(f"{where}: {error}") from None

    def with_overrides(self, **sections: Mapping[str, Any]) -> PretrainConfig:
        """A copy with some fields replaced, e.g. ``with_overrides(optim={"max_steps": 10})``."""
        changes = {name: dataclasses.replace(getattr(self, name), **dict(values)) for name, values in sections.items()}
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able sections (tuples as lists), as recorded in ``results.json``."""
        return _plain(dataclasses.asdict(self))

    # ------------------------------------------------------------------------------------------------------------
    # What the rest of the code reads

    @property
    def pre_residual(self) -> bool:
        return self.model.residual == "pre"

    @property
    def num_heads_of_loss(self) -> int:
        """Prediction heads: one per resolution with the auxiliary loss, else one (20 ms)."""
        return self.model.resolutions if self.loss.aux_loss else 1

    def fairseq_cfg(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """fairseq's ``cfg["model"]`` and ``cfg["task"]`` for this recipe (every dataclass field present).

        Targets follow the released base recipe: one 50 Hz label stream (``use_single_target``) that the model
        sub-samples for each lower resolution. ``pre_residual`` is not a fairseq field; it is recorded so that a
        reader knows to load the checkpoint with the upstream option ``pre_residual: true``.
        """
        m, loss, masking = self.model, self.loss, self.masking
        model_cfg: dict[str, Any] = {
            **FAIRSEQ_MODEL_DEFAULTS,
            "label_rate": 50.0,
            "label_rate_ratios": m.label_rate_ratios,
            "encoder_layers": m.layers[0],
            "override_encoder_layers": "[" + ",".join(str(n) for n in m.layers) + "]",
            "encoder_embed_dim": m.embed_dim,
            "encoder_ffn_embed_dim": m.ffn_dim,
            "encoder_attention_heads": m.num_heads,
            "conv_feature_layers": m.conv_feature_layers,
            "conv_pos": m.conv_pos,
            "conv_pos_groups": m.conv_pos_groups,
            "conv_adapator_kernal": m.sampler_kernel_size,
            "final_dim": m.final_dim,
            "dropout": m.dropout,
            "attention_dropout": m.attention_dropout,
            "activation_dropout": m.activation_dropout,
            "encoder_layerdrop": m.encoder_layerdrop,
            "dropout_input": m.dropout_input,
            "dropout_features": m.dropout_features,
            "feature_grad_mult": m.feature_grad_mult,
            "logit_temp": loss.logit_temp,
            "mask_prob": masking.mask_prob,
            "mask_length": masking.mask_length,
            "use_single_target": True,
            "use_single_prediction": not loss.aux_loss,
            "untie_final_proj": True,
            "pre_residual": self.pre_residual,
        }
        task_cfg: dict[str, Any] = {
            **FAIRSEQ_TASK_DEFAULTS,
            "label_rate": 50.0,
            "label_rate_ratios": m.label_rate_ratios,
            "labels": ["km"],
            "max_sample_size": int(self.data.crop_seconds * SAMPLE_RATE),
            "min_sample_size": int(self.data.min_seconds * SAMPLE_RATE),
        }
        return model_cfg, task_cfg

    def network_config(self) -> MultiresHubertConfig:
        """The inference network's configuration, read from :meth:`fairseq_cfg` by the upstream's own parser."""
        model_cfg, task_cfg = self.fairseq_cfg()
        return MultiresHubertConfig.from_fairseq(model_cfg, task_cfg)


_SECTION_TYPES: dict[str, type] = {
    "model": ModelSection,
    "loss": LossSection,
    "masking": MaskingSection,
    "targets": TargetsSection,
    "data": DataSection,
    "optim": OptimSection,
    "run": RunSection,
}

_Section = TypeVar("_Section")


def _build_section(section_type: type[_Section], raw: Any, where: str) -> _Section:
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(section_type)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = fields[name].default
        values[name] = _coerce(value, default, f"{where}.{name}")
    return section_type(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check a YAML value against the field's default's type (None defaults accept strings)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"{where}={value!r} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}={value!r} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"{where}={value!r} must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}={value!r} must be a number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value:
            raise RecipeError(f"{where}={value!r} must be a non-empty list")
        items = [_coerce(item, default[0], f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(default[0], float) and len(items) != len(default):
            raise RecipeError(f"{where}={value!r} must have {len(default)} entries")
        return tuple(items)
    if value is not None and not isinstance(value, str):
        raise RecipeError(f"{where}={value!r} must be a string")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def load_recipe(path: str | os.PathLike[str]) -> PretrainConfig:
    """Read a recipe YAML file (see the module docstring); one clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; pass one of recipes/pretrain/*.yaml or your own copy")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    return PretrainConfig.from_mapping(raw, where=str(path))
