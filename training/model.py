"""The BigTime network: one U-Net encoder, two decoders (reflectance, shading) and an illumination-colour head.

`IntrinsicUNet(config).forward(srgb) -> (log_r, log_s, log_c)`
  srgb   (B, 3, H, W) float in [0, 1], gamma-encoded input; H and W multiples of 2**config.depth
  log_r  (B, 3, H, W) natural log of linear reflectance (albedo), up to a per-channel scale
  log_s  (B, 1, H, W) natural log of linear grey shading
  log_c  (B, 3)       natural log of the linear illumination colour, one RGB offset per image
  The image model the loss fits is  log I_linear = log_r + log_s + log_c  (training/loss.py).

Architecture (as the authors' pix2pix-style "multi U-Net", Li & Snavely CVPR 2018):
- encoder level k = 1..depth: [LeakyReLU 0.2 unless k = 1] Conv 4x4 stride 2 [BatchNorm unless k = 1 or k = depth];
  channels c_k = min(base_channels * 2**(k-1), max_channels); the input is srgb mapped to [-1, 1].
- each decoder level k = depth..1: ReLU, ConvTranspose 4x4 stride 2 (or, with `upsample="bilinear"`, a 2x
  bilinear upsampling then Conv 3x3, which avoids the transposed convolution's checkerboard) (input: the innermost features at k = depth,
  else the previous decoder output concatenated with the encoder skip e_k), BatchNorm unless k = 1; level 1
  outputs the log image (3 channels for reflectance, 1 for shading) with no activation.
- `input_skip=True` (not in the paper): decoder level 1 outputs `input_skip_channels` (8) features at full
  resolution (BatchNorm), then ReLU, concatenation with the network's input ([-1, 1] sRGB, 3 channels) and
  Conv 3x3 -> the log image. The paper's level 1 upsamples straight from half resolution (the encoder's first
  conv has stride 2), so no layer sees a full-resolution pixel; this one lets the output follow the photo's edges.
  With `input_skip_shading=False` only the reflectance decoder ends so; the shading decoder keeps the paper's
  level 1 (shading cannot copy the photo's full-resolution edges).
- colour head: global average pool of the innermost features -> Linear -> ReLU -> Linear -> 3 (absent with
  `color_head=False`: log_c = 0, grey shading only, the paper's ablation).
- `reflectance="image_ratio"` builds no reflectance decoder: log_r = log I_linear - log_s - log_c, with
  log I_linear = training.loss.log_linear_image(srgb, LOG_EPS) of the network's own input (float32). The per-image
  reconstruction then holds exactly and reflectance keeps every pixel of detail the image has; the other terms
  (consistency, reflectance and shading smoothness) act through the shading alone. "decoder" is the paper's
  and the authors' (a log-reflectance decoder beside the shading one).
Mixed precision: the output layers (each decoder's level 1, or its `_InputSkipOutput`, and the colour head) run
in float32 with autocast disabled (and cuDNN's TF32 off), on their input features cast to float32, so log_r,
log_s, log_c are float32 under bf16/fp16 autocast. bf16 keeps 8 significant bits: a log value near 2 is stored
in steps of 2^-6 = 0.016, coarser than the ~1e-3 neighbour differences of smooth shading that the smoothness terms
act on; the body of the network (everything before the output layers) still runs in the autocast dtype.
Presets: "paper" = 7 downsamplings, 64 base channels, 512 max (68.4M parameters, like the authors' ~69M; the
test prints the count); "small" = 5 downsamplings, 16 base channels, 128 max (1.7M, trains on a CPU); "medium" =
5 downsamplings, 24 base channels, 256 max (4.3M; about 2.2x small's FLOPs, same input multiple of 32); "tiny" =
5 downsamplings, 8 base channels, 64 max (0.4M: does less capacity generalise better from five MIT objects?).
`norm="instance"` (not the authors'): every BatchNorm above is an InstanceNorm with a learnt affine map, so each
image is normalised by its own statistics in training too (evaluate.norm_statistics "image" does so at test only).
Weights are initialised N(0, 0.02) (BatchNorm: N(1, 0.02), bias 0) as pix2pix, so a seed fixes the model.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.loss import LossConfig, log_linear_image

LOG_EPS = LossConfig.log_eps  # floor of linear RGB before the log in reflectance="image_ratio": the loss's default


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 5  # number of stride-2 downsamplings; inputs must be multiples of 2**depth
    base_channels: int = 16  # channels of the first encoder level
    max_channels: int = 128  # channel cap of the deeper levels
    color_hidden: int = 64  # hidden units of the illumination-colour head
    color_head: bool = True  # False: no colour head, log_c = 0 (grey shading only; the paper's ablation)
    upsample: str = "transposed"  # decoder upsampling: "transposed" (authors) | "bilinear" (+ 3x3 conv)
    reflectance: str = "decoder"  # "decoder" (paper) | "image_ratio": log R = log I - log S - log c (no decoder)
    # True: each decoder's output conv also sees the input image at full resolution. False (the paper's network) is
    # what a checkpoint without the key holds; the params default (pipeline/params.py) is True
    input_skip: bool = False
    input_skip_channels: int = 8  # full-resolution features of level 1 with input_skip (16: 3x the step time on CPU)
    input_skip_shading: bool = True  # with input_skip: False leaves the shading decoder the paper's level 1
    norm: str = "batch"  # "batch" (the authors') | "instance": each image normalised by its own statistics

    PRESETS = {  # type: ignore[misc]  (class constant, not a field: no annotation)
        "tiny": dict(depth=5, base_channels=8, max_channels=64, color_hidden=64),
        "small": dict(depth=5, base_channels=16, max_channels=128, color_hidden=64),
        "medium": dict(depth=5, base_channels=24, max_channels=256, color_hidden=64),
        "paper": dict(depth=7, base_channels=64, max_channels=512, color_hidden=128),
    }

    def __post_init__(self) -> None:
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2, got {self.depth}")
        if self.upsample not in ("transposed", "bilinear"):
            raise ValueError(f"upsample must be transposed|bilinear, got {self.upsample!r}")
        if self.norm not in ("batch", "instance"):
            raise ValueError(f"norm must be batch|instance, got {self.norm!r}")
        if self.reflectance not in ("decoder", "image_ratio"):
            raise ValueError(f"reflectance must be decoder|image_ratio, got {self.reflectance!r}")
        if self.base_channels < 1 or self.max_channels < self.base_channels:
            raise ValueError(f"need 1 <= base_channels <= max_channels, got {self.base_channels}, {self.max_channels}")

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        try:
            return cls(**cls.PRESETS[name])
        except KeyError:
            raise ValueError(f"unknown model preset {name!r} (have: {', '.join(cls.PRESETS)})") from None

    @classmethod
    def from_params(cls, params) -> "ModelConfig":
        """From `pipeline.params.ModelParams` (the `model` section of params.yaml)."""
        return dataclasses.replace(cls.preset(params.preset), color_head=params.color_head, upsample=params.upsample,
                                   reflectance=params.reflectance, input_skip=params.input_skip,
                                   input_skip_shading=params.input_skip_shading, norm=params.norm)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    def channels(self) -> list[int]:
        return [min(self.base_channels * 2**k, self.max_channels) for k in range(self.depth)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _InputSkipOutput(nn.Module):
    """The output layer of `input_skip`: ReLU(features (B, C, H, W)), concatenated with the input image (B, 3, H, W)
    in [-1, 1], then Conv 3x3 -> (B, out_channels, H, W)."""

    def __init__(self, feature_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(feature_channels + 3, out_channels, 3, 1, 1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([F.relu(features), image], dim=1))


def _norm_layer(config: ModelConfig, channels: int) -> nn.Module:
    """BatchNorm2d (`norm="batch"`: statistics over the batch, one sequence's frames in training, running averages
    at test) or InstanceNorm2d with a learnt affine map (`"instance"`: each image by its own, in training and test)."""
    if config.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


def _decoder(config: ModelConfig, out_channels: int, input_skip: bool) -> nn.ModuleList:
    """Decoder levels ordered innermost first; level k's upsampling maps to c_{k-1} (or, at level 1, out_channels;
    with `input_skip`, `input_skip_channels` features followed by an `_InputSkipOutput` as one more, last, entry)."""
    ch = config.channels()
    levels: list[nn.Module] = []
    for k in range(config.depth - 1, -1, -1):  # 0-based level index
        in_ch = ch[k] if k == config.depth - 1 else 2 * ch[k]
        out_ch = (config.input_skip_channels if input_skip else out_channels) if k == 0 else ch[k - 1]
        if config.upsample == "bilinear":  # no transposed-convolution checkerboard
            up: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                   nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=k == 0 and not input_skip)]
        else:
            up = [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=k == 0 and not input_skip)]
        layers: list[nn.Module] = [nn.ReLU(inplace=False), *up]
        if k > 0 or input_skip:
            layers.append(_norm_layer(config, out_ch))
        levels.append(nn.Sequential(*layers))
    if input_skip:
        levels.append(_InputSkipOutput(config.input_skip_channels, out_channels))
    return nn.ModuleList(levels)


class IntrinsicUNet(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        ch = config.channels()
        encoder = []
        for k in range(config.depth):
            layers: list[nn.Module] = [] if k == 0 else [nn.LeakyReLU(0.2, inplace=False)]
            inner_or_outer = k == 0 or k == config.depth - 1
            layers.append(nn.Conv2d(3 if k == 0 else ch[k - 1], ch[k], 4, 2, 1, bias=inner_or_outer))
            if not inner_or_outer:
                layers.append(_norm_layer(config, ch[k]))
            encoder.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(encoder)
        self.reflectance = _decoder(config, 3, config.input_skip) if config.reflectance == "decoder" else None
        self.shading = _decoder(config, 1, config.input_skip and config.input_skip_shading)
        self.color = nn.Sequential(
            nn.Linear(ch[-1], config.color_hidden), nn.ReLU(inplace=False), nn.Linear(config.color_hidden, 3)
        ) if config.color_head else None
        self.apply(_init_weights)

    @staticmethod
    def _decode(levels: nn.ModuleList, skips: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """image: the network's input in [-1, 1] (used by an `_InputSkipOutput` last level only)."""
        x = skips[-1]
        for i, level in enumerate(levels):
            if isinstance(level, _InputSkipOutput):
                return _float32(level, x, image)  # the output layer: float32
            if i > 0:
                x = torch.cat([x, skips[-1 - i]], dim=1)
            x = level(x) if i < len(levels) - 1 else _float32(level, x)  # the output layer: float32
        return x

    def forward(self, srgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.config.multiple
        if srgb.ndim != 4 or srgb.shape[1] != 3 or srgb.shape[2] % m or srgb.shape[3] % m:
            raise ValueError(f"expected (B, 3, H, W) with H, W multiples of {m}, got {tuple(srgb.shape)}")
        x = image = srgb * 2.0 - 1.0
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        log_s = self._decode(self.shading, skips, image)
        if self.color is None:
            log_c = log_s.new_zeros(log_s.shape[0], 3)
        else:
            log_c = _float32(self.color, F.adaptive_avg_pool2d(F.leaky_relu(skips[-1], 0.2), 1).flatten(1))
        if self.reflectance is None:  # "image_ratio": the reconstruction solved for log R (float32)
            with torch.autocast(device_type=srgb.device.type, enabled=False):
                log_r = log_linear_image(srgb.float(), LOG_EPS) - log_s - log_c[:, :, None, None]
        else:
            log_r = self._decode(self.reflectance, skips, image)
        return log_r, log_s, log_c


def _float32(layer: nn.Module, *xs: torch.Tensor) -> torch.Tensor:
    """layer(*xs) in float32 with autocast off (xs cast up: their values, computed in the autocast dtype, are kept)."""
    with torch.autocast(device_type=xs[0].device.type, enabled=False), _ieee_float32(xs[0].device):
        return layer(*(x.float() for x in xs))


@contextlib.contextmanager
def _ieee_float32(device: torch.device):
    """cuDNN convolutions in IEEE float32 inside: CUDA's default for them is TF32, which keeps 10 mantissa bits of
    the inputs (cuBLAS matmuls, the colour head's Linear layers, are IEEE unless a program asks otherwise)."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a BigTime checkpoint; the message names the file."""


def read_checkpoint(path, map_location="cpu") -> dict:
    """torch.load(weights_only=True) with errors that name the file and say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - the unpickler fails in many ways (KeyError, IndexError...) on junk
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {detail}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: checkpoint holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def load_checkpoint(path, map_location="cpu") -> tuple[IntrinsicUNet, dict]:
    """Checkpoint {"model": state_dict, "model_config": asdict(ModelConfig), ...} -> (model in eval mode, dict).
    The model gets the checkpoint's `ema` weights (`train.ema_decay`) where it has them, else its `model` weights.

    CheckpointError names the file when it is missing, unreadable, lacks keys or does not fit the model."""
    ckpt = read_checkpoint(path, map_location)
    missing = [k for k in ("model", "model_config") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} (have: {', '.join(map(str, ckpt))})")
    try:
        model = IntrinsicUNet(ModelConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["ema"] if "ema" in ckpt else ckpt["model"])
    except (TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: checkpoint does not fit the model: {str(err).splitlines()[0]}") from None
    model.eval()
    return model, ckpt
