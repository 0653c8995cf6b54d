"""Build synthetic SUPERB corpora: ``build_corpus(task, out_dir, utterances=None, seed=0, force=False)``.

Tasks (``CORPORA``): ``asr`` (LibriSpeech), ``sf`` (Audio SNIPS), ``ic`` (Fluent Speech Commands), ``ks`` (Speech
Commands v0.01), ``se`` (VoiceBank-DEMAND), ``sd`` (two-speaker Kaldi mixtures), ``sts`` (spoken STS sentence pairs
for the layer-wise analysis, no s3prl task); ``all`` builds each into
``out_dir/<task>/``. Each corpus is written in the on-disk layout that s3prl 0.4.18's downstream expert for the task
reads (see the task modules' docstrings) plus ``manifest.json``::

    {"schema": "mrsuperb.corpus/1", "task", "seed", "utterances", "sample_rate": 16000, "synthesizer": {...},
     "duration_seconds", "splits": {split: {"utterances", "seconds", "speakers"}}, "speakers": {id: voice},
     "s3prl": {"downstream_expert": {... relative paths ...}, "path_keys": ["datarc.libri_root", ...]},
     "layout": {...}, "extra": {...}}

Each SUPERB corpus is written in the layout its real dataset's download unpacks to (LibriSpeech without
``len_for_bucket``, VoiceBank-DEMAND at 48 kHz, Libri2Mix with its metadata and source RTTMs, ...), so it takes the
user's path: ``mrsuperb prepare TASK --raw <corpus> --out DIR`` (``corpora.prepare``) writes what s3prl reads.
``s3prl_overrides(root, prepared=None)`` turns the manifest's ``s3prl`` entry into the ``downstream_expert`` config
overrides with absolute paths and merges the preparation's (``prepared``: a folder ``mrsuperb prepare`` wrote for
this corpus; by default ``root/prepared``, prepared there on first use). ``load_manifest(root)`` reads the manifest.

Guarantees: the same task, utterances and seed give byte-identical files (audio included; the Kaldi ``wav.scp``
files of ``se``/``sd`` hold absolute paths, so they are identical for the same output folder). The corpus is built
in a temporary sibling folder and renamed into place, so a failed build leaves nothing behind (and ``force=True``
replaces an old corpus only once the new one is complete). Bad input raises ``CorpusError`` (a ``ValueError``)
naming the value and what to do. ``utterances`` is the number of spoken utterances (``sd``: recordings), at least
``minimum_utterances(task)`` so that every split gets some; ``default_utterances(task)`` is small (tests, demo).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import IO

from downstream_probes.corpora import (
    fluent_ic,
    kaldi_sd,
    librispeech_asr,
    snips_sf,
    speech_commands_ks,
    spoken_sts,
    voicebank_se,
)
from downstream_probes.corpora.common import BuildContext, CorpusError, TaskResult
from downstream_probes.corpora.espeak import SAMPLE_RATE, espeak_version
from downstream_probes.corpora.prepare import PREPARERS, PrepareError, load_prepared, prepare
from downstream_probes.tasks import TASK_NAMES
from upstream_mrhubert.atomic_io import read_json_record

CORPUS_SCHEMA = "mrsuperb.corpus/1"
MANIFEST = "manifest.json"
PREPARED = "prepared"  # where s3prl_overrides prepares a corpus by default
_BUILDERS: dict[str, ModuleType] = {
    module.TASK: module
    for module in (librispeech_asr, snips_sf, fluent_ic, speech_commands_ks, voicebank_se, kaldi_sd, spoken_sts)
}
# The SUPERB tasks in Table 2's order (one corpus module each), then the analysis-only corpora.
CORPORA: tuple[str, ...] = (*TASK_NAMES, *(name for name in _BUILDERS if name not in TASK_NAMES))
assert set(TASK_NAMES) <= set(_BUILDERS), "every task of downstream_probes.tasks needs a corpus builder"
ALL = "all"


def _builder(task: str) -> ModuleType:
    try:
        return _BUILDERS[task]
    except KeyError:
        raise CorpusError(f"unknown task {task!r}; choose one of {', '.join(CORPORA)} or {ALL}") from None


def default_utterances(task: str) -> int:
    return int(_builder(task).DEFAULT_UTTERANCES)


def minimum_utterances(task: str) -> int:
    """The fewest utterances that give every split of ``task``'s corpus its minimum (the builder's ``MINIMUM``)."""
    return int(sum(_builder(task).MINIMUM.values()))


def _check_utterances(task: str, utterances: int | None) -> int:
    if utterances is None:
        return default_utterances(task)
    if isinstance(utterances, bool) or not isinstance(utterances, int):
        raise CorpusError(f"utterances must be a whole number, got {utterances!r}")
    least = minimum_utterances(task)
    if utterances < least:
        raise CorpusError(
            f"utterances={utterances} is too few for task {task!r}: every split needs some, so use at least {least}"
        )
    return utterances


def is_our_corpus(path: Path) -> bool:
    """True when ``path`` holds a ``manifest.json`` written by ``build_corpus`` (our schema)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("schema") == CORPUS_SCHEMA


