#!/usr/bin/env python
"""Reproduce arXiv 2410.23955 Table 2 (SUPERB) and Fig. 2 (word-level CCA; learnt layer weights) with the real data.

Needs the released checkpoints and the SUPERB datasets on disk; nothing is downloaded (checkpoints that are missing
from ``--checkpoints`` are an error naming the URL). Every step is a command of this project, run as a subprocess
with its output kept in ``<out>/logs/``; a finished step is skipped when the script runs again, and an interrupted
training run resumes from its last saved step (s3prl's ``-a``). ``--dry-run`` prints the commands only.

Steps, for each upstream (default: the paper's HuBERT-base, MR-HuBERT-base, B4-a, B5-a; Fig. 2a adds B2-a, B2-b):
  1. train each task with the SUPERB configuration of ``recipes/superb/<task>/config.yaml`` (default
     hyperparameters, as the paper), weighted sum of all layers: ``run_downstream.py -m train -a``;
  2. evaluate the best dev checkpoint on the test split (``-m evaluate``); results land in ``results.json``;
  3. export the learnt layer weights (``mrsuperb export-weights``: ``layer_weights.json``, Fig. 2b);
  4. word-level CCA on LibriSpeech dev-clean with MFA alignments (``mrsuperb cca --property word``, Fig. 2a);
then ``mrsuperb profile`` (the efficiency the paper attributes to downsampling), ``mrsuperb compare`` and the
leaderboard (``leaderboard.md``, ``leaderboard.html`` with the figures inline; Table 2 layout).

Dataset layouts (``docs/tasks.md`` describes each in full):
  --librispeech     LibriSpeech/ holding train-clean-100, dev-clean, test-clean (``len_for_bucket/`` is written
                    by ``mrsuperb prepare asr`` into ``<out>/prepared/asr`` if ``--len-for-bucket`` is not given)
  --alignments      MFA TextGrids of dev-clean (``<dir>/dev-clean/**/<utt>.TextGrid``, tiers words and phones)
  --snips           Audio SNIPS root (train/valid/test audio, all.iob.snips.txt, slots.txt)
  --fsc             fluent_speech_commands_dataset/ (data/{train,valid,test}_data.csv, wavs/)
  --speech-commands speech_commands_v0.01/ ; --speech-commands-test speech_commands_test_set_v0.01/
  --voicebank       folder with {train,dev,test}/{noisy,clean}/wav.scp: PREPARED/wav16k of ``mrsuperb prepare se``
  --sd              folder with {train,dev,test}/ Kaldi data dirs of Libri2Mix: PREPARED of ``mrsuperb prepare sd``
A task whose dataset option is not given is skipped (and its leaderboard cells stay empty).

Example::

    python recipes/paper_2410.23955/reproduce.py --checkpoints ~/ckpt --librispeech /data/LibriSpeech \\
        --alignments /data/librispeech_alignments --snips /data/SNIPS --fsc /data/fluent_speech_commands_dataset \\
        --speech-commands /data/speech_commands_v0.01 --speech-commands-test /data/speech_commands_test_set_v0.01 \\
        --voicebank /data/prepared/se/wav16k --sd /data/prepared/sd --out runs/paper_2410.23955
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from downstream_probes.paths import recipes_dir
from downstream_probes.pipelines.stages import (
    Phase,
    Stage,
    StageError,
    command_stage,
    console_script,
    has_test_metrics,
    run_phases,
)
from downstream_probes.s3prl.run_downstream import override_option
from downstream_probes.s3prl.sweep import best_checkpoint
from downstream_probes.tasks import TASK_NAMES, TASKS
from upstream_mrhubert.checkpoints.registry import CHECKPOINTS_BY_NAME
from upstream_mrhubert.output_folder import folder_lock

TABLE2_UPSTREAMS = ("hubert_base_ls960", "mrhubert_mono_base", "mrhubert_b4a", "mrhubert_b5a")
FIG2A_EXTRA_UPSTREAMS = ("mrhubert_b2a", "mrhubert_b2b")
ASR_SPLITS = ("train-clean-100", "dev-clean", "test-clean")


class ReproduceError(RuntimeError):
    """A step failed or an input is missing; the message names it and where to look."""


# ---------------------------------------------------------------------------------------------------------------
# Data options of each task (the keys each SUPERB config documents in its first lines)


def data_overrides(task: str, args: argparse.Namespace, bucket_dir: Path | None) -> dict | None:
    """The ``downstream_expert`` entries pointing ``task`` at the user's dataset, or None to skip the task."""
    if task == "asr" and args.librispeech:
        return {"datarc": {"libri_root": str(args.librispeech), "bucket_file": str(bucket_dir)}}
    if task == "sf" and args.snips:
        return {"corpus": {"path": str(args.snips)}, "text": {"slots_file": str(args.snips / "slots.txt")}}
    if task == "ic" and args.fsc:
        return {"datarc": {"file_path": str(args.fsc)}}
    if task == "ks" and args.speech_commands:
        if not args.speech_commands_test:
            raise ReproduceError("--speech-commands needs --speech-commands-test (speech_commands_test_set_v0.01)")
        return {
            "datarc": {
                "speech_commands_root": str(args.speech_commands),
                "speech_commands_test_root": str(args.speech_commands_test),
            }
        }
    if task == "se" and args.voicebank:
        return {"loaderrc": {f"{split}_dir": str(args.voicebank / split) for split in ("train", "dev", "test")}}
    if task == "sd" and args.sd:
        return {"loaderrc": {f"{split}_dir": str(args.sd / split) for split in ("train", "dev", "test")}}
    return None


