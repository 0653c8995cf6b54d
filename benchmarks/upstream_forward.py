"""Forward speed and peak memory: our MR-HuBERT vs s3prl's ``MultiresHubertModel``, side by side.

Both models load the same base-size random weights (768-dim, 4-4-4 layers, 12 heads, FFN 3072, the standard
512-channel CNN) from one fairseq-format file and run on CPU under ``torch.no_grad()`` on a batch of 4 x 8 s with
an all-False padding mask (what s3prl's expert passes). s3prl's states are collected with forward hooks as its
expert does (every layer input and block output); ours are returned by ``forward``.

Speed: one worker process holds both models, runs one warm-up forward of each, then ``--repeats`` timed forwards
of each, alternating (ours first on even rounds, s3prl first on odd ones) so that load from other processes falls
on both alike; the ratio of the medians is reported (and of the best runs). Memory: each model in fresh worker
processes (neither inherits the other's allocator state): the peak resident memory is reset
(``/proc/self/clear_refs``) after loading, and the peak RSS of the first forward above the RSS before it is reported.

    python benchmarks/upstream_forward.py [--repeats 5] [--memory-repeats 2] [--threads N] [--batch 4] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

SAMPLE_RATE = 16000
IMPLEMENTATIONS = ("ours", "s3prl")


def _base_configs() -> tuple[dict[str, Any], dict[str, Any]]:
    """mono-base's architecture: fairseq's base yaml (4-4-4, sampler kernel 1) on fairseq's dataclass defaults."""
    from upstream_mrhubert.config import FAIRSEQ_MODEL_DEFAULTS, FAIRSEQ_TASK_DEFAULTS

    model_cfg = {
        **FAIRSEQ_MODEL_DEFAULTS,
        "label_rate": 50.0,
        "label_rate_ratios": [1, 2],
        "encoder_layers": 4,
        "conv_adapator_kernal": 1,
        "final_dim": 256,
        "use_single_target": True,
    }
    task_cfg = {**FAIRSEQ_TASK_DEFAULTS, "label_rate_ratios": [1, 2]}
    return model_cfg, task_cfg


def write_base_checkpoint(path: Path, seed: int = 0) -> Path:
    from upstream_mrhubert.checkpoint import write_fairseq_checkpoint
    from upstream_mrhubert.tiny import SPECIAL_SYMBOLS, tiny_state_dict

    model_cfg, task_cfg = _base_configs()
    dictionaries = [SPECIAL_SYMBOLS + [str(label) for label in range(500)]]
    state = tiny_state_dict(model_cfg, task_cfg, dictionaries, seed=seed)
    return write_fairseq_checkpoint(
        path, model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state, dictionaries_symbols=dictionaries
    )


