"""Corpus synthesis speed: real-time factor per CPU core, for espeak-ng synthesis alone and for each full task build.

RTF per core = seconds of audio produced / CPU seconds spent (this process, its children and the synthesis workers
forked by multiprocessing's fork server, read from /proc), so it does not depend on how busy the machine is; wall-clock RTF is printed beside
it. The issue asks for >= 30x real time per core. Every measurement runs in its own subprocess so that CHILDREN
counts only its own workers.

    python benchmarks/corpus_synthesis.py                    # synthesis + all six tasks, 200 utterances each
    python benchmarks/corpus_synthesis.py --utterances 60 --tasks asr sd
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _forkserver_cpu_seconds() -> float:
    """CPU of multiprocessing's fork server and of the (reaped) workers it forked, from /proc (Linux).

    Synthesis workers are children of the fork server, not of this process, so RUSAGE_CHILDREN misses them."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + _forkserver_cpu_seconds()


def measure_synthesis(utterances: int) -> dict:
    """espeak-ng synthesis, resampling and timing extraction only (no files)."""
    import numpy as np

    from downstream_probes.corpora import text
    from downstream_probes.corpora.espeak import SynthesisRequest, synthesize_many
    from downstream_probes.corpora.speakers import draw_voices

    rng = np.random.default_rng(0)
    voices = draw_voices(rng, [None] * 8)
    requests = [SynthesisRequest(text.asr_sentence(rng), voices[i % 8], seed=i) for i in range(utterances)]
    wall, cpu = time.perf_counter(), _cpu_seconds()
    seconds = sum(s.duration for s in synthesize_many(requests))
    return {"audio_s": seconds, "wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu}


def measure_build(task: str, utterances: int) -> dict:
    """A whole ``build_corpus`` (synthesis, mixing, noise, files, alignments, manifest)."""
    from downstream_probes.corpora import build_corpus, load_manifest

    with tempfile.TemporaryDirectory() as folder:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        root = build_corpus(task, os.path.join(folder, task), utterances=utterances)
        elapsed, used = time.perf_counter() - wall, _cpu_seconds() - cpu
        seconds = load_manifest(root)["duration_seconds"]
    return {"audio_s": seconds, "wall_s": elapsed, "cpu_s": used}


def _run_child(kind: str, task: str, utterances: int) -> dict:
    env = dict(os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"))
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, task, str(utterances)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--tasks", nargs="*", default=["asr", "sf", "ic", "ks", "se", "sd"])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "TASK", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, task, count = args.child
        result = measure_synthesis(int(count)) if kind == "synthesis" else measure_build(task, int(count))
        print(json.dumps(result))
        return 0

    rows = [("synthesis only", _run_child("synthesis", "-", args.utterances))]
    for task in args.tasks:
        # sd counts recordings of 3-4 turns each: a quarter as many gives comparable work
        count = max(args.utterances // 4, 4) if task == "sd" else args.utterances
        rows.append((f"build {task} ({count})", _run_child("build", task, count)))
    print(f"{'measurement':<24}{'audio s':>10}{'cpu s':>9}{'wall s':>9}{'RTF/core':>10}{'RTF wall':>10}")
    for name, row in rows:
        print(
            f"{name:<24}{row['audio_s']:>10.1f}{row['cpu_s']:>9.2f}{row['wall_s']:>9.2f}"
            f"{row['audio_s'] / row['cpu_s']:>9.1f}x{row['audio_s'] / row['wall_s']:>9.1f}x"
        )
    worst = min(row["audio_s"] / row["cpu_s"] for _, row in rows)
    print(f"slowest: {worst:.1f}x real time per core (target >= 30x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
