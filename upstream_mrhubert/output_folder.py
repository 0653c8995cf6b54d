"""What every command that writes into an output folder holds to, implemented once: one run at a time per folder
(``folder_lock``), nothing written through a link planted in it (``refuse_links``), and the settings it was made
with recorded and compared on every rerun or resume (``check_settings``).

The lock is an advisory ``fcntl.flock`` on ``FOLDER/.run.lock``, the file ``run_downstream.py``, ``probe-sweep
--shared`` (on the sweep folder and on every layer folder) and ``mrsuperb pretrain`` all take, so any two of them
exclude each other. The operating system drops the lock when its holder exits, crashes or is killed (-9 included),
so a lock file left behind never blocks a later run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from upstream_mrhubert.atomic_io import write_json_atomic
from upstream_mrhubert.errors import MrsuperbError

LOCK_FILE = ".run.lock"
SETTINGS_FILE = "settings.json"


class FolderLocked(MrsuperbError, ValueError):
    """Another run holds the output folder."""


class OutputLinkError(MrsuperbError, ValueError):
    """A file of the output folder is a symbolic link: writing it would write somewhere else."""


class SettingsMismatch(MrsuperbError, ValueError):
    """A rerun or resume asks for other settings than the folder was made with."""


def refuse_links(folder: str | os.PathLike[str]) -> None:
    """Refuse an output folder holding a symbolic link (at any depth): a run writes its files in place (s3prl's
    experts ``open()`` their prediction files), so a planted ``FOLDER/test_predict.csv -> elsewhere`` would make it
    overwrite ``elsewhere``.

    Raises:
        OutputLinkError: naming the link and where it points.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink():
                raise OutputLinkError(
                    f"{path} is a symbolic link (to {os.readlink(path)}); a run writes its files in place, so it "
                    "would write there: remove the link, or write this run into another folder"
                )


@contextmanager
def folder_lock(folder: str | os.PathLike[str], option: str = "-p", *, check_links: bool = True) -> Iterator[Path]:
    """Hold the advisory lock of ``folder`` (created if needed) for the ``with`` block; ``option`` is the one that
    names the folder on the command line (said in the messages). A folder holding a link is refused first, unless
    ``check_links`` is off (a folder of folders whose runs check their own, e.g. a SUPERB grid's ``-p``, which
    also holds submitit's own links among its Slurm logs).

    Raises:
        FolderLocked: another process holds it; the message names the folder and the holder's pid.
        OutputLinkError: see ``refuse_links``.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            refuse_links(folder)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    except OSError as error:
        raise FolderLocked(
            f"cannot use {folder} as the experiment folder ({error.strerror or error}); pass a writable folder with "
            f"{option}"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise FolderLocked(
                f"{folder} is in use by another run (pid {holder}); wait for it to finish, or write this run into "
                f"another folder with {option}"
            ) from None
        if check_links:
            refuse_links(folder)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path


@contextmanager
def folder_locks(folders: Iterable[str | os.PathLike[str]], option: str = "-p") -> Iterator[list[Path]]:
    """``folder_lock`` of every folder (in the order given) for the ``with`` block; all or none are held."""
    with ExitStack() as stack:
        yield [stack.enter_context(folder_lock(folder, option)) for folder in folders]


def _comparable(value: Any) -> Any:
    """A value as it reads back from JSON (tuples as lists, paths as strings), for comparing settings."""
    return json.loads(json.dumps(value, default=str))


def differing_fields(saved: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the fields whose values differ (nested mappings compared field by field)."""
    fields = []
    for key in sorted(set(saved) | set(wanted), key=str):
        old, new = saved.get(key), wanted.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            fields += differing_fields(old, new, f"{prefix}{key}.")
        elif old != new and not (isinstance(old, float) and isinstance(new, float) and math.isclose(old, new)):
            fields.append(f"{prefix}{key} ({old!r} -> {new!r})")
    return fields


def check_settings(
    folder: str | os.PathLike[str],
    settings: Mapping[str, Any],
    remedy: str,
    name: str = SETTINGS_FILE,
    started: bool = True,
) -> None:
    """Record ``settings`` in ``folder/name`` on the first run; on every later run into the folder, refuse other
    settings, naming the fields that differ. With ``started`` False (nothing of the recorded run was kept: no
    checkpoint, no state, no result), the new settings replace the record instead.

    Raises:
        SettingsMismatch: the recorded settings differ (or the record is unreadable); ``remedy`` says what to do.
    """
    path = Path(folder) / name
    wanted = _comparable(dict(settings))
    if not path.exists():
        write_json_atomic(path, wanted)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SettingsMismatch(f"{path}: the recorded settings are unreadable ({error}); {remedy}") from None
    if not isinstance(saved, dict):
        raise SettingsMismatch(f"{path}: the recorded settings are a {type(saved).__name__}, not a mapping; {remedy}")
    fields = differing_fields(saved, wanted)
    if fields and not started:
        write_json_atomic(path, wanted)
    elif fields:
        raise SettingsMismatch(f"{path.parent} was made with other settings: {'; '.join(fields)}; {remedy}")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(value: str | os.PathLike[str] | None) -> str | None:
    """A setting naming a file, as recorded: ``sha256:<content>`` when it is a local file (so another file under the
    same name, or the same file under another name, is told apart correctly), else the value itself (a URL, a
    released model's name) or None."""
    if value is None:
        return None
    path = Path(value)
    return f"sha256:{file_sha256(path)}" if path.is_file() else str(value)


def remove_stale_partials(folder: str | os.PathLike[str], pattern: str = "*.partial-*") -> list[Path]:
    """Remove what builds killed mid-way left in ``folder``: entries matching ``pattern`` whose name ends in
    ``-<pid>`` of a process that no longer runs (a live build's are kept). Returns what was removed."""
    import shutil

    removed = []
    for path in Path(folder).glob(pattern):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
