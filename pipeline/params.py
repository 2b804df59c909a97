"""The one params schema: `params.yaml` -> validated, frozen `Params`.

Consumes a YAML mapping with one section per stage (DVC's `params.yaml`), produces a frozen pydantic
model. Unknown keys are errors; every error message names the offending dotted key, e.g.
``sources[2].url: ...`` or ``frames.per_sequence: ...``. Nothing edits the config after loading.

The training-side sections (`model`, `loss`, `train`, `evaluate`) live here too because `pipeline/`
never imports `training/`; `training/` turns these sections into its own dataclasses.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """params.yaml is unreadable or invalid; the message names the offending key(s)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- sources
SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"  # used as a folder name and a WebDataset key (no dots)
SYNTHETIC_SCHEME = "synthetic://"


class Source(_Section):
    """One video or image-folder source. `url` is http(s)://, file://, a local path or synthetic://SCENE."""

    name: Annotated[str, Field(pattern=SOURCE_NAME, max_length=80)]
    url: Annotated[str, Field(min_length=1)]
    type: Literal["video", "images"] = "video"
    scene: Literal["indoor", "outdoor"] = "outdoor"
    start: Optional[Annotated[float, Field(ge=0)]] = None  # seconds into the video
    end: Optional[Annotated[float, Field(gt=0)]] = None  # seconds into the video
    licence: str = ""
    attribution: str = ""
    manual_mask: Optional[str] = None  # path to a PNG, white = valid; ANDed into every frame's mask

    @model_validator(mode="after")
    def _window(self) -> "Source":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.url.startswith(SYNTHETIC_SCHEME)

    @property
    def is_local(self) -> bool:
        """True for file:// URLs and bare paths (not http(s), not synthetic)."""
        return not (self.is_synthetic or re.match(r"^https?://", self.url))


# --------------------------------------------------------------------------------------------- stages
class SyntheticParams(_Section):
    """Renderer settings for synthetic:// sources (see pipeline/synthetic.py)."""

    width: Annotated[int, Field(ge=16, le=4096)] = 192
    height: Annotated[int, Field(ge=16, le=4096)] = 128
    fps: Annotated[int, Field(ge=1, le=120)] = 8
    seconds: Annotated[float, Field(gt=0, le=600)] = 3.0
    seed: int = 0
    crf: Annotated[int, Field(ge=0, le=51)] = 12  # x264 quality of the encoded mp4


class DownloadParams(_Section):
    allow_local: bool = False  # file:// URLs and local paths are refused unless true
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_filesize_mb: Annotated[float, Field(gt=0)] = 2048.0
    format: str = "best[height<=1080]/best"  # yt-dlp format selector
    retries: Annotated[int, Field(ge=0)] = 2


class FramesParams(_Section):
    long_side: Annotated[int, Field(ge=16, le=4096)] = 384
    per_sequence: Annotated[int, Field(ge=2, le=10000)] = 20
    sample_fps: Optional[Annotated[float, Field(gt=0)]] = None  # decode rate; None = every frame
    max_candidates: Annotated[int, Field(ge=2)] = 400  # frames decoded before selection
    min_log_lum_step: Annotated[float, Field(ge=0)] = 0.01  # near-duplicate threshold (mean log-luminance)
    max_camera_shift: Annotated[float, Field(ge=0)] = 0.02  # fraction of the image diagonal


class SaturationParams(_Section):
    high: Annotated[float, Field(gt=0, le=1)] = 0.98  # sRGB; any channel >= high is invalid
    low: Annotated[float, Field(ge=0, lt=1)] = 0.02  # sRGB luminance <= low is invalid
    dilate: Annotated[int, Field(ge=0, le=64)] = 2  # pixels


class TemporalBackendParams(_Section):
    """Model-free sky/dynamic masks (pipeline/mask_backends.py `TemporalBackend` documents each)."""

    dynamic_threshold: Annotated[float, Field(gt=0)] = 4.0  # robust z-score (bench/masks.py: 3 -> 5% vs 3.4% false masking on vtest, same recall)
    sky: bool = True
    shading_cells: Annotated[int, Field(ge=0, le=64)] = 4  # gain-field grid along the long side; 0 = global gain
    min_object: Annotated[float, Field(ge=0, lt=1)] = 0.0005  # fraction of the image; smaller blobs dropped
    dilate: Annotated[int, Field(ge=0, le=64)] = 2  # pixels added around dynamic objects
    sky_deviation: Annotated[float, Field(gt=0)] = 0.15  # log units: median departure from the scene's light
    sky_texture: Annotated[float, Field(gt=0)] = 0.04  # log units per pixel: max median gradient of sky
    sky_min_area: Annotated[float, Field(ge=0, lt=1)] = 0.02  # fraction of the image


class Detectron2BackendParams(_Section):
    config: str = "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml"
    weights: str = ""  # path or URL; empty = random init (plumbing only)
    device: str = "cpu"
    min_size_test: Annotated[int, Field(ge=0)] = 0  # shorter side fed to the model; 0 = the config's (800)


class MasksParams(_Section):
    backend: Literal["temporal", "detectron2", "none"] = "temporal"
    saturation: SaturationParams = SaturationParams()
    temporal: TemporalBackendParams = TemporalBackendParams()
    detectron2: Detectron2BackendParams = Detectron2BackendParams()
    min_valid_fraction: Annotated[float, Field(ge=0, le=1)] = 0.3
    min_valid_frames: Annotated[int, Field(ge=1)] = 2


