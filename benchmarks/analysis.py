"""The whole layer-wise analysis (arXiv 2410.23955 Fig. 3 + Fig. 4) for one base-size model: ours vs the reference's
pipeline, stage by stage, at 1 thread and at the default thread count.

Workload: MR-HuBERT-base with random weights (15 states of 768 dims; CNN C1..C7 of 512 channels) on a synthetic
corpus with LibriSpeech dev-clean's counts: 2703 utterances of 7.2 s (19,460 s of audio), a phone sample of 39
phones x 200 (7800 segments), a word sample of 500 words (400 x 15 + 100 x 10 = 7000 segments), the frame-level
sample (``--frame-utterances``, 500 in the reference: ~180k frames; 50 by default here so that the run takes
minutes), the MI training sample (dev-sized by default: the reference's 460 h training split cannot be forwarded
on 2 CPU cores) and a spoken STS corpus of ``--sts-pairs`` pairs x 4 speakers x 2 sides of 3 s.

What runs, per stage (each side's own code path; the reference's is restated from its published code, never
copied):

* extraction: the forward of the base model, measured on a few 7.2 s utterances (seconds of compute per second of
  audio, after a warm-up) and multiplied by the audio each pipeline forwards. The reference forwards the dev split
  once per span (phone, word), the frame sample twice (its ``contextualized`` and ``local`` passes each run the
  whole model), the STS corpus once and the MI training sample once per span; ours forwards the dev split once
  for every property (plus the CNN layers of the frame sample, layer by layer), the STS corpus once and the MI
  training sample once. Features are synthesised for the stages below, as the issue allows;
* pooling and feature I/O: ours is ``extraction.build_layers`` (fed pre-computed states) and the reading of the
  views; the reference's is its per-utterance pooling into lists, ``np.concatenate`` + ``np.save`` of every layer
  per span, then ``np.load`` of every layer file by every property that reads it;
* CCA (phone, word, GloVe-like 300-d, AGWE-like 512-d, mel with C1..C7): ours ``cca_score`` on every layer; the
  reference's protocol (``benchmarks/pwcca.py``'s restatement: ``np.cov`` per epsilon, ``pinv`` + ``eigh``, every fit
  scored on its training data) on ``--reference-layers`` layers per property, scaled to all layers (its cost does
  not depend on the values);
* MI: scikit-learn's ``MiniBatchKMeans`` on both sides (n_init=3, the reference's batch sizes and max_iter, the
  same seed, so the same centroids and scores); the reference's call keeps scikit-learn's ``compute_labels=True``
  (a final pass that labels the whole training sample for ``inertia_``), ours skips it; timed on ``--mi-layers``
  layers and scaled; the reference's k (500, 5000) with ``--mi-full``, else k divided by 10 (k = 5000 takes many
  minutes per layer on a loaded 2-core machine);
* STS: ours ``spoken_sts_pair_score``; the reference's per-pair loop over 16 ``scipy.spatial.distance.cosine``.

    python benchmarks/analysis.py                     # both thread settings, a few minutes each
    python benchmarks/analysis.py --threads 1 --frame-utterances 500 --mi-full   # the reference's sizes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

UTTERANCES = 2703
UTTERANCE_SECONDS = 7.2
STS_SECONDS = 3.0
LAYERS = 15
DIMS = 768
CNN_DIMS = 512
STAGES = ("extraction", "pooling", "cca", "mi", "sts")
TARGET_AFTER = 10.0
TARGET_END_TO_END = 3.0


# --------------------------------------------------------------------------------------------- data


def dev_layout(rng: np.random.Generator):
    """Utterances and the phone and word samples (times in seconds) of a dev-clean-sized corpus."""
    from downstream_probes.analysis.segments import Segment

    def sample(labels: np.ndarray) -> list[Segment]:
        utterances = rng.integers(0, UTTERANCES, len(labels))
        starts = rng.uniform(0.0, UTTERANCE_SECONDS - 0.6, len(labels))
        lengths = rng.uniform(0.05, 0.5, len(labels))
        return sorted(
            (Segment(int(u), float(s), float(s + d), str(label)) for u, s, d, label in zip(utterances, starts, lengths, labels, strict=True)),
            key=lambda s: (s.utterance, s.start),
        )  # fmt: skip

    phones = sample(np.repeat(np.arange(39), 200))
    words = sample(np.concatenate([np.repeat(np.arange(400), 15), np.repeat(np.arange(400, 500), 10)]))
    return phones, words


def planted_views(rng: np.random.Generator, labels: np.ndarray, dims: int) -> np.ndarray:
    centres = rng.standard_normal((labels.max() + 1, dims)) * 0.5
    return (centres[labels] + rng.standard_normal((len(labels), dims))).astype(np.float32)


# --------------------------------------------------------------------------------------------- stages


def measure_extraction(frame_utterances: int, sts_pairs: int) -> dict:
    """Seconds of compute per second of audio for the full forward and for the CNN layers alone."""
    import torch

    from downstream_probes.analysis.extraction import cnn_extractor, upstream_extractor
    from upstream_mrhubert.architectures import architecture, build_random_model
    from upstream_mrhubert.upstream import S3prlUpstream

    arch = architecture("mrhubert_mono_base")
    model, _ = build_random_model(arch.model_cfg(), arch.task_cfg())
    upstream = S3prlUpstream(model, name="mrhubert_mono_base")
    forward, cnn = upstream_extractor(upstream), cnn_extractor(upstream)
    audio = [
        np.random.default_rng(i).standard_normal(int(UTTERANCE_SECONDS * 16000)).astype(np.float32) * 0.1
        for i in range(3)
    ]
    forward(audio[0][:16000])
    cnn(audio[0][:16000])
    with torch.inference_mode():
        start = time.perf_counter()
        for wav in audio:
            forward(wav)
        per_second = (time.perf_counter() - start) / (len(audio) * UTTERANCE_SECONDS)
        start = time.perf_counter()
        for wav in audio:
            cnn(wav)
        cnn_per_second = (time.perf_counter() - start) / (len(audio) * UTTERANCE_SECONDS)
    dev = UTTERANCES * UTTERANCE_SECONDS
    frames = frame_utterances * UTTERANCE_SECONDS
    sts = sts_pairs * 8 * STS_SECONDS
    train = dev  # the MI training sample, dev-sized here
    reference = per_second * (2 * dev + 2 * frames + sts + 2 * train)
    ours = per_second * (dev + sts + train) + cnn_per_second * frames
    return {
        "reference": reference,
        "ours": ours,
        "forward_s_per_audio_s": per_second,
        "cnn_s_per_audio_s": cnn_per_second,
    }


def pooling(phones, words, frame_utterances: int) -> dict:
    """Pooling every span of every layer and writing/reading the features: ours vs the reference's data flow."""
    from downstream_probes.analysis import extraction
    from downstream_probes.analysis.segments import Utterance, frame_span

    frames_per_utt = int(UTTERANCE_SECONDS / 0.02)
    pool = [
        np.random.default_rng(layer).standard_normal((frames_per_utt, DIMS)).astype(np.float32)
        for layer in range(LAYERS)
    ]
    cnn_pool = (
        np.random.default_rng(99).standard_normal((int(UTTERANCE_SECONDS * 16000 / 5), CNN_DIMS)).astype(np.float32)
    )
    chosen = list(range(0, UTTERANCES, max(1, UTTERANCES // frame_utterances)))[:frame_utterances]
    audio = (np.random.default_rng(7).standard_normal(int(UTTERANCE_SECONDS * 16000)) * 0.1).astype(np.float32)

    def states(_audio):
        return [extraction.LayerOutput(f"L{i}", pool[i], 320) for i in range(LAYERS)]

    def cnn_states(_audio):
        out, field, jump = [], 1, 1
        for index, (kernel, stride) in enumerate([(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2):
            field += (kernel - 1) * jump
            jump *= stride
            out.append(extraction.LayerOutput(f"C{index + 1}", cnn_pool[: len(audio) // jump], jump, field))
        return out

    timings = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        utterances = [Utterance(f"u{i}", root / "none.wav", None) for i in range(UTTERANCES)]
        original = extraction.read_samples
        extraction.read_samples = lambda _path: audio  # the audio is not read: the states are given
        try:
            start = time.perf_counter()
            (root / "ours").mkdir()
            extraction.build_layers(
                states, utterances, root / "ours", spans={"phone": phones, "word": words}, frame_utterances=chosen,
                cnn=cnn_states, progress=False,
            )  # fmt: skip
            cached = extraction.CachedLayers(root / "ours", {"layer_names": [f"L{i}" for i in range(LAYERS)]})
            for layer in range(LAYERS):  # every property reads its views (phone; word for word, glove, agwe; mel)
                for kind in ("phone_", "word_", ""):
                    np.asarray(cached.layer(f"L{layer}", kind))
            timings["ours"] = time.perf_counter() - start
        finally:
            extraction.read_samples = original

        start = time.perf_counter()
        ref = root / "reference"
        for span, segments, offset in (("phone", phones, True), ("word", words, False)):
            by_utt: dict[int, list] = {}
            for segment in segments:
                by_utt.setdefault(segment.utterance, []).append(segment)
            reps: dict[int, list] = {}
            for utt in sorted(by_utt):
                for layer in range(LAYERS):
                    rep = pool[layer]
                    for segment in by_utt[utt]:
                        first, last = frame_span(segment.start, segment.end, 0.02, len(rep), middle_third=offset)
                        reps.setdefault(layer, []).append(np.expand_dims(np.mean(rep[np.arange(first, last)], 0), 0))
            (ref / span).mkdir(parents=True)
            for layer, rows in reps.items():
                np.save(ref / span / f"layer_{layer}.npy", np.concatenate(rows, 0))
        frame_reps: dict[int, list] = {}
        cnn_reps: dict[int, list] = {}
        import torch

        from downstream_probes.analysis.mel import log_mel

        for _ in chosen:
            log_mel(audio)  # its fbank step (librosa there; the same computation)
            for layer in range(LAYERS):
                frame_reps.setdefault(layer, []).append(pool[layer])
            for state in cnn_states(audio):  # its transform_rep: a uniform conv1d per channel
                kernel, step, _ = extraction.cnn_window(state.stride, state.receptive_field)
                channels = torch.from_numpy(state.features).T.unsqueeze(1)  # (dims, 1, frames)
                weight = torch.full((1, 1, kernel), 1.0 / kernel)
                averaged = torch.nn.functional.conv1d(channels, weight, stride=step)
                cnn_reps.setdefault(state.name, []).append(averaged.squeeze(1).T.numpy())
        (ref / "frame").mkdir()
        for layer, rows in frame_reps.items():
            np.save(ref / "frame" / f"layer_{layer}.npy", np.concatenate(rows, 0))
        for name, rows in cnn_reps.items():
            np.save(ref / "frame" / f"local_{name}.npy", np.concatenate(rows, 0))
        for layer in range(LAYERS):  # phone; word for word, glove, agwe (each loads the files); mel
            np.load(ref / "phone" / f"layer_{layer}.npy")
            for _ in range(3):
                np.load(ref / "word" / f"layer_{layer}.npy")
            np.load(ref / "frame" / f"layer_{layer}.npy")
        timings["reference"] = time.perf_counter() - start
    return timings


def cca(frame_utterances: int, reference_layers: int) -> dict:
    from pwcca import frame_level_data, reference_protocol, word_level_data

    from downstream_probes.analysis import cca_score
    from downstream_probes.analysis.analyze import one_hot

    rng = np.random.default_rng(1)
    phone_labels = np.repeat(np.arange(39), 200)[rng.permutation(7800)]
    phone_x = planted_views(rng, phone_labels, DIMS)
    word_x, word_y, word_labels = word_level_data()
    glove = rng.standard_normal((500, 300))[word_labels]
    agwe = rng.standard_normal((500, 512))[word_labels]
    n_frames = int(frame_utterances * UTTERANCE_SECONDS / 0.02)
    mel, frame_x = frame_level_data(n_frames=n_frames)
    mel10, cnn10 = frame_level_data(seed=1, n_frames=2 * n_frames)
    cnn10 = np.ascontiguousarray(cnn10[:, :CNN_DIMS])
    workloads = {
        "phone": (phone_x, one_hot(phone_labels), phone_labels, LAYERS),
        "word": (word_x, word_y, word_labels, LAYERS),
        "glove": (word_x, glove, word_labels, LAYERS),
        "agwe": (word_x, agwe, word_labels, LAYERS),
        "mel": (mel, frame_x, None, LAYERS + 1),  # + C7 (20 ms)
        "mel C1-C6": (mel10, cnn10, None, 6),  # 10 ms
    }
    result = {}
    for name, (x, y, labels, layers) in workloads.items():
        start = time.perf_counter()
        for _ in range(layers):
            cca_score(x, y, labels, seed=0)
        ours = time.perf_counter() - start
        runs = min(reference_layers, layers)
        start = time.perf_counter()
        for _ in range(runs):
            reference_protocol(x, y, labels)
        reference = (time.perf_counter() - start) / runs * layers
        result[name] = {"ours": ours, "reference": reference}
    return result


def reference_mi(settings, train: np.ndarray, held_out: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """The reference's ``get_mi_score`` restated: scikit-learn's defaults (``compute_labels=True``, whose final
    pass labels the training sample for ``inertia_``), with the ``n_init=3`` of its scikit-learn, seeded here."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import mutual_info_score

    kmeans = MiniBatchKMeans(
        n_clusters=settings.n_clusters, batch_size=settings.batch_size, max_iter=settings.max_iter,
        n_init=settings.n_init, random_state=seed,
    ).fit(train)  # fmt: skip
    _ = kmeans.inertia_ / len(train)
    clusters = kmeans.predict(held_out)
    return mutual_info_score(clusters, labels) / mutual_info_score(labels, labels)


def mutual_information(mi_layers: int, full: bool) -> dict:
    from downstream_probes.analysis.mutual_info import PHONE_CLUSTERING, WORD_CLUSTERING, ClusteringSettings, score_with

    rng = np.random.default_rng(2)
    result = {}
    for span, preset, labels in (
        ("phone", PHONE_CLUSTERING, np.repeat(np.arange(39), 200)),
        ("word", WORD_CLUSTERING, np.concatenate([np.repeat(np.arange(400), 15), np.repeat(np.arange(400, 500), 10)])),
    ):
        if not full:
            preset = ClusteringSettings(preset.n_clusters // 10, preset.batch_size, preset.max_iter, preset.n_init)
        train_labels = np.concatenate([labels, labels])
        train, held_out = planted_views(rng, train_labels, DIMS), planted_views(rng, labels, DIMS)
        ours = reference = 0.0
        for _ in range(mi_layers):  # interleaved, the same seed: both fit the same centroids
            start = time.perf_counter()
            score = score_with(preset, train, held_out, labels)
            ours += time.perf_counter() - start
            start = time.perf_counter()
            expected = reference_mi(preset, train, held_out, labels)
            reference += time.perf_counter() - start
            assert abs(score - expected) < 1e-12, (score, expected)
        scale = LAYERS / mi_layers
        result[f"MI {span} (k={preset.n_clusters})"] = {"ours": ours * scale, "reference": reference * scale}
    return result


def sts(pairs: int) -> dict:
    from scipy.spatial.distance import cosine
    from scipy.stats import spearmanr

    from downstream_probes.analysis.sts import STSPair, spoken_sts_pair_score

    rng = np.random.default_rng(3)
    paths = [Path(f"{i}.wav") for i in range(pairs * 8)]
    sts_pairs = [
        STSPair(str(p), tuple(paths[8 * p : 8 * p + 4]), tuple(paths[8 * p + 4 : 8 * p + 8]), float(rng.uniform(0, 5)))
        for p in range(pairs)
    ]
    vectors = {layer: rng.standard_normal((len(paths), DIMS)).astype(np.float32) for layer in range(LAYERS)}
    start = time.perf_counter()
    for layer in range(LAYERS):
        spoken_sts_pair_score(dict(zip(paths, vectors[layer], strict=True)), sts_pairs)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    index = {path: i for i, path in enumerate(paths)}
    for layer in range(LAYERS):
        rep = vectors[layer]
        sims, human = [], []
        for pair in sts_pairs:
            combos = [1 - cosine(rep[index[a]], rep[index[b]]) for a in pair.audio_a for b in pair.audio_b]
            sims.append(np.mean(combos))
            human.append(pair.similarity)
        spearmanr(np.array(sims), np.array(human))
    return {"ours": ours, "reference": time.perf_counter() - start}


# --------------------------------------------------------------------------------------------- one run


def run_child(threads: int, options: dict) -> dict:
    import sklearn.cluster  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    import downstream_probes.analysis.analyze  # noqa: F401  (imports before any clock)
    from downstream_probes.analysis.mel import mel_filters

    mel_filters()  # torchaudio's filter bank (imported on first use) before any clock
    limits = threadpool_limits(limits=threads) if threads > 0 else None
    if threads > 0:
        torch.set_num_threads(threads)
    stages: dict[str, dict] = {}

    def done(name: str, timing: dict) -> None:
        stages[name] = timing
        print(f"[{threads} thread(s)] {name}: {json.dumps(timing)}", file=sys.stderr, flush=True)

    wanted = set(options["stages"])
    if "extraction" in wanted:
        done("extraction", measure_extraction(options["frame_utterances"], options["sts_pairs"]))
    if "pooling" in wanted:
        phones, words = dev_layout(np.random.default_rng(0))
        done("pooling + feature I/O", pooling(phones, words, options["frame_utterances"]))
    if "cca" in wanted:
        for name, timing in cca(options["frame_utterances"], options["reference_layers"]).items():
            done(f"CCA {name}", timing)
    if "mi" in wanted:
        for name, timing in mutual_information(options["mi_layers"], options["mi_full"]).items():
            done(name, timing)
    if "sts" in wanted:
        done("STS", sts(options["sts_pairs"]))
    if limits is not None:
        limits.unregister()
    return {"threads": threads if threads > 0 else torch.get_num_threads(), "stages": stages}


def report(result: dict) -> bool:
    stages = result["stages"]
    if "extraction" not in stages:
        stages["extraction"] = {"reference": 0.0, "ours": 0.0, "forward_s_per_audio_s": 0.0, "cnn_s_per_audio_s": 0.0}
    total = {side: sum(s[side] for s in stages.values()) for side in ("reference", "ours")}
    after = {side: total[side] - stages["extraction"][side] for side in total}
    without_mi = {
        side: sum(s[side] for n, s in stages.items() if n != "extraction" and not n.startswith("MI")) for side in total
    }
    print(f"\n--- {result['threads']} thread(s); forward {stages['extraction']['forward_s_per_audio_s']:.3f} s per audio s, "
          f"CNN layers alone {stages['extraction']['cnn_s_per_audio_s']:.3f} s per audio s")  # fmt: skip
    print(f"{'stage':<28}{'reference s':>13}{'share':>7}{'ours s':>10}{'share':>7}{'ratio':>8}")
    for name, timing in stages.items():
        print(
            f"{name:<28}{timing['reference']:13.1f}{timing['reference'] / total['reference']:7.1%}"
            f"{timing['ours']:10.2f}{timing['ours'] / total['ours']:7.1%}{timing['reference'] / max(timing['ours'], 1e-12):7.1f}x"
        )
    ratio_after = after["reference"] / after["ours"]
    ratio_without_mi = without_mi["reference"] / without_mi["ours"]
    ratio_total = total["reference"] / total["ours"]
    print(f"after extraction: {after['reference']:.1f} s vs {after['ours']:.1f} s -> {ratio_after:.1f}x "
          f"(without the MI clustering: {ratio_without_mi:.1f}x); target >= {TARGET_AFTER:.0f}x")  # fmt: skip
    print(f"end to end (fp32, extraction included): {total['reference']:.0f} s vs {total['ours']:.0f} s -> "
          f"{ratio_total:.1f}x; target >= {TARGET_END_TO_END:.0f}x")  # fmt: skip
    return ratio_after >= TARGET_AFTER and ratio_total >= TARGET_END_TO_END


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts (0: default)")
    parser.add_argument("--frame-utterances", type=int, default=50, help="frame-level sample (reference: 500)")
    parser.add_argument("--reference-layers", type=int, default=1, help="layers the reference's CCA is timed on")
    parser.add_argument("--mi-layers", type=int, default=1, help="layers the MI clustering is timed on")
    parser.add_argument("--mi-full", action="store_true", help="MI at the reference's k (500, 5000): slow")
    parser.add_argument("--sts-pairs", type=int, default=250, help="spoken STS pairs (x 4 speakers x 2 sides)")
    parser.add_argument(
        "--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run (default: all)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = {
        k: getattr(args, k)
        for k in ("frame_utterances", "reference_layers", "mi_layers", "mi_full", "sts_pairs", "stages")
    }
    if args.child is not None:
        print(json.dumps(run_child(args.child, json.loads(args.options))))
        return 0
    print(f"MR-HuBERT-base (random weights), {LAYERS} states + C1..C7; options {options}; each thread setting in its "
          "own process, ours and the reference stage by stage")  # fmt: skip
    met = True
    for threads in args.threads:
        command = [sys.executable, __file__, "--child", str(threads), "--options", json.dumps(options)]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # its stage lines go to our stderr
        if child.returncode != 0:
            return child.returncode
        met &= report(json.loads(child.stdout.strip().splitlines()[-1]))
    print("\ntargets met" if met else "\ntargets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
