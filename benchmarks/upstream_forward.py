"""Forward speed, efficiency and peak memory: our MR-HuBERT (fp32, its opt-in paths, bf16) vs s3prl's, side by side.

Every model loads the same base-size random weights (768-dim, 4-4-4 layers, 12 heads, FFN 3072, the standard
512-channel CNN) from one fairseq-format file and runs under ``torch.no_grad()`` with an all-False padding mask
(what s3prl's expert passes). s3prl's states are collected with forward hooks as its expert does; ours are
returned by ``forward``. Variants:

* ``s3prl fp32``: s3prl's ``MultiresHubertModel``, the reference of every ratio;
* ``ours fp32``: the default path (plain modules);
* ``ours streamed``: the opt-in streamed CNN (upstream option ``cnn_segment_frames``, 50 frames = 1 s);
* ``ours bf16``: the default path under ``torch.autocast("cpu", torch.bfloat16)`` (upstream option ``precision``).

Speed: for each thread count (1 and torch's default) and each batch shape (4 x 8 s, 1 x 10 s) one worker process
holds every variant, runs one warm-up forward of each, then ``--repeats`` rounds in which every variant runs once,
the order rotating from round to round, together with a 4096 x 4096 matrix product in fp32 and in bf16 (the
machine's peak under the same load). Medians are compared. FLOPs come from torch's flop counter on one forward
(as ``mrsuperb profile`` counts them, CPU attention included);
GFLOP/s = FLOPs / median time, shown as a share of the fp32 and the bf16 product peak. The bf16 variant's relative
error per state (||bf16 - fp32|| / ||fp32||) is printed too. Memory: each variant in fresh worker processes,
peak resident memory of its first forward above the resident memory before it (``/proc/self/clear_refs``).
On CUDA (when a GPU is present) ours in fp32, bf16 and fp16 against s3prl's fp32 at batch 8 x 15 s, with peak CUDA
memory.

    python benchmarks/upstream_forward.py [--repeats 5] [--threads 1 0] [--shapes 4x8 1x10] [--memory-repeats 1]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SAMPLE_RATE = 16000
VARIANTS = ("s3prl fp32", "ours fp32", "ours streamed", "ours bf16")
REFERENCE = "s3prl fp32"
PEAKS = ("matmul fp32", "matmul bf16")
STREAMED_SEGMENT_FRAMES = 50  # 1 s of audio per CNN segment
MATMUL_SIZE = 2048  # 17 GFLOP: a second or two at one loaded thread, long enough to reach the peak
PROBE_SIZE = 512  # the quick check whether bf16 products are native on this CPU
ERROR_SECONDS = 1.0  # the clip that measures bf16's error where bf16 is too slow to time
CUDA_VARIANTS = ("s3prl fp32", "ours fp32", "ours bf16", "ours fp16")


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
    from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
    from upstream_mrhubert.testing.tiny import SPECIAL_SYMBOLS, tiny_state_dict

    model_cfg, task_cfg = _base_configs()
    dictionaries = [SPECIAL_SYMBOLS + [str(label) for label in range(500)]]
    state = tiny_state_dict(model_cfg, task_cfg, dictionaries, seed=seed)
    return write_fairseq_checkpoint(
        path, model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state, dictionaries_symbols=dictionaries
    )


# ---------------------------------------------------------------------------------------------------------------
# Models


Forward = Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]


def _ours(checkpoint: Path, device: str) -> Any:
    from upstream_mrhubert.checkpoints.io import load_checkpoint
    from upstream_mrhubert.model import MultiresHubert

    return MultiresHubert.from_checkpoint(load_checkpoint(checkpoint)).to(device)


def _ours_forward(model: Any, *, precision: str = "fp32", segment_frames: int | None = None) -> Forward:
    from upstream_mrhubert.precision import autocast

    def run(wavs: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        model.cnn_segment_frames = segment_frames
        with autocast(precision, wavs.device):
            return [state.features for state in model(wavs, mask)]

    return run


def _s3prl_forward(checkpoint: Path, device: str) -> Forward:
    from s3prl.upstream.multires_hubert.hubert_model import (
        MultiresHubertConfig,
        MultiresHubertModel,
        MultiresHubertPretrainingConfig,
    )
    from s3prl.upstream.utils import merge_with_parent

    from upstream_mrhubert.checkpoints.io import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = MultiresHubertModel(
            merge_with_parent(MultiresHubertConfig, loaded.model_cfg),
            merge_with_parent(MultiresHubertPretrainingConfig, loaded.task_cfg),
            loaded.dictionaries_symbols,
        )
    model.load_state_dict(loaded.state_dict, strict=True)
    model.train(False)
    model.to(device)
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


def _forwards(checkpoint: Path, variants: tuple[str, ...], device: str = "cpu") -> dict[str, Forward]:
    ours = _ours(checkpoint, device) if any(v.startswith("ours") for v in variants) else None
    built: dict[str, Forward] = {}
    for variant in variants:
        if variant == "s3prl fp32":
            built[variant] = _s3prl_forward(checkpoint, device)
        elif variant == "ours streamed":
            built[variant] = _ours_forward(ours, segment_frames=STREAMED_SEGMENT_FRAMES)
        else:
            built[variant] = _ours_forward(ours, precision=variant.split()[1])
    return built


def _input(batch: int, seconds: float, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator)
    return wavs.to(device), torch.zeros_like(wavs, dtype=torch.bool).to(device)


def _matmul(dtype: torch.dtype) -> Callable[[], None]:
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(dtype)
    return lambda: torch.mm(a, b)


def bf16_probe() -> dict[str, float]:
    """GFLOP/s of a 512 x 512 product in fp32 and bf16 (best of 3): CPUs without AVX512-BF16/AMX emulate bf16
    products, tens of times slower than fp32, and timing a bf16 forward there would take tens of minutes."""
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype), torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * PROBE_SIZE**3 / best / 1e9
    return rates


def _count_flops(forward: Forward, wavs: torch.Tensor, mask: torch.Tensor) -> int:
    """torch's flop counter as ``mrsuperb profile`` uses it (CPU attention counted)."""
    from downstream_probes.reports.profile.measure import flop_counter

    with flop_counter() as counter:
        forward(wavs, mask)
    return int(counter.get_total_flops())


