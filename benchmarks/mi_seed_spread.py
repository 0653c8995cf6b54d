"""How much does the MI score move with the k-means seed, and does a faster clustering stay inside that spread?

The reference never seeds its ``MiniBatchKMeans``, so its MI is defined only up to seed-to-seed variation. This
script measures that spread per layer (scikit-learn's ``MiniBatchKMeans`` with the reference's settings, ``n_init=3``,
over ``--seeds`` seeds) and, over the same seeds, a faster candidate: ``n_init=1`` (scikit-learn's current default,
``"auto"``), one k-means++ initialisation instead of three. A candidate may become the default only if its mean
score lies inside the reference settings' seed range on EVERY layer of a base-size model.

Features: the MI outputs of a ``mrsuperb analyze`` run (``--provenance OUT/provenance_mi_word.json``: its analysed
and training cache entries, its clustering settings, sample set 0's segments), or, without one, synthetic layers
(``--synthetic``: labelled clusters whose separation grows and falls over the layers, dev-clean's counts, k / 10)
that only exercise the script. Prints one row per layer and a JSON summary (``--json FILE``).

    python benchmarks/mi_seed_spread.py --provenance analysis/b4a/provenance_mi_phone.json --seeds 5
    python benchmarks/mi_seed_spread.py --synthetic --span phone --layers 6 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits


def synthetic_layers(span: str, layers: int, rng: np.random.Generator):
    """Training and held-out features per layer with dev-clean's phone (39 x 200) or word (500 x ~14) counts."""
    from downstream_probes.analysis.mutual_info import PHONE_CLUSTERING, WORD_CLUSTERING, ClusteringSettings

    if span == "phone":
        labels, preset = np.repeat(np.arange(39), 200), PHONE_CLUSTERING
    else:
        labels = np.concatenate([np.repeat(np.arange(400), 15), np.repeat(np.arange(400, 500), 10)])
        preset = WORD_CLUSTERING
    preset = ClusteringSettings(preset.n_clusters // 10, preset.batch_size, preset.max_iter, preset.n_init)
    train_labels = np.concatenate([labels, labels])
    centres = rng.standard_normal((labels.max() + 1, 64))
    for layer in range(layers):
        strength = 0.05 + 0.3 * np.sin(np.pi * (layer + 0.5) / layers)  # rises, then falls, like layer curves
        train = strength * centres[train_labels] + rng.standard_normal((len(train_labels), 64))
        held_out = strength * centres[labels] + rng.standard_normal((len(labels), 64))
        yield f"L{layer}", train.astype(np.float32), held_out.astype(np.float32), labels.astype(str), preset


def analysed_layers(provenance_path: Path, layers: list[str] | None):
    """Sample set 0's training and held-out features of every layer of a ``mrsuperb analyze`` MI output."""
    from downstream_probes.analysis.extraction import CachedLayers
    from downstream_probes.analysis.mutual_info import ClusteringSettings

    record = json.loads(provenance_path.read_text(encoding="utf-8"))
    span = record["property"].removeprefix("mi_")
    entries = [Path(record["cache_entry"]), Path(record["train_cache_entry"])]
    held, train = (CachedLayers(e, json.loads((e / "meta.json").read_text(encoding="utf-8"))) for e in entries)
    clustering = record["clustering"]
    preset = ClusteringSettings(
        clustering["n_clusters"], clustering["batch_size"], clustering["max_iter"], clustering["n_init"]
    )
    if record.get("sample_sets", 1) != 1:
        print("note: the cache entries hold the union of the sample sets; all of it is used here")
    labels = np.asarray(held.meta["labels"][span])
    for name in layers or list(record["scores"]):
        yield name, np.asarray(train.layer(name, f"{span}_")), np.asarray(held.layer(name, f"{span}_")), labels, preset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--provenance", help="provenance_mi_<span>.json of a mrsuperb analyze run")
    source.add_argument("--synthetic", action="store_true", help="synthetic layers (exercises the script only)")
    parser.add_argument("--span", default="phone", choices=["phone", "word"], help="synthetic: which counts")
    parser.add_argument("--layers", help="synthetic: how many layers; analysed: comma-separated names")
    parser.add_argument("--seeds", type=int, default=5, help="k-means seeds per setting (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from downstream_probes.analysis.mutual_info import assign_clusters, normalised_mutual_information

    if args.synthetic:
        features = synthetic_layers(args.span, int(args.layers or 6), np.random.default_rng(0))
    else:
        features = analysed_layers(Path(args.provenance), args.layers.split(",") if args.layers else None)
    rows, inside_everywhere = [], True
    print(f"{'layer':>6} {'n_init=3: min..max (sd)':>30} {'s/fit':>6}   {'n_init=1 mean':>13} {'s/fit':>6}  inside")
    with threadpool_limits(limits=args.threads):
        for name, train, held_out, labels, preset in features:
            scores, times = {}, {}
            for n_init in (preset.n_init, 1):
                settings = replace(preset, n_init=n_init)
                values, start = [], time.perf_counter()
                for seed in range(args.seeds):
                    clusters = assign_clusters(settings, train, held_out, labels, seed)
                    values.append(normalised_mutual_information(clusters, labels))
                scores[n_init], times[n_init] = values, (time.perf_counter() - start) / args.seeds
            reference, candidate = np.array(scores[preset.n_init]), float(np.mean(scores[1]))
            inside = bool(reference.min() - 1e-9 <= candidate <= reference.max() + 1e-9)
            inside_everywhere &= inside
            rows.append({
                "layer": name, "reference_scores": reference.tolist(), "candidate_scores": scores[1],
                "reference_seconds_per_fit": times[preset.n_init], "candidate_seconds_per_fit": times[1],
                "inside": inside, "n_clusters": preset.n_clusters,
            })  # fmt: skip
            print(
                f"{name:>6} {reference.min():12.4f}..{reference.max():.4f} ({reference.std(ddof=1):.4f})"
                f" {times[preset.n_init]:6.2f}   {candidate:13.4f} {times[1]:6.2f}  {'yes' if inside else 'NO'}"
            )
    print(f"n_init=1 inside the reference settings' seed range on every layer: {inside_everywhere}")
    if args.json:
        Path(args.json).write_text(json.dumps({"inside_everywhere": inside_everywhere, "layers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