class ShadingWeightsParams(_Section):
    """Shading-smoothness pair weights (pipeline/shading_weights.py documents each; paper Eq. 10-13)."""

    k_abs: Annotated[float, Field(gt=0)] = 20.0  # exp(-k_abs * (d_i - med d)^2), d = log-intensity derivative
    k_rel: Annotated[float, Field(gt=0)] = 4.0  # exp(-k_rel * ((d_i - med d) / |med d|)^2)
    sigma_intensity: Annotated[float, Field(gt=0)] = 0.12  # affinity W: linear intensity difference
    sigma_chroma: Annotated[float, Field(gt=0)] = 0.025  # affinity W: rg-chromaticity difference
    edge_scale: Annotated[float, Field(ge=0)] = 1.0  # factor = edge_offset + edge_scale * (1 - median W); authors 12
    edge_offset: Annotated[float, Field(ge=0)] = 0.0  # paper 0; authors 1 (= 12 * 1/12)
    reduce: Literal["mean", "median", "none"] = "mean"  # over frames; "none" keeps per-frame (m,4,H,W)
    intensity: Literal["mean_rgb", "rec709"] = "mean_rgb"
    downsample: Literal["average", "nearest"] = "average"  # authors: nearest
    eps: Annotated[float, Field(gt=0)] = 1e-4  # linear clamp before log


class ShardsParams(_Section):
    sequences_per_shard: Annotated[int, Field(ge=1)] = 8
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: int = 0
    shading_scales: Annotated[int, Field(ge=1, le=8)] = 4
    shading_weights: ShadingWeightsParams = ShadingWeightsParams()


class ModelParams(_Section):
    preset: Literal["small", "paper"] = "small"


class LossParams(_Section):
    """Weights and constants of the dense-CRF energy (training/loss.py documents each)."""

    w_reconstruct: float = 2.0
    w_consistency: float = 2.0
    w_rsmooth: float = 4.0
    w_ssmooth: float = 1.0
    w_shading_l1: float = 0.1
    lum_exponent: float = 0.125
    lum_definition: Literal["rec709", "mean_rgb"] = "rec709"
    log_eps: Annotated[float, Field(gt=0)] = 1e-4
    sigma_xy: Annotated[float, Field(gt=0)] = 0.1
    sigma_intensity: Annotated[float, Field(gt=0)] = 0.12
    sigma_chroma: Annotated[float, Field(gt=0)] = 0.025
    bistochastic_iterations: Annotated[int, Field(ge=1)] = 10
    bistochastic_tolerance: Annotated[float, Field(gt=0)] = 1e-3
    rsmooth_masked_pixels: bool = False


class TrainParams(_Section):
    steps: Annotated[int, Field(ge=1)] = 200
    frames_per_step: Annotated[int, Field(ge=2)] = 8
    lr: Annotated[float, Field(gt=0)] = 5e-4
    seed: int = 0
    num_workers: Annotated[int, Field(ge=0)] = 1
    amp: bool = True
    sync_batchnorm: bool = False
    checkpoint_every: Annotated[int, Field(ge=1)] = 100
    log_every: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _checkpoint_within_run(self) -> "TrainParams":
        if self.checkpoint_every > self.steps:  # else an interrupted run has nothing to resume from
            raise ValueError(f"train.checkpoint_every ({self.checkpoint_every}) exceeds train.steps ({self.steps}); "
                             "set it to at most steps so an interrupted run can resume")
        return self


class EvaluateParams(_Section):
    mit_dir: str = "../shared/data/mit-intrinsic"
    iiw_dir: str = ""  # empty = skip
    saw_dir: str = ""  # empty = skip
    max_images: Annotated[int, Field(ge=1)] = 50  # per dataset
    fetch_iiw: bool = False  # DVC stage fetch_iiw downloads IIW into data/external/iiw (needs internet)
    fetch_saw: bool = False  # DVC stage fetch_saw downloads SAW into data/external/saw (needs internet)


class Params(_Section):
    sources: list[Source] = Field(min_length=1)
    synthetic: SyntheticParams = SyntheticParams()
    download: DownloadParams = DownloadParams()
    frames: FramesParams = FramesParams()
    masks: MasksParams = MasksParams()
    shards: ShardsParams = ShardsParams()
    model: ModelParams = ModelParams()
    loss: LossParams = LossParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"duplicate source name {source.name!r}")
            seen.add(source.name)
        return sources

    @model_validator(mode="after")
    def _local_sources_need_opt_in(self) -> "Params":
        if not self.download.allow_local:
            for index, source in enumerate(self.sources):
                if source.is_local:
                    raise ValueError(
                        f"sources[{index}].url: {source.url!r} is a local path or file:// URL; "
                        "set download.allow_local: true to allow it"
                    )
        return self

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        raise ParamsError(f"sources: no source named {name!r} (have: {', '.join(s.name for s in self.sources)})")


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_params(raw: object) -> Params:
    """Validate a parsed params mapping; raise ParamsError naming every offending key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        lines = [f"{_dotted(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ParamsError("invalid params:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (raises ParamsError naming the key, or the file if unreadable)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return validate_params(raw if raw is not None else {})