def _relative_errors(reference: list[torch.Tensor], other: list[torch.Tensor]) -> list[float]:
    return [float((b.float() - a).norm() / a.norm()) for a, b in zip(reference, other, strict=True)]


# ---------------------------------------------------------------------------------------------------------------
# Workers (separate processes)


def speed_worker(checkpoint: Path, batch: int, seconds: float, repeats: int, threads: int) -> dict[str, Any]:
    """Every variant and both matrix products in one process: a warm-up, then ``repeats`` rotating rounds
    (bf16 only where the CPU has native bf16 products; its error is measured either way)."""
    if threads:
        torch.set_num_threads(threads)
    probe = bf16_probe()
    native_bf16 = probe["bf16"] > probe["fp32"]
    forwards = _forwards(checkpoint, VARIANTS)
    wavs, mask = _input(batch, seconds)
    timed = [name for name in VARIANTS if native_bf16 or "bf16" not in name]
    items: dict[str, Callable[[], Any]] = {name: (lambda f=forwards[name]: f(wavs, mask)) for name in timed}
    items["matmul fp32"] = _matmul(torch.float32)
    if native_bf16:
        items["matmul bf16"] = _matmul(torch.bfloat16)
    names = list(items)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        flops = _count_flops(forwards["ours fp32"], wavs, mask)
        short = (wavs, mask) if native_bf16 else _input(1, ERROR_SECONDS)
        exact = forwards["ours fp32"](*short)
        errors = _relative_errors(exact, forwards["ours bf16"](*short))
        del exact
        for item in items.values():
            item()  # warm-up
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                result = items[name]()
                times[name].append(time.perf_counter() - start)
                del result
    return {
        "times_s": times,
        "threads": torch.get_num_threads(),
        "flops": flops,
        "bf16_errors": errors,
        "bf16_probe_gflops": probe,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"{field}:\s+(\d+)", status.read())
    assert match is not None
    return int(match[1])


