"""``mrsuperb compare``: rank agreement of learnt weights, CCA scores and single-layer probes; plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from downstream_probes import cli
from downstream_probes.analysis.compare import CompareInputError, compare_sources, find_sources, rank_agreement

LAYERS = ["T0", "T1", "T2", "T3", "T4", "D0", "T5", "T6"]


def write_run(root: Path, upstream: str, weights, cca_word, wer) -> None:
    root.mkdir(parents=True)
    (root / "layer_weights.json").write_text(json.dumps({
        "upstream": upstream, "task": "asr", "checkpoint": "c.ckpt", "step": 10,
        "layers": [{"name": n, "weight": w, "raw": 0.0} for n, w in zip(LAYERS, weights, strict=False)],
    }))  # fmt: skip
    (root / "cca_word.json").write_text(json.dumps(dict(zip(LAYERS, cca_word, strict=False))))
    (root / "provenance_cca_word.json").write_text(json.dumps({"upstream": {"name": upstream}}))
    (root / "sweep.json").write_text(json.dumps({
        "schema": "mrsuperb.probe_sweep/1", "upstream": upstream, "task": "asr", "test_split": "test-clean",
        "primary_metric": "wer", "lower_is_better": True,
        "layers": [{"name": n, "metrics": {"test-clean": {"wer": e, "cer": 0.1}}} for n, e in zip(LAYERS, wer, strict=False)],
    }))  # fmt: skip


def test_compare_reports_spearman_kendall_and_top_k(tmp_path, capsys):
    rng = np.random.default_rng(0)
    weights, cca, wer = rng.dirichlet(np.ones(8)), rng.random(8), rng.random(8)
    write_run(tmp_path / "runs" / "up_a", "mrhubert_b4a", weights, cca, wer)
    assert cli.main(["compare", str(tmp_path / "runs"), "-k", "3", "-o", str(tmp_path / "cmp.json"),
                     "--plot-dir", str(tmp_path / "plots")]) == 0  # fmt: skip
    document = json.loads((tmp_path / "cmp.json").read_text())
    pairs = {(c["a"], c["b"]): c for c in document["comparisons"]}
    assert set(pairs) == {("probe:asr", "weights:asr"), ("probe:asr", "cca:word"), ("weights:asr", "cca:word")}
    probe_vs_cca = pairs[("probe:asr", "cca:word")]
    assert probe_vs_cca["upstream"] == "mrhubert_b4a" and probe_vs_cca["layers"] == 8
    # the probe score is -WER (higher is better)
    assert probe_vs_cca["spearman"] == pytest.approx(spearmanr(-wer, cca).statistic)
    assert probe_vs_cca["kendall"] == pytest.approx(kendalltau(-wer, cca).statistic)
    top_probe, top_cca = set(np.argsort(wer)[:3]), set(np.argsort(-cca)[:3])
    assert probe_vs_cca["top_k_overlap"] == pytest.approx(len(top_probe & top_cca) / 3)
    assert "rho" in capsys.readouterr().out
    assert (tmp_path / "plots" / "layer_weights_mrhubert_b4a.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "cca_curves_word.png").is_file()


def test_identical_rankings_agree_fully_and_partial_overlap_is_counted():
    a = {name: float(i) for i, name in enumerate(LAYERS)}
    assert rank_agreement(a, dict(a), 3) == (8, pytest.approx(1.0), pytest.approx(1.0), 1.0)
    reversed_scores = {name: -value for name, value in a.items()}
    n, rho, tau, overlap = rank_agreement(a, reversed_scores, 3)
    assert (rho, tau, overlap) == (pytest.approx(-1.0), pytest.approx(-1.0), 0.0)
    n, rho, _, _ = rank_agreement({"T0": 1.0, "T1": 2.0}, {"T0": 1.0, "T1": 3.0}, 3)
    assert n == 2 and np.isnan(rho)  # too few common layers to rank


def test_upstreams_are_kept_apart(tmp_path):
    rng = np.random.default_rng(1)
    write_run(tmp_path / "a", "up_a", rng.dirichlet(np.ones(8)), rng.random(8), rng.random(8))
    write_run(tmp_path / "b", "up_b", rng.dirichlet(np.ones(8)), rng.random(8), rng.random(8))
    comparisons = compare_sources(find_sources([tmp_path]), top_k=2)
    assert sorted({c.upstream for c in comparisons}) == ["up_a", "up_b"] and len(comparisons) == 6


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
