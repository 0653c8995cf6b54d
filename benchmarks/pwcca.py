"""PWCCA held-out protocol: ours against the reference's computation, side by side, interleaved.

The reference (ankitapasad/layerwise-analysis) recomputes ``np.cov`` of the whole train part for every
epsilon pair, inverts with ``pinv`` then takes ``eigh`` of the inverse, scores every fit on its own training
data, then scores every fit on dev and the best one on test. ``reference_protocol`` below restates exactly
that computation in NumPy float64 (same splits, same epsilon schedule, same number of fits), without its file
I/O, so that only the arithmetic is compared.

Two workloads, same data for both sides (generated from a seed in each subprocess):
  word level:  7000 x 768 representations vs 500-word one-hot labels (<= 15 per word)
  frame level: 180k x 768 representations (float32) vs 80-dim log-mel-like features, no labels

Each measurement runs in its own subprocess, so ``ru_maxrss`` is that run's own peak. Every run of the reference
sits between runs of ours (default signs) and of ours with the reference's LAPACK signs; medians are compared.
Each is measured at one BLAS thread and at the default thread count. Wall time and the process's CPU time are
both reported: on a machine shared with other jobs, the CPU time of a single-threaded run is the steadier
measure of the work done (the load average is printed before and after).

    python benchmarks/pwcca.py                 # everything (many minutes: the reference is slow)
    python benchmarks/pwcca.py --levels word --threads 1   # one workload, single-threaded only
    python benchmarks/pwcca.py --levels word --reference-repeats 3   # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
TARGET_SPEEDUP = 15.0
TARGET_FRAME_PEAK_GB = 0.8


# --------------------------------------------------------------------------------------------- data


def word_level_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """7000 word segments of 500 words (400 x 15 + 100 x 10), 768-dim float32 views, one-hot labels."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(np.arange(400), 15), np.repeat(np.arange(400, 500), 10)])
    labels = labels[rng.permutation(len(labels))]
    one_hot = np.eye(500)[labels]
    word_vectors = rng.standard_normal((500, 768)) * 0.4
    reps = word_vectors[labels] + rng.standard_normal((len(labels), 768)) + rng.standard_normal(768) * 2
    return reps.astype(np.float32), one_hot, labels


def frame_level_data(seed: int = 0, n_frames: int = 180_000, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """80-dim smooth log-mel-like frames and a 768-dim float32 noisy non-linear image of them.

    Built chunk by chunk straight into float32 arrays, so that generating the data does not raise the peak
    memory above what holding it takes (the peak is part of what is measured).
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((80, 80)) / 9.0
    projection = rng.standard_normal((80, 768)) * 0.5
    offset = rng.standard_normal(768) * 2
    mel = np.empty((n_frames, 80), dtype=np.float32)
    reps = np.empty((n_frames, 768), dtype=np.float32)
    state = np.zeros((1, 80))
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        innovations = rng.standard_normal((stop - start, 80)) * 0.45
        # AR(1) along time: neighbouring frames are correlated, as in speech
        smooth, state = lfilter([1.0], [1.0, -0.9], innovations, axis=0, zi=state * 0.9)
        state = smooth[-1:]
        frames = (smooth @ mixing) * 0.15 + 0.5
        mel[start:stop] = frames
        reps[start:stop] = np.tanh(frames @ projection) + rng.standard_normal((stop - start, 768)) * 0.8 + offset
    return mel, reps


# --------------------------------------------------------------------------------------------- reference


def reference_protocol(x: np.ndarray, y: np.ndarray, labels, seed: int = 0) -> float:
    """The reference protocol's computation on (samples, dims) inputs, laid out (dims, samples) as it does."""
    import numpy.linalg

    from downstream_probes.analysis.splits import epsilon_schedule, stratified_splits
    from downstream_probes.testing.reference_pwcca import reference_projections, reference_score

    rng = np.random.default_rng(seed)
    view1_full, view2_full = x.T, y.T
    splits = stratified_splits(x.shape[0], labels, 10, rng)
    remaining = list(range(10))
    test_scores = []
    for _ in range(5):
        dev, test = (int(i) for i in rng.choice(remaining, size=2, replace=False))
        remaining = [i for i in remaining if i not in (dev, test)]
        train = np.sort(np.concatenate([splits[i] for i in range(10) if i not in (dev, test)]))
        view1, view2 = view1_full.T[train].T, view2_full.T[train].T
        fits = []
        for epsilon_x, epsilon_y in epsilon_schedule(rng):
            try:
                fit = reference_projections(view1.T, view2.T, epsilon_x, epsilon_y)
                reference_score(view1.T, view2.T, *fit)  # the reference scores every fit on its training data
            except numpy.linalg.LinAlgError:
                continue
            fits.append(fit)
            if len(fits) == 6:
                break
        del view1, view2
        if not fits:
            continue
        dev1, dev2 = view1_full.T[splits[dev]].T, view2_full.T[splits[dev]].T
        dev_scores = [reference_score(dev1.T, dev2.T, *fit) for fit in fits]
        best = fits[int(np.argmax(dev_scores))]
        test_scores.append(reference_score(view1_full.T[splits[test]], view2_full.T[splits[test]], *best))
        if len(test_scores) == 3:
            break
    return float(np.mean(test_scores))


# --------------------------------------------------------------------------------------------- one run


def run_one(side: str, level: str, sign_convention: str) -> dict:
    """Generate the data, time one side's full protocol, report seconds (wall, CPU), score and peak RSS."""
    import resource

    from downstream_probes.analysis import cca_score  # imported before the clock starts, as numpy is for both

    if level == "word":
        x, y, labels = word_level_data()
    else:
        # The reference's cca_mel puts the mel features first (view1) and the representations second.
        x, y = frame_level_data()
        labels = None
    cpu, start = time.process_time(), time.perf_counter()
    if side == "reference":
        score = reference_protocol(x, y, labels)
    else:
        score = cca_score(x, y, labels, seed=0, sign_convention=sign_convention)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"side": side, "level": level, "seconds": seconds, "cpu": cpu, "score": score, "peak_gb": peak_kb / 1024**2}