def memory_worker(variant: str, checkpoint: Path, batch: int, seconds: float) -> dict[str, Any]:
    """One variant in a fresh process: peak RSS of its first forward above the RSS before it (after any later
    forward the C allocator keeps freed blocks resident, hiding part of the peak in the baseline)."""
    forward = _forwards(checkpoint, (variant,))[variant]
    wavs, mask = _input(batch, seconds)
    with torch.no_grad():
        baseline = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        states = forward(wavs, mask)
        peak = _status_kib("VmHWM")
        del states
    return {"variant": variant, "peak_delta_mib": (peak - baseline) / 1024}


def cuda_worker(checkpoint: Path, batch: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Ours in fp32/bf16/fp16 against s3prl's fp32 on the GPU, rotating rounds, peak CUDA memory per variant."""
    forwards = _forwards(checkpoint, CUDA_VARIANTS, device="cuda")
    wavs, mask = _input(batch, seconds, device="cuda")
    times: dict[str, list[float]] = {name: [] for name in CUDA_VARIANTS}
    memory: dict[str, float] = {}
    with torch.no_grad():
        for name, forward in forwards.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            forward(wavs, mask)
            torch.cuda.synchronize()
            memory[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        for repeat in range(repeats):
            shift = repeat % len(CUDA_VARIANTS)
            for name in CUDA_VARIANTS[shift:] + CUDA_VARIANTS[:shift]:
                torch.cuda.synchronize()
                start = time.perf_counter()
                forwards[name](wavs, mask)
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    return {"times_s": times, "peak_cuda_mib": memory, "device": torch.cuda.get_device_name()}


# ---------------------------------------------------------------------------------------------------------------
# Driver


def _run_worker(arguments: list[str], threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, *arguments]
    environment = dict(os.environ)
    if threads:
        environment["OMP_NUM_THREADS"] = environment["MKL_NUM_THREADS"] = str(threads)
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"worker {' '.join(arguments[:2])} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _parse_shape(text: str) -> tuple[int, float]:
    batch, _, seconds = text.partition("x")
    return int(batch), float(seconds)


def _print_speed(shape: str, result: dict[str, Any]) -> None:
    times = {name: statistics.median(values) for name, values in result["times_s"].items()}
    flops = result["flops"]
    peak = {name: 2 * MATMUL_SIZE**3 / times[name] / 1e9 for name in PEAKS if name in times}
    probe = result["bf16_probe_gflops"]
    bf16_peak = f"bf16 {peak['matmul bf16']:.0f} GFLOP/s" if "matmul bf16" in peak else "bf16 not native here"
    print(
        f"\n{shape} s, {result['threads']} thread(s): {flops / 1e9:.0f} GFLOP per forward (torch's flop counter); "
        f"matrix-product peak ({MATMUL_SIZE}^2) fp32 {peak['matmul fp32']:.0f} GFLOP/s, {bf16_peak}"
    )
    print(f"{'':16}{'median s':>9}{'min s':>8}{'vs s3prl':>10}{'GFLOP/s':>9}{'% fp32 peak':>13}{'% bf16 peak':>13}")
    for name in VARIANTS:
        if name not in times:
            estimate = flops / (probe["bf16"] * 1e9)
            print(
                f"{name:16}  not timed: CPU capability {result['cpu_capability']} has no native bf16 products "
                f"({PROBE_SIZE}^2 probe: bf16 {probe['bf16']:.1f} vs fp32 {probe['fp32']:.1f} GFLOP/s; "
                f"about {estimate:.0f} s per forward)"
            )
            continue
        achieved = flops / times[name] / 1e9
        bf16_share = f"{100 * achieved / peak['matmul bf16']:>12.0f}%" if "matmul bf16" in peak else f"{'-':>13}"
        print(
            f"{name:16}{times[name]:>9.2f}{min(result['times_s'][name]):>8.2f}{times[REFERENCE] / times[name]:>9.2f}x"
            f"{achieved:>9.0f}{100 * achieved / peak['matmul fp32']:>12.0f}%{bf16_share}"
        )
    errors = result["bf16_errors"]
    clip = "this input" if "ours bf16" in times else f"a 1 x {ERROR_SECONDS:g} s clip"
    print(
        f"ours bf16 relative error per state on {clip}: median {statistics.median(errors):.2e}, "
        f"max {max(errors):.2e} over {len(errors)} states"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rotating rounds of timed forwards")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts; 0 = torch's default")
    parser.add_argument("--shapes", nargs="+", default=["4x8", "1x10"], help="BATCHxSECONDS")
    parser.add_argument("--memory-repeats", type=int, default=1, help="fresh processes per variant and shape")
    parser.add_argument("--cuda-shape", default="8x15")
    parser.add_argument("--worker", choices=("speed", "memory", "cuda"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        batch, seconds = _parse_shape(args.shape)
        if args.worker == "speed":
            result = speed_worker(args.checkpoint, batch, seconds, args.repeats, args.worker_threads)
        elif args.worker == "memory":
            result = memory_worker(args.variant, args.checkpoint, batch, seconds)
        else:
            result = cuda_worker(args.checkpoint, batch, seconds, args.repeats)
        print(json.dumps(result))
        return 0

    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_base_checkpoint(Path(folder) / "mrhubert_base_random.pt")
        common = ["--checkpoint", str(checkpoint), "--repeats", str(args.repeats)]
        jobs: list[tuple[str, list[str], int]] = []
        for threads in args.threads:
            for shape in args.shapes:
                jobs.append(
                    ("speed", ["--worker", "speed", "--shape", shape, "--worker-threads", str(threads)], threads)
                )
        probe = bf16_probe()
        memory_variants = tuple(v for v in VARIANTS if probe["bf16"] > probe["fp32"] or "bf16" not in v)
        for repeat in range(args.memory_repeats):
            for shape in args.shapes:
                order = memory_variants if repeat % 2 == 0 else memory_variants[::-1]
                jobs += [("memory", ["--worker", "memory", "--variant", v, "--shape", shape], 0) for v in order]
        results = [
            (kind, job, _run_worker([*job, *common], threads))
            for kind, job, threads in tqdm(jobs, desc="workers", unit="process")
        ]
        cuda = None
        if torch.cuda.is_available():
            cuda = _run_worker(["--worker", "cuda", "--shape", args.cuda_shape, *common], 0)

    print(
        "\nMR-HuBERT base (768-d, 4-4-4), random weights, CPU "
        f"({os.cpu_count()} logical cores, torch {torch.__version__}); {args.repeats} rotating rounds after a "
        "warm-up, medians; ratios are s3prl fp32's median time / the variant's"
    )
    for kind, job, result in results:
        if kind == "speed":
            _print_speed(job[job.index("--shape") + 1], result)
    print(f"\npeak RSS of the first forward above the RSS before it (MiB), {args.memory_repeats} process(es) each")
    print(f"{'':16}" + "".join(f"{shape + ' s':>12}" for shape in args.shapes))
    for variant in memory_variants:
        cells = []
        for shape in args.shapes:
            peaks = [
                r["peak_delta_mib"]
                for kind, job, r in results
                if kind == "memory" and r["variant"] == variant and job[job.index("--shape") + 1] == shape
            ]
            cells.append(f"{statistics.median(peaks):>12.0f}")
        print(f"{variant:16}" + "".join(cells))
    if cuda is None:
        print("\nCUDA: no GPU on this machine; the CUDA section (fp32/bf16/fp16 at batch 8 x 15 s) was skipped")
    else:
        times = {name: statistics.median(values) for name, values in cuda["times_s"].items()}
        print(f"\nCUDA ({cuda['device']}), batch {args.cuda_shape} s")
        print(f"{'':16}{'median s':>9}{'vs s3prl':>10}{'peak MiB':>10}")
        for name in CUDA_VARIANTS:
            ratio = times["s3prl fp32"] / times[name]
            print(f"{name:16}{times[name]:>9.3f}{ratio:>9.2f}x{cuda['peak_cuda_mib'][name]:>10.0f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    sys.exit(main())
