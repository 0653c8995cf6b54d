"""``mrsuperb compare``: rank agreement of learnt weights, CCA scores and single-layer probes, per model; plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from downstream_probes import cli
from downstream_probes.analysis.compare import CompareInputError, compare_sources, find_sources, rank_agreement
from downstream_probes.tasks import upstream_identity

LAYERS = ["T0", "T1", "T2", "T3", "T4", "D0", "T5", "T6"]
# MR-HuBERT-base-like and B2-a-like layer lists (the demo's mono_base has 15 states, b2a 17)
MONO_BASE = [f"T{i}" for i in range(5)] + [f"D{i}" for i in range(4)] + ["M0"] + [f"U{i}" for i in range(5)]
B2A = [f"T{i}" for i in range(4)] + [f"D{i}" for i in range(3)] + ["M0", "M1"] + [f"U{i}" for i in range(8)]


def write_weights(folder: Path, upstream: str, checkpoint: str | None, layers, weights, task: str = "asr") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "upstream": upstream, "upstream_ckpt": checkpoint, "task": task, "checkpoint": str(folder / "dev-best.ckpt"),
        "step": 10, "layers": [{"name": n, "weight": float(w), "raw": 0.0} for n, w in zip(layers, weights, strict=True)],
    }  # fmt: skip
    (folder / "layer_weights.json").write_text(json.dumps(record))


def write_cca(folder: Path, upstream: str, checkpoint: str | None, layers, scores, prop: str = "word") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"cca_{prop}.json").write_text(json.dumps(dict(zip(layers, map(float, scores), strict=True))))
    provenance = {"upstream": {"name": upstream, "checkpoint": checkpoint}, "property": prop}
    (folder / f"provenance_cca_{prop}.json").write_text(json.dumps(provenance))


def write_sweep(folder: Path, upstream: str, checkpoint: str | None, layers, wer) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps({
        "schema": "mrsuperb.probe_sweep/1", "upstream": upstream, "upstream_ckpt": checkpoint, "task": "asr",
        "test_split": "test-clean", "primary_metric": "wer", "lower_is_better": True,
        "layers": [{"name": n, "metrics": {"test-clean": {"wer": float(e), "cer": 0.1}}} for n, e in zip(layers, wer, strict=True)],
    }))  # fmt: skip


def write_run(root: Path, upstream: str, weights, cca_word, wer, checkpoint: str | None = None) -> None:
    write_weights(root, upstream, checkpoint, LAYERS, weights)
    write_cca(root, upstream, checkpoint, LAYERS, cca_word)
    write_sweep(root, upstream, checkpoint, LAYERS, wer)


def write_demo_like(root: Path, rng: np.random.Generator) -> dict[str, list[str]]:
    """The demo's layout: three mrhubert_local checkpoints, runs/<key>/<task>/ and analysis/<stem>/."""
    models = {"mono_base": MONO_BASE, "b2a": B2A, "b5a": MONO_BASE}
    for key, layers in models.items():
        checkpoint = str(root / "checkpoints" / f"{key}_tiny_random-init.pt")
        for task in ("asr", "ic"):
            weights = rng.dirichlet(np.ones(len(layers)))
            write_weights(root / "runs" / key / task, "mrhubert_local", checkpoint, layers, weights, task)
        write_cca(root / "analysis" / f"{key}_tiny_random-init", "mrhubert_local", checkpoint, layers,
                  rng.random(len(layers)), "phone")  # fmt: skip
    write_sweep(root / "sweeps" / "b2a", "mrhubert_local", str(root / "checkpoints" / "b2a_tiny_random-init.pt"), B2A,
                rng.random(len(B2A)))  # fmt: skip
    return {f"mrhubert_local:{key}_tiny_random-init": layers for key, layers in models.items()}


