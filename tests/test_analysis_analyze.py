"""``mrsuperb analyze`` end to end: one extraction for every property, MI and STS numbers checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import mutual_info_score
from threadpoolctl import threadpool_limits

from downstream_probes import cli

SPLIT = "train-clean-100"


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    from downstream_probes.corpora.api import build_corpus, minimum_utterances

    root = tmp_path_factory.mktemp("corpora")
    return (
        build_corpus("asr", root / "asr", utterances=40, seed=0),
        build_corpus("sts", root / "sts", utterances=minimum_utterances("sts"), seed=0),
    )


@pytest.mark.slow
def test_analyze_writes_every_property_from_one_extraction(corpora, tmp_path, capsys):
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    asr, sts = corpora
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", "base_2res", seed=0)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(
        ["analyze", "-u", "mrhubert_local", "-k", str(checkpoint), "--corpus", str(asr), "--split", SPLIT,
         "--properties", "phone,mi_phone,mi_word,sts", "--sts-corpus", str(sts), "--mi-train-split", SPLIT,
         "--mi-clusters", "phone=8,word=8", "--layers", "T0,D0,T12", "--out", str(out), "--cache-dir", str(cache),
         "--sample-sets", "1", "-q"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for name in ("cca_phone", "mi_phone", "mi_word", "sts"):
        scores = json.loads((out / f"{name}.json").read_text())
        assert list(scores) == ["T0", "D0", "T12"], name
        provenance = json.loads((out / f"provenance_{name}.json").read_text())
        assert provenance["upstream"]["identity"] == "mrhubert_local:tiny"
        assert provenance["state_rate"] == "20ms" and provenance["seed"] == 0
        assert provenance["upstream"]["checkpoint_sha256"]
    assert (out / "analysis.png").stat().st_size > 5000
    # the analysed split went through the upstream once for CCA and MI (one entry), MI's training split once,
    # the STS corpus once
    assert len(list(cache.iterdir())) == 3
    assert (
        json.loads((out / "provenance_cca_phone.json").read_text())["cache_entry"]
        == json.loads((out / "provenance_mi_phone.json").read_text())["cache_entry"]
    )

    # MI: the reference's computation, by hand, on the cached pooled features
    from downstream_probes.analysis.extraction import CachedLayers

    mi = json.loads((out / "provenance_mi_word.json").read_text())
    assert mi["clustering"]["n_init"] == 3 and mi["clustering"]["max_iter"] == 500
    evaluation = CachedLayers(Path(mi["cache_entry"]), json.loads((Path(mi["cache_entry"]) / "meta.json").read_text()))
    train_dir = Path(mi["train_cache_entry"])
    train = CachedLayers(train_dir, json.loads((train_dir / "meta.json").read_text()))
    labels = np.asarray(evaluation.meta["labels"]["word"])
    kmeans = MiniBatchKMeans(n_clusters=8, batch_size=4000, max_iter=500, n_init=3, random_state=0)
    clusters = kmeans.fit(np.asarray(train.layer("D0", "word_"))).predict(np.asarray(evaluation.layer("D0", "word_")))
    expected = mutual_info_score(clusters, labels) / mutual_info_score(labels, labels)
    assert mi["scores"]["D0"] == pytest.approx(expected, abs=1e-12)

    # STS: the mean of the 16 speaker combinations, Spearman over pairs, by hand from the cached vectors
    from downstream_probes.analysis.sts import read_spoken_sts

    record = json.loads((out / "provenance_sts.json").read_text())
    assert record["combinations_per_pair"] == [16] and record["pairs"] == 6
    entry = CachedLayers(
        Path(record["cache_entry"]), json.loads((Path(record["cache_entry"]) / "meta.json").read_text())
    )
    vectors = dict(zip(entry.meta["labels"]["utterance"], np.asarray(entry.layer("T12", "utterance_")), strict=True))
    pairs = read_spoken_sts(sts)
    means = []
    for pair in pairs:
        cosines = []
        for a in pair.audio_a:
            for b in pair.audio_b:
                va, vb = vectors[str(a.relative_to(sts))], vectors[str(b.relative_to(sts))]
                cosines.append(float(va @ vb) / float(np.linalg.norm(va) * np.linalg.norm(vb)))
        means.append(np.mean(cosines))
    rho = spearmanr(means, [p.similarity for p in pairs]).statistic
    assert record["scores"]["T12"] == pytest.approx(rho, abs=1e-9)


def test_analyze_bad_input(corpora, tmp_path, capsys):
    asr, _ = corpora
    base = ["analyze", "-u", "mrhubert_local", "--corpus", str(asr), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--properties", "phone,syllable"]) == 2
    assert "unknown property 'syllable'" in capsys.readouterr().err
    assert cli.main([*base, "--properties", "sts"]) == 2
    assert "property sts needs --sts-corpus DIR" in capsys.readouterr().err
    assert cli.main([*base, "--properties", "glove"]) == 2
    assert "property glove needs a word-embedding file" in capsys.readouterr().err
    assert cli.main([*base, "--mi-clusters", "phone:5"]) == 2
    assert "--mi-clusters: 'phone:5' is not NAME=VALUE" in capsys.readouterr().err
    assert cli.main([*base, "--mi-train-per-label", "word=9:3"]) == 2
    assert "--mi-train-per-label: word=9:3 is not a span" in capsys.readouterr().err
    assert cli.main([*base, "--sample-sets", "0"]) == 2
    assert "--sample-sets must be at least 1 (got 0)" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_writes_spread_and_chance_for_every_property_from_sample_sets(corpora, tmp_path, capsys):
    """Three sample sets from one extraction: every output has its mean, spread and chance level; sample set 0
    is the one-set run's sample (same numbers); the figure draws bands and chance lines."""
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    asr, sts = corpora
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", "base_2res", seed=0)
    cache = tmp_path / "cache"
    base = ["analyze", "-u", "mrhubert_local", "-k", str(checkpoint), "--corpus", str(asr), "--split", SPLIT,
            "--properties", "mel,phone,mi_phone,mi_word,sts", "--sts-corpus", str(sts), "--mi-train-split", SPLIT,
            "--mi-clusters", "phone=8,word=8", "--layers", "T0,D0,T12", "--utterances", "10", "--no-cnn",
            "--max-per-word", "3", "--mi-train-per-label", "phone=2:3", "--cache-dir", str(cache), "-q"]  # fmt: skip
    assert cli.main([*base, "--out", str(tmp_path / "one"), "--sample-sets", "1", "--chance-permutations", "0"]) == 0
    entries = len(list(cache.iterdir()))
    assert cli.main([*base, "--out", str(tmp_path / "three")]) == 0, capsys.readouterr().err
    # one more extraction of the analysed split (the union of the sets) and one of the MI training split (the union
    # of its draws), none more: the sample sets come from the cached features
    assert len(list(cache.iterdir())) == entries + 2
    for name in ("cca_mel", "cca_phone", "mi_phone", "mi_word", "sts"):
        record = json.loads((tmp_path / "three" / f"provenance_{name}.json").read_text())
        one = json.loads((tmp_path / "one" / f"{name}.json").read_text())
        assert list(record["scores"]) == list(one) == ["T0", "D0", "T12"], name
        assert json.loads((tmp_path / "three" / f"{name}.json").read_text()) == record["scores"]
        for layer, score in record["scores"].items():
            spread, chance = record["spread"][layer], record["chance"][layer]
            assert spread["ci95"][0] <= score <= spread["ci95"][1] and spread["sd"] >= 0, (name, layer)
            assert chance["ci95"][0] <= chance["mean"] <= chance["ci95"][1], (name, layer)
            if name != "sts":
                sets = record["sample_set_scores"][layer]
                assert spread["count"] == len(sets) == 3 and score == pytest.approx(np.mean(sets), abs=1e-12)
                assert sets[0] == pytest.approx(one[layer], abs=1e-12), (name, layer)  # set 0 = the one-set sample
        if name.startswith("cca_"):
            assert [len(t) for t in record["trial_scores"]["T12"]] == [3, 3, 3]
            assert record["chance"]["T12"]["count"] == 3
        if name == "mi_phone":  # --mi-train-per-label reaches every set's training draw
            assert record["clustering"]["train_per_label"] == [2, 3]
            assert all(n <= 3 * 39 for n in record["train_samples"])  # at most 3 of each of the 39 phones
        if name.startswith("mi_"):
            chance = record["chance"]["T12"]["mean"]
            assert record["adjusted"]["T12"] == pytest.approx((record["scores"]["T12"] - chance) / (1 - chance))
    # the sets differ: different word segments (3 of each word, drawn three times)
    word_sets = json.loads((tmp_path / "three" / "provenance_mi_word.json").read_text())["sample_set_scores"]["T12"]
    assert len(set(word_sets)) == 3
    assert (tmp_path / "three" / "analysis.png").stat().st_size > 5000


def test_analyze_options_are_checked_before_the_analysis(tmp_path, capsys):
    """--seed -1 failed without the option named, --max-per-phone 0 was blamed on the alignments, and an --out
    naming a file was refused only after the whole analysis (issue 24)."""
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", "base_2res", seed=0)
    out_file = tmp_path / "taken"
    out_file.write_text("not a folder")
    base = ["analyze", "-u", "mrhubert_local", "-k", str(checkpoint), "--corpus", str(tmp_path / "no_corpus")]
    assert cli.main([*base, "--out", str(out_file)]) == 2
    assert f"--out {out_file} is a file" in capsys.readouterr().err
    assert out_file.read_text() == "not a folder"
    assert cli.main([*base, "--out", str(tmp_path / "o"), "--seed", "-1"]) == 2
    assert "--seed -1: give 0 or more" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "o"), "--max-per-phone", "0"]) == 2
    assert "--max-per-phone 0: give at least 1" in capsys.readouterr().err
