"""The inference configuration of an MR-HuBERT checkpoint, read from fairseq's ``cfg["model"]``/``cfg["task"]``.

fairseq stores every field of its ``MultiresHubertConfig`` dataclass in the checkpoint; older or hand-written cfgs
may omit some, so missing fields take fairseq's dataclass defaults (:data:`FAIRSEQ_MODEL_DEFAULTS`) and fields that
only matter to pre-training (masking, dropout, loss options: :data:`FAIRSEQ_PRETRAINING_DEFAULTS`, shared with the
HuBERT cfg builders) are ignored. Values arrive as fairseq wrote them:
``encoder_layers`` may be the string ``"2"`` (the dataclass default), ``override_encoder_layers`` is a string like
``"[3,2,2,2,3]"``, ``conv_feature_layers`` a Python-like expression; all are parsed without ``eval``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from upstream_mrhubert.audio import SAMPLE_RATE, receptive_field
from upstream_mrhubert.checkpoints.errors import CheckpointError
from upstream_mrhubert.errors import UsageError

# fairseq's default waveform CNN (every released base and large model): 7 layers, 20 ms frames.
DEFAULT_CONV_FEATURE_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"

# Fields of fairseq's HubertConfig that only pre-training reads (masking, dropout, the prediction heads' options,
# loss temperature), with the dataclass defaults. Every HuBERT-family checkpoint's cfg["model"] carries them; the
# inference network ignores them. Builders of fairseq-style cfgs start from this mapping and override the values
# their recipe changes (the released base recipes use mask_prob 0.8 and feature_grad_mult 0.1, for instance).
# ``label_rate`` has no default in fairseq (interpolated from the task); 50 Hz is every released model's rate.
FAIRSEQ_PRETRAINING_DEFAULTS: dict[str, Any] = {
    "label_rate": 50.0,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "final_dim": 0,
    "untie_final_proj": False,
    "logit_temp": 0.1,
    "target_glu": False,
    "feature_grad_mult": 1.0,
    "mask_length": 10,
    "mask_prob": 0.65,
    "mask_selection": "static",
    "mask_other": 0.0,
    "no_mask_overlap": False,
    "mask_min_space": 1,
    "mask_channel_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_selection": "static",
    "mask_channel_other": 0.0,
    "no_mask_channel_overlap": False,
    "mask_channel_min_space": 1,
    "latent_temp": [2.0, 0.5, 0.999995],
    "skip_masked": False,
    "skip_nomask": False,
    "checkpoint_activations": False,
}

# The same for fairseq's MultiresHubertConfig: HuBERT's fields plus its target/prediction-head options, and
# untied per-resolution projections by default.
FAIRSEQ_MR_PRETRAINING_DEFAULTS: dict[str, Any] = {
    **FAIRSEQ_PRETRAINING_DEFAULTS,
    "untie_final_proj": True,
    "use_single_target": False,
    "use_single_prediction": False,
    "use_multi_stream": False,
}

# fairseq's ``label_rate_ratios`` (model and task) has no default (MISSING); this is the two-resolution layout of
# the released base model: one (upsample, downsample) pair.
BASE_LABEL_RATE_RATIOS = (1, 2)

# Every field of fairseq's MultiresHubertConfig with its dataclass default (fairseq/models/multires_hubert):
# the pre-training-only ones above plus what the inference network reads.
FAIRSEQ_MODEL_DEFAULTS: dict[str, Any] = {
    "_name": "multires_hubert",
    **FAIRSEQ_MR_PRETRAINING_DEFAULTS,
    "label_rate_ratios": list(BASE_LABEL_RATE_RATIOS),
    "extractor_mode": "default",
    "encoder_layers": "2",
    "override_encoder_layers": "",
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "conv_adapator_kernal": 7,
    "use_plain_updownsample": False,
    "layer_norm_first": False,
    "conv_feature_layers": DEFAULT_CONV_FEATURE_LAYERS,
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "required_seq_len_multiple": 2,
    "depthwise_conv_kernel_size": 31,
    "attn_type": "",
    "pos_enc_type": "abs",
    "fp16": False,
}

# fairseq's MultiresHubertPretrainingConfig (the task section); only sample_rate and normalize matter here.
FAIRSEQ_HUBERT_TASK_DEFAULTS: dict[str, Any] = {
    "_name": "hubert_pretraining",
    "data": "",
    "labels": ["km"],
    "label_dir": None,
    "label_rate": 50.0,
    "sample_rate": SAMPLE_RATE,
    "normalize": False,
    "enable_padding": False,
    "max_keep_size": None,
    "max_sample_size": None,
    "min_sample_size": None,
    "single_target": False,
    "random_crop": True,
    "pad_audio": False,
}
FAIRSEQ_TASK_DEFAULTS: dict[str, Any] = {
    **FAIRSEQ_HUBERT_TASK_DEFAULTS,
    "_name": "multires_hubert_pretraining",
    "label_rate_ratios": list(BASE_LABEL_RATE_RATIOS),
}

ACTIVATIONS = ("gelu", "gelu_fast", "gelu_accurate", "relu", "tanh", "linear")


# Sane bounds on what a cfg may ask for, far above every released model (xlarge: 1280 wide, 5120 feed-forward,
# 16 heads), checked before anything is built: a few bytes of cfg must not make the loader allocate gigabytes or
# loop for minutes. (config field, fairseq's cfg name, least, most)
MAX_CONV_LAYERS = 64
SANE_BOUNDS: tuple[tuple[str, str, int, int], ...] = (
    ("embed_dim", "encoder_embed_dim", 1, 16_384),
    ("ffn_dim", "encoder_ffn_embed_dim", 1, 65_536),
    ("num_heads", "encoder_attention_heads", 1, 1_024),
    ("conv_pos", "conv_pos", 1, 4_096),
    ("conv_pos_groups", "conv_pos_groups", 1, 16_384),
    ("sampler_kernel_size", "conv_adapator_kernal", 1, 4_096),
    ("required_seq_len_multiple", "required_seq_len_multiple", 1, 4_096),
    ("sample_rate", "sample_rate", 1_000, 384_000),
)
MAX_LAYERS_PER_BLOCK = 256
MAX_SAMPLING_LEVELS = 16
MAX_SAMPLING_RATIO = 64
MAX_CONV_DIM, MAX_CONV_KERNEL, MAX_CONV_STRIDE = 16_384, 4_096, 4_096


def _check_range(cfg_name: str, value: int, least: int, most: int) -> None:
    if not least <= value <= most:
        raise CheckpointError(f"model config {cfg_name}={value} is out of range: it must be {least}..{most}")


def check_size_bounds(model_cfg: Mapping[str, Any]) -> None:
    """The sizes in a fairseq model cfg (HuBERT's or MR-HuBERT's field names) within :data:`SANE_BOUNDS`, before a
    network is built from it (the HuBERT baseline calls this; MR-HuBERT's :meth:`MultiresHubertConfig.validate`
    applies the same bounds)."""
    for _, cfg_name, least, most in SANE_BOUNDS:
        if model_cfg.get(cfg_name) is not None:
            _check_range(cfg_name, _as_int(model_cfg[cfg_name], cfg_name), least, most)
    if model_cfg.get("encoder_layers") is not None:
        _check_range("encoder_layers", _as_int(model_cfg["encoder_layers"], "encoder_layers"), 0, MAX_LAYERS_PER_BLOCK)


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, without eval.

    Only list/tuple literals of integers, ``+`` between lists and ``*`` by an integer are accepted.
    """

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Tuple):
            return tuple(evaluate(element) for element in node.elts)
        if isinstance(node, ast.List):
            return [evaluate(element) for element in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return evaluate(node.left) + evaluate(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = evaluate(node.left), evaluate(node.right)
            repeats = right if isinstance(left, list) else left
            if isinstance(repeats, int) and repeats > MAX_CONV_LAYERS:  # checked before the list is made
                raise UsageError(f"repeats a layer {repeats} times; at most {MAX_CONV_LAYERS} layers are accepted")
            return left * right
        raise UsageError(f"unsupported element {ast.dump(node)}")

    try:
        if len(spec) > 10_000:
            raise UsageError(f"{len(spec)} characters long")
        layers = evaluate(ast.parse(spec, mode="eval"))
        if len(layers) > MAX_CONV_LAYERS:
            raise UsageError(f"{len(layers)} layers; at most {MAX_CONV_LAYERS} are accepted")
        parsed = [tuple(int(value) for value in layer) for layer in layers]
    except (SyntaxError, ValueError, TypeError) as error:
        raise CheckpointError(f"cannot read conv_feature_layers {spec!r}: {error}") from None
    if not parsed or any(len(layer) != 3 for layer in parsed):
        raise CheckpointError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)")
    return parsed  # type: ignore[return-value]


# The shortest input that gives the standard waveform CNN one output frame (400 samples, 25 ms at 16 kHz).
MIN_SAMPLES = receptive_field(parse_conv_feature_layers(DEFAULT_CONV_FEATURE_LAYERS))


def parse_int_list(value: Any, field_name: str) -> tuple[int, ...]:
    """A list of integers given as a list/tuple or as its text (``"[1, 2]"``), parsed without eval."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            raise CheckpointError(f"model config {field_name}={value!r} is not a list of integers") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        numbers = tuple(int(item) for item in value)
    except (TypeError, ValueError):
        raise CheckpointError(f"model config {field_name}={value!r} is not a list of integers") from None
    if any(isinstance(item, bool) or int(item) != item for item in value):
        raise CheckpointError(f"model config {field_name}={value!r} is not a list of integers")
    return numbers


def _as_bool(value: Any, field_name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CheckpointError(f"config field {field_name}={value!r} is not a boolean")


def _as_int(value: Any, field_name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"model config {field_name}={value!r} is not an integer") from None
    if isinstance(value, float) and value != number:
        raise CheckpointError(f"model config {field_name}={value!r} is not an integer")
    return number


def block_layer_counts(encoder_layers: Any, override_encoder_layers: Any, *, levels: int) -> tuple[int, ...]:
    """Transformer layers per block in execution order (encoders..., middle, decoders...), by fairseq's rule.

    With ``override_encoder_layers`` (odd length ``2 * levels + 1``, e.g. ``"[3,2,2,2,3]"``) encoders[i] get ov[i],
    the middle ov[levels] and decoders[i] ov[len-1-i] (reversed; symmetric configurations are unaffected);
    otherwise every block has ``encoder_layers``.
    """
    override = parse_int_list(override_encoder_layers or "", "override_encoder_layers")
    if not override:
        return (_as_int(encoder_layers, "encoder_layers"),) * (2 * levels + 1)
    if len(override) != 2 * levels + 1:
        raise CheckpointError(
            f"model config override_encoder_layers={list(override)} has {len(override)} entries, but "
            f"{levels} sampling level(s) in label_rate_ratios need {2 * levels + 1}"
        )
    encoders = override[:levels]
    decoders = tuple(override[len(override) - 1 - i] for i in range(levels))
    return (*encoders, override[levels], *decoders)


def layer_counts_of(model_cfg: Mapping[str, Any]) -> list[int]:
    """:func:`block_layer_counts` of a fairseq ``cfg["model"]`` (its sampling levels from ``label_rate_ratios``)."""
    levels = len(parse_int_list(model_cfg.get("label_rate_ratios") or [], "label_rate_ratios")) // 2
    counts = block_layer_counts(
        model_cfg.get("encoder_layers", 12), model_cfg.get("override_encoder_layers"), levels=levels
    )
    return list(counts)


@dataclass(frozen=True)
class MultiresHubertConfig:
    """Everything the inference network depends on.

    ``label_rate_ratios`` holds (upsample, downsample) pairs, one per sampling level: ((1, 2),) is 20/40 ms,
    ((1, 2), (1, 2)) is 20/40/80 ms, ((1, 1),) keeps a single 20 ms rate with the three-block layout, () is a
    single block. ``layer_counts`` gives the transformer layers per block in execution order (encoders, middle,
    decoders) after fairseq's ``override_encoder_layers`` rule.
    """

    label_rate_ratios: tuple[tuple[int, int], ...] = ((1, 2),)
    layer_counts: tuple[int, ...] = (2, 2, 2)
    extractor_mode: str = "default"  # "default": GroupNorm in conv 0 only; "layer_norm": LayerNorm in every conv
    conv_feature_layers: tuple[tuple[int, int, int], ...] = tuple(
        parse_conv_feature_layers(DEFAULT_CONV_FEATURE_LAYERS)
    )
    conv_bias: bool = False
    embed_dim: int = 768
    ffn_dim: int = 3072
    num_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False  # pre-LN transformer layers (large models)
    conv_pos: int = 128  # kernel of the positional convolution (first block only)
    conv_pos_groups: int = 16
    use_plain_updownsample: bool = False  # ConvDownsampler/ConvUpsampler instead of ConvAdapter
    sampler_kernel_size: int = 7  # fairseq's "conv_adapator_kernal"; the weights' shape wins at load time
    required_seq_len_multiple: int = 2
    normalize: bool = False  # task option: layer-norm each waveform before the CNN
    sample_rate: int = SAMPLE_RATE

    @classmethod
    def from_fairseq(
        cls, model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any] | None = None
    ) -> MultiresHubertConfig:
        """Read fairseq's cfg sections; unknown keys are ignored, missing ones take fairseq's defaults."""
        cfg = {**FAIRSEQ_MODEL_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
        task = {**FAIRSEQ_TASK_DEFAULTS, **{k: v for k, v in (task_cfg or {}).items() if v is not None}}
        if "label_rate_ratios" not in model_cfg and "label_rate_ratios" in (task_cfg or {}):
            cfg["label_rate_ratios"] = task["label_rate_ratios"]

        if cfg["layer_type"] != "transformer":
            raise CheckpointError(f"layer_type {cfg['layer_type']!r} is not supported (only 'transformer')")
        if int(cfg.get("pos_conv_depth", 1)) != 1:
            raise CheckpointError(f"pos_conv_depth {cfg['pos_conv_depth']} is not supported (only 1)")
        if cfg["activation_fn"] not in ACTIVATIONS:
            raise CheckpointError(f"activation_fn {cfg['activation_fn']!r} is not supported; one of {ACTIVATIONS}")
        if cfg["extractor_mode"] not in ("default", "layer_norm"):
            raise CheckpointError(f"extractor_mode {cfg['extractor_mode']!r} is not 'default' or 'layer_norm'")

        flat_ratios = parse_int_list(cfg["label_rate_ratios"], "label_rate_ratios")
        if len(flat_ratios) % 2 or any(r <= 0 for r in flat_ratios):
            raise CheckpointError(
                f"model config label_rate_ratios={list(flat_ratios)} must be (upsample, downsample) pairs of "
                "positive integers, e.g. [1, 2] for 20/40 ms or [1, 2, 1, 2] for 20/40/80 ms"
            )
        ratios = tuple(zip(flat_ratios[0::2], flat_ratios[1::2], strict=False))
        layer_counts = block_layer_counts(cfg["encoder_layers"], cfg["override_encoder_layers"], levels=len(ratios))

        config = cls(
            label_rate_ratios=ratios,
            layer_counts=layer_counts,
            extractor_mode=str(cfg["extractor_mode"]),
            conv_feature_layers=tuple(parse_conv_feature_layers(str(cfg["conv_feature_layers"]))),
            conv_bias=_as_bool(cfg["conv_bias"], "conv_bias"),
            embed_dim=_as_int(cfg["encoder_embed_dim"], "encoder_embed_dim"),
            ffn_dim=_as_int(cfg["encoder_ffn_embed_dim"], "encoder_ffn_embed_dim"),
            num_heads=_as_int(cfg["encoder_attention_heads"], "encoder_attention_heads"),
            activation_fn=str(cfg["activation_fn"]),
            layer_norm_first=_as_bool(cfg["layer_norm_first"], "layer_norm_first"),
            conv_pos=_as_int(cfg["conv_pos"], "conv_pos"),
            conv_pos_groups=_as_int(cfg["conv_pos_groups"], "conv_pos_groups"),
            use_plain_updownsample=_as_bool(cfg["use_plain_updownsample"], "use_plain_updownsample"),
            sampler_kernel_size=_as_int(cfg["conv_adapator_kernal"], "conv_adapator_kernal"),
            required_seq_len_multiple=max(1, _as_int(cfg["required_seq_len_multiple"], "required_seq_len_multiple")),
            normalize=_as_bool(task["normalize"], "normalize"),
            sample_rate=_as_int(task["sample_rate"], "sample_rate"),
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Reject configurations the network cannot be built from, naming the field: sizes out of
        :data:`SANE_BOUNDS` first (zero, negative or absurd), then the divisibility rules."""
        for name, cfg_name, least, most in SANE_BOUNDS:
            _check_range(cfg_name, getattr(self, name), least, most)
        if any(not 0 <= count <= MAX_LAYERS_PER_BLOCK for count in self.layer_counts):
            raise CheckpointError(
                f"model config encoder_layers/override_encoder_layers give the blocks {list(self.layer_counts)} "
                f"layers; each block takes 0..{MAX_LAYERS_PER_BLOCK}"
            )
        if len(self.label_rate_ratios) > MAX_SAMPLING_LEVELS or any(
            ratio > MAX_SAMPLING_RATIO for pair in self.label_rate_ratios for ratio in pair
        ):
            raise CheckpointError(
                f"model config label_rate_ratios={[list(p) for p in self.label_rate_ratios]} is out of range: at most "
                f"{MAX_SAMPLING_LEVELS} levels, ratios up to {MAX_SAMPLING_RATIO}"
            )
        for index, (dim, kernel, stride) in enumerate(self.conv_feature_layers):
            if not (1 <= dim <= MAX_CONV_DIM and 1 <= kernel <= MAX_CONV_KERNEL and 1 <= stride <= MAX_CONV_STRIDE):
                raise CheckpointError(
                    f"model config conv_feature_layers layer {index} ({dim}, {kernel}, {stride}) is out of range: "
                    f"dim 1..{MAX_CONV_DIM}, kernel 1..{MAX_CONV_KERNEL}, stride 1..{MAX_CONV_STRIDE}"
                )
        if self.embed_dim % self.num_heads:
            raise CheckpointError(
                f"encoder_embed_dim={self.embed_dim} is not divisible by encoder_attention_heads={self.num_heads}"
            )
        if self.embed_dim % self.conv_pos_groups:
            raise CheckpointError(
                f"encoder_embed_dim={self.embed_dim} is not divisible by conv_pos_groups={self.conv_pos_groups}"
            )
        if any(count < 0 for count in self.layer_counts):
            raise CheckpointError(f"negative layer count in {list(self.layer_counts)}")
        if self.use_plain_updownsample:
            for up, down in self.label_rate_ratios:
                if up != 1 and down != 1:
                    raise CheckpointError(
                        f"use_plain_updownsample needs ratios with upsample 1 (got ({up}, {down})): plain samplers "
                        "only downsample on the way down and only upsample on the way up"
                    )

    @property
    def num_levels(self) -> int:
        """Sampling levels: resolutions - 1 (the number of encoder and of decoder blocks)."""
        return len(self.label_rate_ratios)

    @property
    def num_resolutions(self) -> int:
        return self.num_levels + 1

    @property
    def frame_stride(self) -> int:
        """Samples per CNN output frame (320 = 20 ms at 16 kHz for the standard CNN)."""
        return math.prod(stride for _, _, stride in self.conv_feature_layers)

    @property
    def resolution_strides(self) -> tuple[int, ...]:
        """Samples per frame at each resolution, highest first (fairseq's ``feature_ds_rates``: 320, 640, 1280)."""
        strides = [self.frame_stride]
        for up, down in self.label_rate_ratios:
            strides.append(strides[-1] * down // up)
        return tuple(strides)

    @property
    def encoder_layer_counts(self) -> tuple[int, ...]:
        return self.layer_counts[: self.num_levels]

    @property
    def middle_layer_count(self) -> int:
        return self.layer_counts[self.num_levels]

    @property
    def decoder_layer_counts(self) -> tuple[int, ...]:
        return self.layer_counts[self.num_levels + 1 :]

    @property
    def conv_channels(self) -> int:
        """Channels of the last CNN layer (fairseq's ``embed``)."""
        return self.conv_feature_layers[-1][0]


def shape_mismatches(found: Iterable[tuple[str, str, Any]], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """The mis-shaped weights of a checkpoint, described for an error message; None when every shape matches.

    Args:
        found: ``(key as the file names it, key in expected, tensor)`` for each weight of the file; keys that
            ``expected`` lacks are left to the strict load.
        expected: the shape of every weight the configuration builds.

    Returns:
        ``"key: (shape) in the file, (shape) expected"`` for the first six mismatches, joined, with the count of
        the rest.
    """
    wrong = []
    for shown, name, value in found:
        shape = tuple(getattr(value, "shape", ()))
        if name in expected and shape != expected[name]:
            wrong.append(f"{shown}: {shape} in the file, {expected[name]} expected")
    if not wrong:
        return None
    return ", ".join(wrong[:6]) + (f" and {len(wrong) - 6} more" if len(wrong) > 6 else "")