def test_compare_reports_spearman_kendall_and_top_k(tmp_path, capsys):
    rng = np.random.default_rng(0)
    weights, cca, wer = rng.dirichlet(np.ones(8)), rng.random(8), rng.random(8)
    write_run(tmp_path / "runs" / "up_a", "mrhubert_b4a", weights, cca, wer)
    assert cli.main(["compare", str(tmp_path / "runs"), "--top-k", "3", "--out", str(tmp_path / "cmp.json"),
                     "--plot-dir", str(tmp_path / "plots")]) == 0  # fmt: skip
    document = json.loads((tmp_path / "cmp.json").read_text())
    pairs = {(c["a"], c["b"]): c for c in document["comparisons"]}
    assert set(pairs) == {("probe:asr", "weights:asr"), ("probe:asr", "cca:word"), ("weights:asr", "cca:word")}
    probe_vs_cca = pairs[("probe:asr", "cca:word")]
    assert probe_vs_cca["model"] == "mrhubert_b4a" and probe_vs_cca["layers"] == 8
    # the probe score is -WER (higher is better)
    assert probe_vs_cca["spearman"] == pytest.approx(spearmanr(-wer, cca).statistic)
    assert probe_vs_cca["kendall"] == pytest.approx(kendalltau(-wer, cca).statistic)
    top_probe, top_cca = set(np.argsort(wer)[:3]), set(np.argsort(-cca)[:3])
    assert probe_vs_cca["top_k_overlap"] == pytest.approx(len(top_probe & top_cca) / 3)
    assert "rho" in capsys.readouterr().out
    assert (tmp_path / "plots" / "layer_weights_mrhubert_b4a.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "cca_curves_word.png").is_file()
    assert (tmp_path / "plots" / "rankings_mrhubert_b4a.png").stat().st_size > 1000


def test_identical_rankings_agree_fully_and_partial_overlap_is_counted():
    a = {name: float(i) for i, name in enumerate(LAYERS)}
    assert rank_agreement(a, dict(a), 3) == (8, pytest.approx(1.0), pytest.approx(1.0), 1.0)
    reversed_scores = {name: -value for name, value in a.items()}
    n, rho, tau, overlap = rank_agreement(a, reversed_scores, 3)
    assert (rho, tau, overlap) == (pytest.approx(-1.0), pytest.approx(-1.0), 0.0)
    n, rho, _, _ = rank_agreement({"T0": 1.0, "T1": 2.0}, {"T0": 1.0, "T1": 3.0}, 3)
    assert n == 2 and np.isnan(rho)  # too few layers to rank


def test_upstreams_are_kept_apart(tmp_path):
    rng = np.random.default_rng(1)
    write_run(tmp_path / "a", "up_a", rng.dirichlet(np.ones(8)), rng.random(8), rng.random(8))
    write_run(tmp_path / "b", "up_b", rng.dirichlet(np.ones(8)), rng.random(8), rng.random(8))
    comparisons = compare_sources(find_sources([tmp_path]), top_k=2)
    assert sorted({c.model for c in comparisons}) == ["up_a", "up_b"] and len(comparisons) == 6


def test_local_checkpoints_of_one_upstream_are_different_models(tmp_path, capsys):
    """The demo's three mrhubert_local checkpoints: one block per model, never a row across two models (the
    bare upstream name put all three in one group, ranking one model's weights against another's CCA)."""
    layers_of = write_demo_like(tmp_path, np.random.default_rng(2))
    sources = find_sources([tmp_path / "runs", tmp_path / "analysis", tmp_path / "sweeps"])
    by_path = {s.source: s for s in sources}
    assert {s.model for s in sources} == set(layers_of)
    assert all(s.model == upstream_identity(s.upstream, s.checkpoint) for s in sources)
    comparisons = compare_sources(sources)
    for c in comparisons:
        assert by_path[c.source_a].model == by_path[c.source_b].model == c.model
        assert c.layers == len(layers_of[c.model])
    rows = {(c.model, c.task, c.a, c.b) for c in comparisons}
    expected = {(m, t, f"weights:{t}", "cca:phone") for m in layers_of for t in ("asr", "ic")}
    expected |= {("mrhubert_local:b2a_tiny_random-init", "asr", a, b)
                 for a, b in (("probe:asr", "weights:asr"), ("probe:asr", "cca:phone"))}  # fmt: skip
    assert rows == expected and len(comparisons) == len(expected)
    weights = by_path[str((tmp_path / "runs" / "b5a" / "asr" / "layer_weights.json").resolve())]
    cca = by_path[str((tmp_path / "analysis" / "b5a_tiny_random-init" / "cca_phone.json").resolve())]
    (row,) = [c for c in comparisons if c.model == weights.model and c.task == "asr" and c.b == "cca:phone"]
    assert row.spearman == pytest.approx(spearmanr(list(weights.scores.values()), list(cca.scores.values())).statistic)

    assert (
        cli.main(["compare", str(tmp_path), "--out", str(tmp_path / "cmp.json"), "--plot-dir", str(tmp_path / "f")])
        == 0
    )
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("model ")]
    assert headers == [f"model {m}" for m in sorted(layers_of)]  # one block per model
    document = json.loads((tmp_path / "cmp.json").read_text())
    assert {c["model"] for c in document["comparisons"]} == set(layers_of)
    assert all(c["model"] == s["model"] for c in document["comparisons"] for s in document["sources"]
               if s["path"] in (c["source_a"], c["source_b"]))  # fmt: skip
    for model in layers_of:
        assert (tmp_path / "f" / f"rankings_{model.replace(':', '_')}.png").stat().st_size > 1000