def check_dataset_layout(task: str, args: argparse.Namespace) -> None:
    """Fail early, naming the missing file, rather than hours into a run."""
    required: list[Path] = []
    if task == "asr":
        required = [args.librispeech / split for split in ASR_SPLITS]
    elif task == "sf":
        required = [args.snips / "slots.txt", args.snips / "all.iob.snips.txt"]
    elif task == "ic":
        required = [args.fsc / "data" / f"{split}_data.csv" for split in ("train", "valid", "test")]
    elif task == "ks":
        required = [args.speech_commands / "_background_noise_", args.speech_commands_test]
    elif task == "se":
        required = [
            args.voicebank / split / kind / "wav.scp"
            for split in ("train", "dev", "test")
            for kind in ("noisy", "clean")
        ]
    elif task == "sd":
        required = [
            args.sd / split / name
            for split in ("train", "dev", "test")
            for name in ("wav.scp", "segments", "utt2spk", "rttm")
        ]
    missing = [path for path in required if not path.exists()]
    if missing:
        raise ReproduceError(
            f"{task}: dataset incomplete, missing {', '.join(map(str, missing[:4]))}"
            f"{' ...' if len(missing) > 4 else ''}; see docs/tasks.md for the expected layout"
        )


# ---------------------------------------------------------------------------------------------------------------
# Steps


def training_finished(expdir: Path) -> bool:
    """results.json exists and its best step was recorded at the end of training (not a killed run)."""
    return (expdir / "results.json").is_file() and (expdir / "layer_weights.json").is_file()


def plan(args: argparse.Namespace, out: Path, env: dict[str, str]) -> list[Stage]:
    run_downstream, mrsuperb = console_script("run_downstream.py"), console_script("mrsuperb")

    def stage(name: str, done: Callable[[], bool], command: Callable[[], list[str]], after=None) -> Stage:
        return command_stage(name, done, command, out / "logs", env, after)

    device = ["--device", args.device] if args.device else []

    def train_argv(upstream: str, task: str, expdir: Path, override: str, config: Path) -> list[str]:
        return [
            *(run_downstream, "-m", "train", "-a", "-u", upstream, "-d", task, "-c", str(config), "-p", str(expdir)),
            *("-o", override, "--seed", str(args.seed), *device),
        ]

    def evaluate_argv(task: str, expdir: Path) -> list[str]:
        checkpoint = f"{expdir}/<best dev checkpoint>" if args.dry_run else str(best_checkpoint(expdir))
        return [run_downstream, "-m", "evaluate", "-e", checkpoint, "-t", TASKS[task].test_split, *device]

    def cca_argv(upstream: str, prop: str, folder: Path) -> list[str]:
        return [
            *(mrsuperb, "cca", "-u", upstream, "--corpus", str(args.librispeech), "--alignments", str(args.alignments)),
            *("--split", args.cca_split, "--property", prop, "--seed", str(args.seed), "--out", str(folder), "--quiet"),
        ]

    def leaderboard_argv(fmt: str) -> list[str]:
        folders = existing(out / "runs", out / "analysis")
        return [
            *(mrsuperb, "leaderboard", *folders, "--format", fmt, "--profile", str(profile)),
            *("--out", str(out / f"leaderboard.{fmt}"), "--quiet"),
        ]

    prepared_asr = out / "prepared" / "asr"
    bucket_dir = args.len_for_bucket or prepared_asr / "len_for_bucket"
    steps: list[Stage] = []
    overrides = {t: found for t in args.tasks if (found := data_overrides(t, args, bucket_dir)) is not None}
    tasks = list(overrides)
    for task in tasks:
        if not args.dry_run:
            check_dataset_layout(task, args)
    if "asr" in tasks and args.len_for_bucket is None:
        steps.append(
            stage(
                "len_for_bucket",
                lambda: all((bucket_dir / f"{s}.csv").is_file() for s in ASR_SPLITS),
                lambda: [mrsuperb, "prepare", "asr", "--raw", str(args.librispeech), "--out", str(prepared_asr), "-q"],
            )
        )
    for upstream in args.upstreams:
        for task in tasks:
            expdir = out / "runs" / upstream / task
            override = override_option(overrides[task])
            config = (args.config_dir or recipes_dir() / "superb") / task / "config.yaml"
            steps.append(
                stage(
                    f"train {upstream}/{task}",
                    partial(training_finished, expdir),
                    partial(train_argv, upstream, task, expdir, override, config),
                )
            )
            steps.append(
                stage(
                    f"evaluate {upstream}/{task}",
                    partial(has_test_metrics, expdir, task),
                    partial(evaluate_argv, task, expdir),
                )
            )
            steps.append(
                stage(
                    f"export-weights {upstream}/{task}",
                    (expdir / "layer_weights.json").is_file,
                    partial(list, (mrsuperb, "export-weights", str(expdir))),
                )
            )
    if args.librispeech and args.alignments:
        for upstream in [*args.upstreams, *args.cca_only]:
            for prop in args.cca_properties:
                folder = out / "analysis" / upstream
                steps.append(
                    stage(
                        f"cca {upstream}/{prop}",
                        (folder / f"cca_{prop}.json").is_file,
                        partial(cca_argv, upstream, prop, folder),
                    )
                )
    profile = out / "profile.json"
    steps.append(
        stage(
            "profile",
            profile.is_file,
            lambda: [
                mrsuperb,
                "profile",
                "-u",
                *args.upstreams,
                *args.cca_only,
                "--threads",
                "1",
                "--out",
                str(profile),
            ],
        )
    )

    def existing(*folders: Path) -> list[str]:
        # Folders are looked up when the step runs: the analysis folder exists only when CCA ran.
        return [str(f) for f in folders if f.is_dir()] or [str(folders[0])]

    steps.append(
        stage(
            "compare",
            lambda: False,
            lambda: [
                mrsuperb,
                "compare",
                *existing(out / "runs", out / "analysis"),
                "--out",
                str(out / "compare.json"),
                "--plot-dir",
                str(out / "figures"),
            ],
        )
    )
    for fmt in ("md", "html"):
        steps.append(
            stage(
                f"leaderboard {fmt}",
                lambda: False,
                partial(leaderboard_argv, fmt),
            )
        )
    return steps


