"""The released checkpoints we know by name.

Every MR-HuBERT checkpoint listed in fairseq's ``examples/mr_hubert/README.md`` plus the HuBERT-base
baseline. Names follow ``mrhubert_<tag>`` with the tag's dash removed (``b4-a`` -> ``mrhubert_b4a``);
none of them shadows a name that s3prl's own hub already defines.
"""

from __future__ import annotations

from dataclasses import dataclass

MRHUBERT_URL_ROOT = "https://dl.fbaipublicfiles.com/mrhubert"
HUBERT_URL_ROOT = "https://dl.fbaipublicfiles.com/hubert"


@dataclass(frozen=True)
class Layout:
    """The network a release holds, in the terms of fairseq's config (what ``architectures`` builds it from, so a
    model of the same shape can be made without the download). ``confirmed=False``: inferred from the release's
    description, not read from its cfg (the checkpoint's own cfg wins whenever it is on disk)."""

    size: str = "base"  # "base" or "large"
    label_rate_ratios: tuple[int, ...] = (1, 2)
    layers: tuple[int, ...] = (4, 4, 4)  # per block in execution order; HuBERT: (12,)
    plain_sampling: bool = False  # ConvDownsampler/ConvUpsampler instead of ConvAdapter
    single_prediction: bool = False
    confirmed: bool = True


THREE_RESOLUTIONS = (1, 2, 1, 2)
MONO_RESOLUTION = (1, 1)  # the same three blocks, sampling ratio 1


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One downloadable checkpoint: its upstream name, where it lives and what it is."""

    name: str
    url: str
    description: str
    family: str  # "mrhubert" or "hubert"
    paper_name: str | None = None  # the name used in arXiv 2410.23955, where it appears there
    # The SHA-256 the release publishes (hex), checked on download. fairseq's MR-HuBERT and HuBERT releases
    # publish none today, so every entry is None: a corrupt download is then caught by the zip CRCs at load time.
    sha256: str | None = None
    layout: Layout | None = None  # None: not described precisely enough to build without the file

    @property
    def filename(self) -> str:
        """File name inside the cache folder: the release's own file name, unique across the registry."""
        # Several releases share a base name (mono_xlarge/v1.pt); prefix the folder to keep them apart.
        folder, base = self.url.rsplit("/", 2)[-2:]
        return base if base.startswith((folder, "mrhubert_")) else f"{folder}_{base}"


def _mrhubert(
    tag: str, path: str, description: str, paper_name: str | None = None, layout: Layout | None = None
) -> ReleasedCheckpoint:
    return ReleasedCheckpoint(
        name=f"mrhubert_{tag}",
        url=f"{MRHUBERT_URL_ROOT}/{path}",
        description=description,
        family="mrhubert",
        paper_name=paper_name,
        layout=layout,
    )


def _ablation(
    tag: str, description: str, paper_name: str | None = None, layout: Layout | None = None
) -> ReleasedCheckpoint:
    dashed = f"{tag[:-1]}-{tag[-1]}"  # "b4a" -> "b4-a"
    return _mrhubert(tag, f"{dashed}/{dashed}.pt", description, paper_name, layout)