def test_sources_with_different_layer_sets_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    checkpoint = str(tmp_path / "b2a.pt")
    write_weights(tmp_path / "run", "mrhubert_local", checkpoint, B2A, rng.dirichlet(np.ones(len(B2A))))
    write_cca(tmp_path / "cca", "mrhubert_local", checkpoint, B2A[:-2], rng.random(len(B2A) - 2), "phone")
    with pytest.raises(CompareInputError, match=r"different layers.*only in .*layer_weights.json: U6, U7"):
        compare_sources(find_sources([tmp_path]))
    (only,) = compare_sources(find_sources([tmp_path]), common_layers=True)
    assert only.layers == len(B2A) - 2


def test_a_local_upstream_without_its_checkpoint_is_refused(tmp_path):
    write_weights(tmp_path / "run", "mrhubert_local", None, LAYERS, np.full(8, 1 / 8))
    with pytest.raises(CompareInputError, match="does not record the checkpoint of upstream mrhubert_local"):
        find_sources([tmp_path])
    (tmp_path / "run" / "layer_weights.json").unlink()
    write_cca(tmp_path / "cca", "mrhubert_b4a", None, LAYERS, np.arange(8.0))
    (tmp_path / "cca" / "provenance_cca_word.json").unlink()
    with pytest.raises(CompareInputError, match="no provenance_cca_word.json beside it"):
        find_sources([tmp_path])