def check_checkpoints(folder: Path, upstreams: Sequence[str]) -> None:
    missing = []
    for name in upstreams:
        release = CHECKPOINTS_BY_NAME.get(name)
        if release is None:
            raise ReproduceError(f"{name} is not a released checkpoint (see `mrsuperb upstreams`)")
        if not (folder / release.filename).is_file():
            missing.append(f"{folder / release.filename} (from {release.url})")
    if missing:
        raise ReproduceError("checkpoints missing from --checkpoints:\n  " + "\n  ".join(missing))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        required=True,
        help="folder holding the released checkpoints under their release file names",
    )
    parser.add_argument("--out", type=Path, default=Path("runs") / "paper_2410.23955")
    parser.add_argument("--librispeech", type=Path, help="LibriSpeech/ root")
    parser.add_argument("--len-for-bucket", type=Path, help="existing s3prl len_for_bucket/ folder")
    parser.add_argument("--alignments", type=Path, help="MFA TextGrids of LibriSpeech dev-clean (Fig. 2a)")
    parser.add_argument("--snips", type=Path)
    parser.add_argument("--fsc", type=Path)
    parser.add_argument("--speech-commands", type=Path)
    parser.add_argument("--speech-commands-test", type=Path)
    parser.add_argument("--voicebank", type=Path)
    parser.add_argument("--sd", type=Path)
    parser.add_argument("--upstreams", nargs="+", default=list(TABLE2_UPSTREAMS))
    parser.add_argument(
        "--cca-only",
        nargs="*",
        default=list(FIG2A_EXTRA_UPSTREAMS),
        help="upstreams analysed with CCA (Fig. 2a) but not trained (default: B2-a, B2-b)",
    )
    parser.add_argument("--cca-properties", nargs="+", default=["word"], help="default: word (Fig. 2a)")
    parser.add_argument("--cca-split", default="dev-clean", help="LibriSpeech split of the CCA (default dev-clean)")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="folder of <task>/config.yaml (default recipes/superb: SUPERB's hyperparameters; "
        "recipes/quick for a smoke test of this script)",
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for option in (
            "checkpoints",
            "librispeech",
            "len_for_bucket",
            "alignments",
            "snips",
            "fsc",
            "speech_commands",
            "speech_commands_test",
            "voicebank",
            "sd",
            "config_dir",
        ):
            if getattr(args, option) is not None:  # absolute: the paths go into configs and logs
                setattr(args, option, getattr(args, option).expanduser().resolve())
        if not args.dry_run:
            check_checkpoints(args.checkpoints, [*args.upstreams, *args.cca_only])
        out = args.out.resolve()
        env = {**os.environ, "MRHUBERT_CKPT_DIR": str(args.checkpoints), "PYTHONUNBUFFERED": "1"}
        steps = plan(args, out, env)
        if args.dry_run:
            for step in steps:
                if not step.is_done() and step.describe is not None:
                    print(step.describe())
        else:
            with folder_lock(out, "--out", check_links=False):  # each run checks its own folder for links
                run_phases([Phase("paper", [steps])], desc="paper 2410.23955")
    except (ReproduceError, StageError, FileNotFoundError, ValueError) as error:
        print(f"reproduce.py: error: {error}", file=sys.stderr)
        return 2
    if not args.dry_run:
        print((out / "leaderboard.md").read_text(encoding="utf-8"))
        print(f"HTML page with the figures: {out / 'leaderboard.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