def _check_out_dir(out_dir: str | os.PathLike[str], force: bool) -> Path:
    path = Path(out_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise CorpusError(f"output path {path} is a file; choose a folder")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise CorpusError(f"output folder {path} is not empty; choose an empty folder or pass --force (force=True)")
        if not is_our_corpus(path):
            raise CorpusError(
                f"output folder {path} has no {MANIFEST} of ours ({CORPUS_SCHEMA}): it is not a corpus built by "
                "`mrsuperb corpus`, so --force will not replace it (it would delete everything in it). Choose an "
                "empty or new folder"
            )
    if path.exists() and os.path.ismount(path):
        raise CorpusError(
            f"output folder {path} is a mount point: a corpus is built beside its destination and renamed into "
            "place, which a mount point does not allow; build into a folder inside it"
        )
    return path


def _synthesizer_info() -> dict:
    try:
        loader = metadata.version("espeakng-loader")
    except metadata.PackageNotFoundError:  # pragma: no cover - it is a declared dependency
        loader = "unknown"
    return {"engine": "espeak-ng", "version": espeak_version(), "espeakng_loader": loader, "language": "en-us"}


def _manifest(task: str, seed: int, utterances: int, result: TaskResult) -> dict:
    return {
        "schema": CORPUS_SCHEMA,
        "task": task,
        "seed": seed,
        "utterances": utterances,
        "sample_rate": SAMPLE_RATE,
        "synthesizer": _synthesizer_info(),
        "duration_seconds": round(sum(s.seconds for s in result.splits.values()), 3),
        "splits": {name: summary.to_json() for name, summary in result.splits.items()},
        "speakers": {speaker: voice.to_json() for speaker, voice in sorted(result.voices.items())},
        "s3prl": {"downstream_expert": result.s3prl, "path_keys": result.path_keys},
        "layout": result.layout,
        "extra": result.extra,
    }


def _build_task(task: str, work: Path, final: Path, utterances: int, seed: int, workers: int, progress: bool) -> None:
    work.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(task, work, final, seed, utterances, workers=workers, progress=progress)
    result = _builder(task).build(ctx)
    manifest = _manifest(task, seed, utterances, result)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def build_corpus(
    task: str,
    out_dir: str | os.PathLike[str],
    utterances: int | None = None,
    seed: int = 0,
    force: bool = False,
    *,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Build the synthetic corpus for ``task`` (or ``"all"``) in ``out_dir``; returns its absolute path.

    ``workers`` synthesis processes run at once (results do not depend on it); ``progress`` shows tqdm bars.
    """
    tasks = CORPORA if task == ALL else (task,)
    for name in tasks:
        _builder(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CorpusError(f"seed must be a non-negative whole number, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CorpusError(f"workers must be a positive whole number, got {workers!r}")
    sizes = {name: _check_utterances(name, utterances) for name in tasks}
    final = _check_out_dir(out_dir, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_builds(final)
        building = BuildFolder.create(final)
    except OSError as error:
        raise CorpusError(
            f"cannot build {final}: cannot write into {final.parent} ({error.strerror or error}); the folder is "
            "read-only or not yours: choose a writable --out"
        ) from None
    work = building.path
    try:
        if task == ALL:
            for name in tasks:
                _build_task(name, work / name, final / name, sizes[name], seed, workers, progress)
            index = {"schema": CORPUS_SCHEMA, "task": ALL, "seed": seed, "corpora": {name: name for name in tasks}}
            (work / MANIFEST).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        else:
            _build_task(task, work, final, sizes[task], seed, workers, progress)
        os.chmod(work, 0o755)  # mkdtemp made it private; a corpus folder is an ordinary folder
        _replace_folder(work, final, building.old_path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        building.release()
    return final


# --------------------------------------------------------------------------------------------------------------
# Build folders: ``.X.building-<token>`` beside the destination ``X``, with ``.X.building-<token>.lock`` held
# (fcntl.flock) by the build while it runs. A build killed with -9 cannot clean up after itself; the OS drops
# its lock, and the next build of ``X`` removes what it left (:func:`remove_dead_builds`).

_BUILDING, _OLD, _LOCK_SUFFIX = "building", "old", ".lock"


@dataclass
class BuildFolder:
    """The temporary folder a build writes, with the lock that says its build is alive."""

    path: Path
    old_path: Path
    _lock: IO[str]

    @classmethod
    def create(cls, final: Path) -> BuildFolder:
        path = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_BUILDING}-", dir=final.parent))
        token = path.name.rsplit(f".{_BUILDING}-", 1)[1]
        try:
            lock = open(_lock_path(path), "w", encoding="utf-8")  # noqa: SIM115 (held until release)
        except OSError:
            path.rmdir()
            raise
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(path, final.parent / f".{final.name}.{_OLD}-{token}", lock)

    def release(self) -> None:
        """Remove the lock file and let the lock go (the folder itself is renamed or removed by then)."""
        _lock_path(self.path).unlink(missing_ok=True)
        self._lock.close()


def _lock_path(building: Path) -> Path:
    return building.with_name(building.name + _LOCK_SUFFIX)


def _is_alive(building: Path) -> bool:
    """Whether the build that owns ``building`` still runs (holds its lock)."""
    try:
        with open(_lock_path(building), encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def remove_dead_builds(final: Path) -> None:
    """Remove what dead builds of ``final`` left beside it: their ``.X.building-*`` folders and lock files, and
    ``.X.old-*`` folders (a previous corpus moved aside by a build killed mid-swap goes back to ``final``)."""
    parent = final.parent
    pattern = f".{final.name}.{_BUILDING}-*"
    for building in [path for path in parent.glob(pattern) if path.is_dir()]:
        if not _is_alive(building):
            shutil.rmtree(building, ignore_errors=True)
            _lock_path(building).unlink(missing_ok=True)
    for lock in parent.glob(pattern + _LOCK_SUFFIX):
        building = lock.with_name(lock.name.removesuffix(_LOCK_SUFFIX))
        if not building.exists() and not _is_alive(building):
            lock.unlink(missing_ok=True)
    for old in parent.glob(f".{final.name}.{_OLD}-*"):
        owner = parent / old.name.replace(f".{_OLD}-", f".{_BUILDING}-", 1)
        if _is_alive(owner):
            continue
        if (old / "corpus").is_dir() and not final.exists():
            os.replace(old / "corpus", final)
        shutil.rmtree(old, ignore_errors=True)


def _replace_folder(new: Path, final: Path, old: Path) -> None:
    """Move the finished ``new`` folder to ``final``; an existing ``final`` is removed only after the swap.

    A destination that cannot be moved aside (a mount point, a read-only parent) is a :class:`CorpusError`, with
    the old corpus in place and no ``old`` folder left.
    """
    if not final.exists():
        os.replace(new, final)
        return
    old.mkdir()
    try:
        os.replace(final, old / "corpus")
    except OSError as error:
        old.rmdir()
        raise CorpusError(
            f"cannot replace {final} ({error.strerror or error}): it is a mount point or its folder is read-only; "
            "the old corpus is untouched. Build into another folder"
        ) from None
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(old / "corpus", final)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def load_manifest(root: str | os.PathLike[str]) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a corpus built by `mrsuperb corpus`")
    return read_json_record(path, CORPUS_SCHEMA, CorpusError, "write the folder again")


def merge_config(base: dict, extra: dict) -> dict:
    """``extra`` merged into the nested config ``base`` (in place; sections merge, other values replace)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_config(base[key], value)
        else:
            base[key] = value
    return base


def s3prl_overrides(root: str | os.PathLike[str], prepared: str | os.PathLike[str] | None = None) -> dict:
    """The ``downstream_expert`` config entries (datarc/corpus/loaderrc/text...) for the corpus at ``root``, with
    absolute paths: merge them into the task's s3prl config.

    Args:
        root: a corpus built by :func:`build_corpus` (one task).
        prepared: the folder ``mrsuperb prepare`` wrote for it; default ``root/prepared``, written by the same
            preparation on first use (idempotent, so concurrent first uses agree).

    Returns:
        The manifest's entries merged with the preparation's (``bucket_file``, ``loaderrc.*_dir`` ...).
    """
    root = Path(root).resolve()
    manifest = load_manifest(root)
    if manifest["task"] == ALL:
        raise CorpusError(f"{root} holds all tasks; pass one of its task folders ({', '.join(CORPORA)})")
    overrides = json.loads(json.dumps(manifest["s3prl"]["downstream_expert"]))
    for dotted in manifest["s3prl"]["path_keys"]:
        *parents, leaf = dotted.split(".")
        section = overrides
        for key in parents:
            section = section[key]
        section[leaf] = str(root / section[leaf])
    task = manifest["task"]
    if task in PREPARERS:
        folder = Path(prepared) if prepared is not None else root / PREPARED
        try:
            record = load_prepared(folder)
        except PrepareError:
            record = prepare(task, root, folder).to_json()
        merge_config(overrides, record["overrides"])
    return overrides