def test_bad_input(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_sources([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", str(tmp_path / "empty")]) == 2
    assert "no layer_weights.json, cca_*.json or sweep.json" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.json").write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(CompareInputError, match="expected 'mrsuperb.probe_sweep/1'"):
        find_sources([tmp_path / "bad"])
    (tmp_path / "bad" / "sweep.json").unlink()
    (tmp_path / "bad" / "cca_word.json").write_text("{not json")
    with pytest.raises(CompareInputError, match="not readable JSON"):
        find_sources([tmp_path / "bad"])


# --------------------------------------------------------------------------------------------- uncertainty (issue 21)


def write_cca_with_sample_sets(folder: Path, upstream: str, layers, trials, state_rate: str = "20ms") -> None:
    """A CCA output as mrsuperb analyze writes it: scores = mean over sample sets, trial_scores per set and split."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = {name: float(np.mean([np.mean(s) for s in trials[:, :, i]])) for i, name in enumerate(layers)}
    (folder / "cca_word.json").write_text(json.dumps(scores))
    provenance = {
        "upstream": {"name": upstream, "checkpoint": None}, "property": "word", "state_rate": state_rate,
        "split": "dev-clean", "scores": scores,
        "trial_scores": {name: trials[:, :, i].tolist() for i, name in enumerate(layers)},
    }  # fmt: skip
    (folder / "provenance_cca_word.json").write_text(json.dumps(provenance))


def test_compare_carries_intervals_p_values_and_chance_and_merges_seeds(tmp_path, capsys):
    rng = np.random.default_rng(3)
    true = 0.2 + 0.6 * rng.random(len(LAYERS))  # not a monotone trend: two trends agree by chance too (docs)
    trials = true + rng.normal(0, 0.01, (3, 3, len(LAYERS)))  # 3 sample sets x 3 test splits
    write_cca_with_sample_sets(tmp_path / "analysis", "mrhubert_b4a", LAYERS, trials)
    seeds = [true / true.sum() + rng.normal(0, 0.01, len(LAYERS)) for _ in range(3)]
    for seed, weights in enumerate(seeds):
        write_weights(tmp_path / "runs" / f"seed{seed}", "mrhubert_b4a", None, LAYERS, weights)
        record = json.loads((tmp_path / "runs" / f"seed{seed}" / "layer_weights.json").read_text())
        (tmp_path / "runs" / f"seed{seed}" / "layer_weights.json").write_text(json.dumps({**record, "seed": seed}))
    assert (
        cli.main(["compare", str(tmp_path), "-o", str(tmp_path / "cmp.json"), "--plot-dir", str(tmp_path / "p")]) == 0
    )
    out = capsys.readouterr().out
    assert "rho 95% [" in out and "(surrogates)" in out and "replicates 3/3" in out
    document = json.loads((tmp_path / "cmp.json").read_text())
    assert document["schema"] == "mrsuperb.compare/3"
    (weights_source,) = [s for s in document["sources"] if s["kind"] == "weights"]
    assert weights_source["replicates"] == 3 and weights_source["label"] == "weights:asr"  # the seeds are one source
    (comparison,) = document["comparisons"]
    assert comparison["spearman"] == pytest.approx(
        spearmanr(np.mean(seeds, axis=0), trials.mean(axis=(0, 1))).statistic
    )
    low, high = comparison["spearman_ci95"]
    assert low <= comparison["spearman"] <= high and high <= 1.0
    assert 0.0 < comparison["p_value"] < 0.05  # a strong, real relation
    assert comparison["top_k_chance"] == pytest.approx(3 / 8)
    assert (comparison["replicates_a"], comparison["replicates_b"]) == (3, 3)
    assert (tmp_path / "p" / "rankings_mrhubert_b4a.png").stat().st_size > 1000


def test_sources_of_different_state_rates_or_splits_are_refused_with_the_reason(tmp_path):
    trials = np.random.default_rng(0).random((3, 3, len(LAYERS)))
    write_cca_with_sample_sets(tmp_path / "native", "mrhubert_b4a", LAYERS, trials, state_rate="native")
    write_weights(tmp_path / "runs", "mrhubert_b4a", None, LAYERS, np.ones(len(LAYERS)) / len(LAYERS))
    with pytest.raises(CompareInputError, match="differ in state rate: 20ms vs native"):
        compare_sources(find_sources([tmp_path]))
    # two probe sweeps of one task scored on different test splits
    rng = np.random.default_rng(1)
    write_sweep(tmp_path / "s1", "mrhubert_b4a", None, LAYERS, rng.random(len(LAYERS)))
    write_sweep(tmp_path / "s2", "mrhubert_b4a", None, LAYERS, rng.random(len(LAYERS)))
    record = json.loads((tmp_path / "s2" / "sweep.json").read_text())
    record["test_split"] = "test-other"
    record["layers"] = [
        {**layer, "metrics": {"test-other": layer["metrics"]["test-clean"]}} for layer in record["layers"]
    ]
    (tmp_path / "s2" / "sweep.json").write_text(json.dumps(record))
    (tmp_path / "native" / "cca_word.json").unlink()
    with pytest.raises(CompareInputError, match="differ in split: test-clean vs test-other"):
        compare_sources(find_sources([tmp_path]))
