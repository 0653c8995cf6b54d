"""SUPERB speaker-diarization scoring: predicted RTTM scored with pyannote.metrics.

s3prl's diarization expert, evaluated on ``test``, writes one ``scoring/predictions/<recording>.h5`` of per-frame
speaker posteriors; its ``score.sh`` then turns them into RTTM with s3prl's own ``make_rttm.py`` for every
threshold in {0.3, 0.4, 0.5, 0.6, 0.7} and median filter in {1, 11}, and scores each against the reference RTTM
with ``dscore`` (collar 0, overlap scored), reporting the best DER. dscore is not on PyPI, so the same grid is scored
here with ``pyannote.metrics.diarization.DiarizationErrorRate`` (the same optimal-mapping DER).
"""

from __future__ import annotations

import contextlib
import runpy
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.errors import UsageError

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MEDIAN_FILTERS = (1, 11)


@dataclass(frozen=True)
class DiarizationScore:
    """DER (a fraction, not %) of the best (threshold, median) setting, and every setting's DER."""

    der: float
    threshold: float
    median: int
    grid: dict[str, float]


def read_rttm(path: str | Path) -> dict[str, Annotation]:
    """``SPEAKER <recording> <channel> <start> <duration> <NA> <NA> <speaker> ...`` lines -> one Annotation each."""
    annotations: dict[str, Annotation] = defaultdict(Annotation)
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise UsageError(f"{path}:{line_number}: an RTTM SPEAKER line needs at least 8 fields, got {line!r}")
        recording, start, duration, speaker = fields[1], float(fields[3]), float(fields[4]), fields[7]
        annotations[recording].uri = recording
        annotations[recording][Segment(start, start + duration), len(annotations[recording])] = speaker
    return dict(annotations)


def read_reco2dur(path: str | Path) -> dict[str, float]:
    """Kaldi ``reco2dur``: ``<recording> <seconds>`` per line."""
    durations = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            recording, seconds = line.split()[:2]
            durations[recording] = float(seconds)
    return durations


def diarization_error_rate(
    reference: dict[str, Annotation], hypothesis: dict[str, Annotation], durations: dict[str, float] | None = None
) -> float:
    """Total DER over all reference recordings (collar 0, overlapped speech scored), as a fraction."""
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    for recording, ref in reference.items():
        hyp = hypothesis.get(recording, Annotation(uri=recording))
        uem = None
        if durations and recording in durations:
            uem = Timeline([Segment(0.0, durations[recording])], uri=recording)
        metric(ref, hyp, uem=uem)
    return float(abs(metric))


def write_predicted_rttm(
    prediction_files: list[Path], out_rttm: Path, *, threshold: float, median: int, frame_shift: int
) -> None:
    """Run s3prl's own ``make_rttm.py`` (a script that parses ``sys.argv``) in this process."""
    file_list = out_rttm.with_suffix(".list")
    file_list.write_text("".join(f"{path}\n" for path in prediction_files))
    argv = [
        "make_rttm.py",
        str(file_list),
        str(out_rttm),
        f"--threshold={threshold}",
        f"--median={median}",
        f"--frame_shift={frame_shift}",
        "--subsampling=1",
        f"--sampling_rate={SAMPLE_RATE}",
    ]
    saved_argv = sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_module("s3prl.downstream.diarization.make_rttm", run_name="__main__")
    finally:
        sys.argv = saved_argv


def score_expdir(expdir: str | Path, reference_dir: str | Path) -> DiarizationScore:
    """Score ``<expdir>/scoring/predictions/*.h5`` against ``<reference_dir>/rttm`` over SUPERB's grid."""
    expdir, reference_dir = Path(expdir), Path(reference_dir)
    predictions = sorted((expdir / "scoring" / "predictions").glob("*.h5"))
    if not predictions:
        raise FileNotFoundError(
            f"no diarization predictions under {expdir / 'scoring' / 'predictions'}: evaluate the test split first"
        )
    reference_rttm = reference_dir / "rttm"
    if not reference_rttm.is_file():
        raise FileNotFoundError(f"reference RTTM not found: {reference_rttm}")
    frame_shift_file = expdir / "frame_shift"
    if not frame_shift_file.is_file():
        raise FileNotFoundError(f"{frame_shift_file} not found (s3prl's diarization expert writes it)")
    frame_shift = int(frame_shift_file.read_text().split()[0])
    reference = read_rttm(reference_rttm)
    reco2dur = reference_dir / "reco2dur"
    durations = read_reco2dur(reco2dur) if reco2dur.is_file() else None

    grid: dict[str, float] = {}
    best: tuple[float, float, int] | None = None
    for median in MEDIAN_FILTERS:
        for threshold in THRESHOLDS:
            rttm = expdir / "scoring" / f"hyp_{threshold}_{median}.rttm"
            write_predicted_rttm(predictions, rttm, threshold=threshold, median=median, frame_shift=frame_shift)
            der = diarization_error_rate(reference, read_rttm(rttm), durations)
            grid[f"th{threshold}_med{median}"] = der
            if best is None or der < best[0]:
                best = (der, threshold, median)
    assert best is not None
    return DiarizationScore(der=best[0], threshold=best[1], median=best[2], grid=grid)
