"""Downloading released checkpoints into the cache folder, with a progress bar and no half-written files."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from upstream_mrhubert.atomic_io import atomic_output
from upstream_mrhubert.errors import MrsuperbError

CKPT_DIR_ENV = "MRHUBERT_CKPT_DIR"
DEFAULT_CKPT_DIR = Path("~/.cache/mrhubert")
_CHUNK = 1 << 20


class CheckpointUnavailableError(MrsuperbError, FileNotFoundError):
    """A checkpoint that is neither on disk nor downloadable (offline, URL gone)."""


def checkpoint_dir() -> Path:
    """The cache folder: ``$MRHUBERT_CKPT_DIR``, else ``~/.cache/mrhubert``."""
    return Path(os.environ.get(CKPT_DIR_ENV) or DEFAULT_CKPT_DIR).expanduser()


def download_file(url: str, target: Path, *, timeout_s: float = 60.0, sha256: str | None = None) -> Path:
    """Fetch ``url`` to ``target`` through the atomic writer (a temporary file renamed on success).

    A failed or interrupted download leaves nothing at ``target`` (and no ``.part`` behind); the error names the
    URL and where to put the file by hand. With ``sha256`` (the release's published digest, hex) the bytes are
    hashed as they arrive and a mismatch is refused the same way: a corrupt download never lands in the cache.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointUnavailableError(
            f"cannot create the checkpoint folder {target.parent} ({error}); set {CKPT_DIR_ENV} to a writable folder"
        ) from None
    digest = hashlib.sha256()
    try:
        with atomic_output(target) as sink, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name) as progress:
                while chunk := response.read(_CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
            if total is not None and progress.n != total:
                raise OSError(f"the download stopped after {progress.n} of {total} bytes")
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise CheckpointUnavailableError(
                    f"the download of {url} has sha256 {digest.hexdigest()}, but the release publishes {sha256}: "
                    f"the file is corrupt or was changed. Nothing was written to {target}; try again, or fetch the "
                    "file by hand and check its sha256"
                )
    except CheckpointUnavailableError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise CheckpointUnavailableError(
            f"could not download {url} ({reason}). Without network access, fetch that file elsewhere and put it at "
            f"{target} (folder {target.parent}, set by ${CKPT_DIR_ENV}), or pass the file with ckpt=... "
            "(s3prl: -k PATH)"
        ) from None
    return target