def measure(side: str, level: str, sign_convention: str, threads: str) -> dict:
    """One run in a fresh subprocess; ``threads`` is ``"1"`` or ``"default"`` (the libraries' own choice)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads != "default":
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
    command = [sys.executable, __file__, "--child", side, level, sign_convention]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=["word", "frame"], choices=["word", "frame"])
    parser.add_argument(
        "--threads", nargs="+", default=["1", "default"], choices=["1", "default"],
        help="BLAS thread settings to measure (default: 1 and the default count)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours per workload and mode (default 3)")
    parser.add_argument(
        "--reference-repeats", type=int, default=2,
        help="runs of the reference per workload, each between runs of ours (default 2)",
    )  # fmt: skip
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "LEVEL", "SIGNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(*args.child)))
        return 0
    repeats = max(args.repeats, args.reference_repeats + 1)
    print(
        f"every run in its own subprocess; ours runs {repeats} times per mode, interleaved with "
        f"{args.reference_repeats} run(s) of the reference; medians compared; {os.cpu_count()} cores, load average "
        f"{_load()}; targets >= {TARGET_SPEEDUP:.0f}x (default signs, one thread), frame-level peak <= "
        f"{TARGET_FRAME_PEAK_GB} GB"
    )
    all_met = True
    for level in args.levels:
        for threads in args.threads:
            runs: dict[str, list[dict]] = {"canonical": [], "lapack": [], "reference": []}
            for index in range(repeats):
                runs["canonical"].append(measure("ours", level, "canonical", threads))
                if index < args.reference_repeats:
                    runs["reference"].append(measure("reference", level, "canonical", threads))
                runs["lapack"].append(measure("ours", level, "lapack", threads))
            reference = _summary(runs["reference"])
            print(
                f"{level:>5} level, {threads} thread(s): reference {reference['seconds']:6.1f} s wall, "
                f"{reference['cpu']:6.1f} s CPU (runs: {_list(runs['reference'])}), {reference['peak_gb']:.2f} GB peak; "
                f"score {reference['score']:.6f}"
            )
            for mode, title in (("canonical", "ours"), ("lapack", "ours, reference's LAPACK signs")):
                ours = _summary(runs[mode])
                speedup, cpu_speedup = reference["seconds"] / ours["seconds"], reference["cpu"] / ours["cpu"]
                cpu_text = f", {cpu_speedup:.1f}x by CPU time" if threads == "1" else ""
                print(
                    f"      {title:<32} {ours['seconds']:6.2f} s wall, {ours['cpu']:6.2f} s CPU "
                    f"(runs: {_list(runs[mode])}), {ours['peak_gb']:.2f} GB peak -> {speedup:5.1f}x faster{cpu_text}; "
                    f"score {ours['score']:.6f}"
                )
                if mode == "canonical" and threads == "1":
                    all_met &= speedup >= TARGET_SPEEDUP
                    all_met &= level != "frame" or ours["peak_gb"] <= TARGET_FRAME_PEAK_GB
    print(f"load average now {_load()}")
    print("targets met" if all_met else "targets NOT met")
    return 0


def _summary(runs: list[dict]) -> dict:
    """Medians of the runs' times (the mean of the middle two for an even count), the first score, the peak."""
    return {
        "seconds": statistics.median(run["seconds"] for run in runs),
        "cpu": statistics.median(run["cpu"] for run in runs),
        "score": runs[0]["score"],
        "peak_gb": max(run["peak_gb"] for run in runs),
    }


def _list(runs: list[dict]) -> str:
    return ", ".join(f"{run['seconds']:.2f}" for run in runs)


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