# ---------------------------------------------------------------------------------------------------------------
# Workers (separate processes)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read())[1])


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _build(implementation: str, checkpoint: Path) -> Any:
    """A callable (waveforms, padding_mask) -> list of all hidden states, for either implementation."""
    from upstream_mrhubert.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    if implementation == "ours":
        from upstream_mrhubert.model import MultiresHubert

        model = MultiresHubert.from_checkpoint(loaded)
        return lambda wavs, mask: [state.features for state in model(wavs, mask)]

    from s3prl.upstream.multires_hubert.hubert_model import (
        MultiresHubertConfig,
        MultiresHubertModel,
        MultiresHubertPretrainingConfig,
    )
    from s3prl.upstream.utils import merge_with_parent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = MultiresHubertModel(
            merge_with_parent(MultiresHubertConfig, loaded.model_cfg),
            merge_with_parent(MultiresHubertPretrainingConfig, loaded.task_cfg),
            loaded.dictionaries_symbols,
        )
    model.load_state_dict(loaded.state_dict, strict=True)
    model.train(False)
    recorded: list[torch.Tensor] = []
    for block in [*model.encoders, model.middle_encoder, *model.decoders]:
        for layer in block.layers:
            layer.register_forward_hook(lambda m, i, o: recorded.append(i[0].transpose(0, 1)))
        block.register_forward_hook(lambda m, i, o: recorded.append(o[0]))

    def run(wavs: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        recorded.clear()
        model.extract_features(wavs, padding_mask=mask, mask=False)
        return list(recorded)

    return run


def _input(batch: int, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator)
    return wavs, torch.zeros_like(wavs, dtype=torch.bool)


def speed_worker(checkpoint: Path, batch: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Both models in one process, one warm-up each, then ``repeats`` alternating timed forwards."""
    models = {name: _build(name, checkpoint) for name in IMPLEMENTATIONS}
    wavs, mask = _input(batch, seconds)
    times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    with torch.no_grad():
        for model in models.values():
            model(wavs, mask)  # warm-up
        for repeat in range(repeats):
            order = IMPLEMENTATIONS if repeat % 2 == 0 else IMPLEMENTATIONS[::-1]
            for name in order:
                start = time.perf_counter()
                states = models[name](wavs, mask)
                times[name].append(time.perf_counter() - start)
                del states
    return {"times_s": times, "threads": torch.get_num_threads()}


def memory_worker(implementation: str, checkpoint: Path, batch: int, seconds: float) -> dict[str, Any]:
    """One model in a fresh process: peak RSS of its first forward above the RSS before it.

    The first forward, because after any earlier one the C allocator keeps freed blocks resident (so a later peak
    would partly hide inside the baseline, and more so for the model with smaller blocks)."""
    model = _build(implementation, checkpoint)
    wavs, mask = _input(batch, seconds)
    with torch.no_grad():
        baseline = _status_kib("VmRSS")
        _reset_peak_rss()
        states = model(wavs, mask)
        peak = _status_kib("VmHWM")
        del states
    return {"implementation": implementation, "peak_delta_mib": (peak - baseline) / 1024}


# ---------------------------------------------------------------------------------------------------------------
# Driver


def _run_worker(arguments: list[str], threads: int | None) -> dict[str, Any]:
    command = [sys.executable, __file__, *arguments]
    environment = dict(os.environ)
    if threads:
        environment["OMP_NUM_THREADS"] = environment["MKL_NUM_THREADS"] = str(threads)
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"worker {' '.join(arguments[:2])} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed forwards per model")
    parser.add_argument("--memory-repeats", type=int, default=2, help="fresh worker processes per model for memory")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's default)")
    parser.add_argument("--worker", choices=("speed", *IMPLEMENTATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "speed":
        print(json.dumps(speed_worker(args.checkpoint, args.batch, args.seconds, args.repeats)))
        return 0
    if args.worker:
        print(json.dumps(memory_worker(args.worker, args.checkpoint, args.batch, args.seconds)))
        return 0

    from tqdm import tqdm

    shape = ["--batch", str(args.batch), "--seconds", str(args.seconds)]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_base_checkpoint(Path(folder) / "mrhubert_base_random.pt")
        jobs = [["--worker", "speed", "--repeats", str(args.repeats)]]
        for repeat in range(args.memory_repeats):
            names = IMPLEMENTATIONS if repeat % 2 == 0 else IMPLEMENTATIONS[::-1]
            jobs += [["--worker", name] for name in names]
        results = [
            _run_worker([*job, "--checkpoint", str(checkpoint), *shape], args.threads)
            for job in tqdm(jobs, desc="workers", unit="process")
        ]

    speed, memory_runs = results[0], results[1:]
    times = speed["times_s"]
    memory = {
        name: [run["peak_delta_mib"] for run in memory_runs if run["implementation"] == name]
        for name in IMPLEMENTATIONS
    }
    print(
        f"\nMR-HuBERT base (768-d, 4-4-4), random weights, batch {args.batch} x {args.seconds:g} s, CPU, "
        f"{speed['threads']} thread(s); {args.repeats} alternating forwards per model after a warm-up"
    )
    print(f"{'':8}{'median (s)':>12}{'min (s)':>10}   {'forwards (s)':<48}{'peak RSS above start (MiB)'}")
    for name in IMPLEMENTATIONS:
        listing = " ".join(f"{t:.2f}" for t in times[name])
        peaks = " ".join(f"{m:.0f}" for m in memory[name])
        print(f"{name:8}{statistics.median(times[name]):>12.2f}{min(times[name]):>10.2f}   {listing:<48}{peaks}")
    speedup = statistics.median(times["s3prl"]) / statistics.median(times["ours"])
    best_speedup = min(times["s3prl"]) / min(times["ours"])
    print(
        f"\nspeed: ours is {speedup:.2f}x as fast as s3prl by the medians ({best_speedup:.2f}x by the best runs); "
        "target >= 1.3x"
    )
    if memory["ours"] and memory["s3prl"]:
        memory_ratio = statistics.median(memory["ours"]) / statistics.median(memory["s3prl"])
        print(f"peak memory: ours uses {memory_ratio:.2f}x s3prl's; target <= 1.0x")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    sys.exit(main())