RELEASED_CHECKPOINTS: tuple[ReleasedCheckpoint, ...] = (
    _mrhubert(
        "mono_base",
        "mono_base/mrhubert_mono_base.pt",
        "base, LibriSpeech 960h, 2 resolutions (20/40 ms), 4-4-4 layers",
        "MR-HuBERT-base (mono-base)",
        Layout(),
    ),
    _mrhubert(
        "mono_large",
        "mono_large/mrhubert_mono_large.pt",
        "large, Libri-Light 60kh, 2 resolutions, 8-8-8 layers",
        layout=Layout(size="large", layers=(8, 8, 8)),
    ),
    _mrhubert("multi_base", "multi_base/multi_base.pt", "multilingual base, VoxPopuli 100kh"),
    _mrhubert("multi_large_400k", "multi_large/multi_large_400k.pt", "multilingual large, 400k steps"),
    _mrhubert("multi_large_600k", "multi_large/multi_large_600k.pt", "multilingual large, 600k steps"),
    _ablation("b1a", "base, 2 resolutions, 2-4-6 layers", layout=Layout(layers=(2, 4, 6))),
    _ablation("b1b", "base, 2 resolutions, 5-2-5 layers", layout=Layout(layers=(5, 2, 5))),
    _ablation("b1c", "base, 2 resolutions, 6-4-2 layers", layout=Layout(layers=(6, 4, 2))),
    _ablation(
        "b2a",
        "base, 3 resolutions (20/40/80 ms), 3-2-2-2-3 layers",
        "B2-a",
        Layout(label_rate_ratios=THREE_RESOLUTIONS, layers=(3, 2, 2, 2, 3)),
    ),
    _ablation(
        "b2b",
        "base, 3 resolutions (20/40/80 ms), 2-2-4-2-2 layers",
        "B2-b",
        Layout(label_rate_ratios=THREE_RESOLUTIONS, layers=(2, 2, 4, 2, 2)),
    ),
    _ablation(
        "b2c",
        "base, 3 resolutions (20/40/80 ms), 2-2-2-2-2 layers",
        layout=Layout(label_rate_ratios=THREE_RESOLUTIONS, layers=(2, 2, 2, 2, 2)),
    ),
    _ablation("b3a", "base, simple (plain conv) sampling", layout=Layout(plain_sampling=True)),
    # B4-a/B4-b "single target": taken as one prediction head (no low-resolution loss); the same inference network
    _ablation(
        "b4a",
        "base, single target (no low-resolution auxiliary loss)",
        "B4-a",
        Layout(single_prediction=True, confirmed=False),
    ),
    _ablation(
        "b4b",
        "base, simple sampling + single target",
        layout=Layout(plain_sampling=True, single_prediction=True, confirmed=False),
    ),
    # B5-a/B6-b "mono-resolution 20 ms": the same three blocks and sampling modules with ratio 1 (2410.23955 Table 1)
    _ablation("b5a", "base, mono-resolution 20 ms", "B5-a", Layout(label_rate_ratios=MONO_RESOLUTION, confirmed=False)),
    _ablation("b6a", "base, 3-3-3 layers", layout=Layout(layers=(3, 3, 3), confirmed=False)),
    _ablation(
        "b6b",
        "base, mono-resolution 20 ms, 3-3-3 layers",
        layout=Layout(label_rate_ratios=MONO_RESOLUTION, layers=(3, 3, 3), confirmed=False),
    ),
    _ablation("b7a", "base, HuBERT 20 ms and 40 ms units"),
    _ablation("b7b", "base, EnCodec 50 Hz units"),
    _ablation("b7c", "base, EnCodec 50 Hz and 25 Hz units"),
    _ablation("b7d", "base, EnCodec 50 Hz units, streams 0 and 1"),
    _ablation("b8a", "large, no audio normalisation"),
    *(
        _ablation(f"b8{letter}", "large, Libri-Light 60kh (see the MR-HuBERT paper, Table B.8)")
        for letter in "bcdefghij"
    ),
    _mrhubert("multi_large_simple", "multi_large_simple/multi_large_simple.pt", "multilingual large, simple sampling"),
    _mrhubert("mono_xlarge_v1", "mono_xlarge/v1.pt", "xlarge, Libri-Light, labels from HuBERT base"),
    _mrhubert("mono_xlarge_v2", "mono_xlarge/v2.pt", "xlarge, Libri-Light, labels from HuBERT large"),
    ReleasedCheckpoint(
        name="hubert_base_ls960",
        url=f"{HUBERT_URL_ROOT}/hubert_base_ls960.pt",
        description="HuBERT base, LibriSpeech 960h (the paper's baseline)",
        family="hubert",
        paper_name="HuBERT",
        layout=Layout(label_rate_ratios=(), layers=(12,)),
    ),
)

CHECKPOINTS_BY_NAME: dict[str, ReleasedCheckpoint] = {c.name: c for c in RELEASED_CHECKPOINTS}

# Upstream names that take any local file through ``ckpt=`` (s3prl's ``-k``) instead of a released one.
LOCAL_UPSTREAMS: dict[str, str] = {"mrhubert_local": "mrhubert"}

ALL_UPSTREAM_NAMES: tuple[str, ...] = tuple(CHECKPOINTS_BY_NAME) + tuple(LOCAL_UPSTREAMS)
