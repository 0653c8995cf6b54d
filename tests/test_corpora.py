"""Synthetic corpora: each task's output is read by s3prl's OWN downstream expert (built from our quick recipe with
the corpus's overrides), alignments are checked against the audio, builds are byte-reproducible, bad input fails
with one clear error and leaves nothing behind."""

from __future__ import annotations

import copy
import hashlib
import importlib
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from downstream_probes.cli import main as cli_main
from downstream_probes.corpora import (
    CORPORA,
    CorpusError,
    api,
    build_corpus,
    default_utterances,
    load_manifest,
    minimum_utterances,
    s3prl_overrides,
    snips_sf,
    text,
)
from downstream_probes.corpora.alignments import read_textgrid
from downstream_probes.corpora.espeak import SynthesisRequest, Voice, synthesize_many
from downstream_probes.corpora.phones import ARPABET_PHONES, to_arpabet
from downstream_probes.corpora.speech_commands_ks import hash_percentage
from downstream_probes.paths import recipes_dir
from downstream_probes.s3prl import compat as s3prl_compat

EXPERT_MODULES = {
    "asr": "asr",
    "sf": "ctc",
    "ic": "fluent_commands",
    "ks": "speech_commands",
    "se": "enhancement_stft",
    "sd": "diarization",
}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """``corpus(task)``: the task's default-size corpus, built once per session."""
    built: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in built:
            built[task] = build_corpus(task, tmp_path_factory.mktemp("corpora") / task)
        return built[task]

    return get


def _expert(task: str, root: Path, expdir: Path):
    """s3prl's downstream expert for ``task``, configured by our quick recipe plus the corpus's overrides."""
    s3prl_compat.apply()
    config = yaml.safe_load((recipes_dir() / "quick" / task / "config.yaml").read_text())["downstream_expert"]
    api.merge_config(config, s3prl_overrides(root))
    module = importlib.import_module(f"s3prl.downstream.{EXPERT_MODULES[task]}.expert")
    return module.DownstreamExpert(
        upstream_dim=8, upstream_rate=320, downstream_expert=copy.deepcopy(config), expdir=str(expdir)
    )


# ----------------------------------------------------------------------------------------------------------------
# synthesis and alignments


def test_every_word_and_sentence_maps_to_arpabet():
    rng = np.random.default_rng(0)
    words = text.all_words()
    sentences = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    sentences += [text.asr_sentence(rng) for _ in range(60)] + [text.snips_sentence(rng).text for _ in range(40)]
    sentences += [p.upper() for intent in text.FLUENT_INTENTS for p in intent.phrasings]
    requests = [SynthesisRequest(s, Voice("m3" if i % 2 else "f2", "x"), seed=i) for i, s in enumerate(sentences)]
    seen = Counter()
    for synthesis in synthesize_many(requests):
        assert [w.text for w in synthesis.words] == synthesis.text.split()
        for phoneme in synthesis.phonemes:
            seen.update(to_arpabet(phoneme.mnemonic))  # raises on an unmapped espeak phoneme
        assert all(0 <= w.start < w.end <= synthesis.num_samples for w in synthesis.words)
    assert set(seen) <= set(ARPABET_PHONES)
    assert len(seen) >= 36  # the sentences exercise nearly the whole inventory


def test_textgrids_lie_inside_the_audio_and_in_order(corpus):
    root = corpus("asr")
    grids = sorted((root / "alignments").rglob("*.TextGrid"))
    transcripts = {}
    for trans in (root / "LibriSpeech").rglob("*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt, sentence = line.split(" ", 1)
            transcripts[utt] = sentence
    assert len(grids) == len(transcripts) == load_manifest(root)["utterances"]
    for path in grids:
        grid = read_textgrid(path)
        split, speaker, chapter = path.relative_to(root / "alignments").parts[:3]
        info = soundfile.info(str(root / "LibriSpeech" / split / speaker / chapter / f"{path.stem}.flac"))
        assert grid.xmin == 0 and grid.xmax == pytest.approx(info.frames / info.samplerate, abs=1e-9)
        words, phones = grid.tier("words"), grid.tier("phones")
        for tier in (words, phones):  # contiguous cover of [0, xmax], every interval non-empty
            assert tier.intervals[0].start == 0 and tier.intervals[-1].end == grid.xmax
            assert all(a.end == b.start for a, b in zip(tier.intervals, tier.intervals[1:], strict=False))
            assert all(i.start < i.end for i in tier.intervals)
        assert [w.label for w in words.labelled()] == transcripts[path.stem].lower().split()
        assert words.intervals[0].label == "" and words.intervals[-1].label == ""  # leading/trailing silence
        spoken = words.labelled()
        for phone in phones.labelled():
            assert phone.label in ARPABET_PHONES
            assert any(w.start <= phone.start and phone.end <= w.end for w in spoken), (path, phone)
        for word in spoken:  # every word has phones
            assert any(word.start <= p.start < word.end for p in phones.labelled())


# ----------------------------------------------------------------------------------------------------------------
# each task through s3prl's own expert


def test_asr_librispeech_loads_with_s3prl(corpus, tmp_path):
    root = corpus("asr")
    expert = _expert("asr", root, tmp_path)
    transcripts = {}
    for trans in (root / "LibriSpeech").rglob("*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt, sentence = line.split(" ", 1)
            transcripts[utt] = sentence
    manifest = load_manifest(root)
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        loader = expert.get_dataloader("train" if split == "train-clean-100" else split)
        names = []
        for wavs, labels, filenames in loader:
            for wav, label, name in zip(wavs, labels, filenames, strict=False):
                assert wav.ndim == 1 and wav.shape[0] > 16000 * 0.5
                decoded = expert.dictionary.string(label).replace(" ", "").replace("|", " ").strip()
                assert decoded == transcripts[name]
                names.append(name)
        assert len(names) == manifest["splits"][split]["utterances"]
    # split speakers are disjoint
    speakers = [set(manifest["splits"][s]["speakers"]) for s in ("train-clean-100", "dev-clean", "test-clean")]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert len(expert.dictionary.symbols) == 4 + 28  # fairseq specials + | A-Z ': nothing was added on the fly


def test_sf_snips_loads_with_s3prl(corpus, tmp_path):
    root = corpus("sf")
    expert = _expert("sf", root, tmp_path)
    tokenizer = expert.tokenizer
    lines = {l.split(" ", 1)[0]: l for l in (root / "SNIPS" / "all.iob.snips.txt").read_text().splitlines()}
    superb = {split: {name for name, _ in snips_sf.SPEAKERS[split]} for split in snips_sf.SPLITS}
    for split, folder in (("train", "train"), ("dev", "valid"), ("test", "test")):
        seen = []
        for wavs, tokens, files in expert.get_dataloader(split):
            for wav, token_ids, name in zip(wavs, tokens, files, strict=False):
                assert wav.ndim == 1 and wav.shape[0] > 8000
                assert tokenizer.unk_idx not in token_ids.tolist()
                decoded = tokenizer.decode(token_ids.tolist())
                words, tags = lines[name].split("\t")
                spoken = words.split(" ")[2:-1]
                slots = {t for t in tags.split(" ")[1:-1] if t != "O"}
                for slot in slots:
                    assert f"B-{slot} " in decoded and f" E-{slot}" in decoded
                plain = " ".join(w for w in decoded.split() if not w.startswith(("B-", "E-")))
                assert plain == " ".join(spoken)
                seen.append(name)
        # the real layout: every folder holds other splits' voices too; the reader keeps SUPERB's speakers of it
        in_folder = [wav.stem for wav in (root / "SNIPS" / folder).glob("*.wav")]
        assert {name.split("-")[0] for name in in_folder} - superb[folder]
        kept = sorted(n for n in in_folder if n.split("-")[0] in superb[folder])
        if split == "train":  # s3prl's train loader samples its buckets (with repeats)
            assert seen and set(seen) <= set(kept)
        else:
            assert sorted(seen) == kept and seen


def test_ic_fluent_commands_loads_with_s3prl(corpus, tmp_path):
    root = corpus("ic")
    expert = _expert("ic", root, tmp_path)
    assert expert.values_per_slot == [6, 14, 4]  # every FSC value is in the train split
    for split in ("train", "dev", "test"):
        dataframe = {"train": expert.train_df, "dev": expert.valid_df, "test": expert.test_df}[split]
        truth = {Path(p).stem: row for p, row in zip(dataframe["path"], dataframe.itertuples(), strict=False)}
        count = 0
        for wavs, labels, names in expert.get_dataloader(split):
            for wav, label, name in zip(wavs, labels, names, strict=False):
                assert wav.ndim == 1 and label.shape == (3,)
                row = truth[name]
                assert [
                    expert.Sy_intent[slot][int(i)]
                    for slot, i in zip(("action", "object", "location"), label, strict=False)
                ] == [
                    row.action,
                    row.object,
                    row.location,
                ]
                count += 1
        assert count == len(dataframe)
    speakers = [set(df["speakerId"]) for df in (expert.train_df, expert.valid_df, expert.test_df)]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])


def test_ks_speech_commands_loads_with_s3prl(corpus, tmp_path):
    root = corpus("ks")
    expert = _expert("ks", root, tmp_path)
    classes = importlib.import_module("s3prl.downstream.speech_commands.dataset").CLASSES
    train_labels = Counter(label for label, _ in expert.train_dataset.data)
    assert set(train_labels) == set(classes)  # 10 keywords, _unknown_, _silence_ (background noise)
    assert len(expert.dev_dataset.data) > 6  # the hash rule put our valid speakers in dev
    for wavs, labels, _names in expert.get_dataloader("train"):
        assert all(w.shape == (16000,) for w in wavs) and all(0 <= l < 12 for l in labels)
        break
    test_items = [
        (wav, classes[label])
        for wavs, labels, _ in expert.get_dataloader("test")
        for wav, label in zip(wavs, labels, strict=False)
    ]
    assert all(wav.shape == (16000,) for wav, _ in test_items)
    assert "_silence_" in {label for _, label in test_items}
    for speaker in load_manifest(root)["splits"]["valid"]["speakers"]:
        assert hash_percentage(speaker) < 10
    for speaker in load_manifest(root)["splits"]["train"]["speakers"]:
        assert hash_percentage(speaker) >= 20
    # the real tarball's layout: the train tree also holds the testing partition, listed and dropped by the hash rule
    tree = root / "speech_commands_v0.01"
    testing = (tree / "testing_list.txt").read_text().split()
    assert testing and all((tree / name).is_file() and 10 <= hash_percentage(name.split("/")[1].split("_")[0]) < 20
                           for name in testing)  # fmt: skip
    used = {Path(path).relative_to(tree).as_posix() for _, path in expert.train_dataset.data + expert.dev_dataset.data}
    assert not used & set(testing)
    assert set((tree / "validation_list.txt").read_text().split()) <= used


def test_se_voicebank_loads_with_s3prl(corpus, tmp_path):
    root = corpus("se")
    expert = _expert("se", root, tmp_path)
    for split in ("train", "dev", "test"):
        batch = next(iter(expert.get_dataloader(split)))
        _source_wav_list, _names, source_attr, source_wav, target_attr, target_wav_list, _feat_length, _wav_length = (
            batch
        )
        assert source_wav.shape == target_wav_list[0].shape
        assert (
            source_attr["magnitude"].shape[-1] == 257
            and target_attr["magnitude"][0].shape == source_attr["magnitude"].shape
        )
        noisy, clean = source_wav[0].numpy(), target_wav_list[0][0].numpy()
        residual = noisy - clean
        snr = 10 * np.log10(np.sum(clean**2) / np.sum(residual**2))
        assert -3 < snr < 25  # noisy = clean + noise at VoiceBank-DEMAND SNRs (whole-file SNR, speech padded)
    manifest = load_manifest(root)
    raw = sorted((root / "VoiceBank-DEMAND").glob("*_wav/*.wav"))
    assert raw and {soundfile.info(str(path)).samplerate for path in raw} == {48000}  # DataShare's rate
    assert not list((root / "VoiceBank-DEMAND").glob("*_16k"))  # the 16 kHz copies are the preparation's
    assert set(manifest["splits"]["dev"]["speakers"]) <= {"p226", "p287"}
    assert set(manifest["splits"]["test"]["speakers"]) <= {"p232", "p257"}


def test_sd_kaldi_mixtures_load_with_s3prl(corpus, tmp_path):
    root = corpus("sd")
    expert = _expert("sd", root, tmp_path)
    wavs, labels, _lengths, _ = next(iter(expert.get_dataloader("train")))
    assert all(label.shape[1] == 2 for label in labels)
    overlapped = 0
    for wavs, labels, _lengths, _rec in expert.get_dataloader("test"):
        for wav, label in zip(wavs, labels, strict=False):
            assert abs(wav.shape[0] / 320 - label.shape[0]) <= 1
            overlapped += int(np.sum(label.sum(axis=1) == 2))
            assert label[:, 0].any() and label[:, 1].any()
    assert overlapped > 0
    for split in ("train", "dev", "test"):
        folder = Path(s3prl_overrides(root)["loaderrc"][f"{split}_dir"])  # prepared from the Libri2Mix layout
        durations = dict(l.split() for l in (folder / "reco2dur").read_text().splitlines())
        for line in (folder / "wav.scp").read_text().splitlines():
            recording, path = line.split()
            info = soundfile.info(path)
            assert float(durations[recording]) == info.frames / 16000
        segments = [l.split() for l in (folder / "segments").read_text().splitlines()]
        rttm = [l.split() for l in (folder / "rttm").read_text().splitlines()]
        utt2spk = dict(l.split() for l in (folder / "utt2spk").read_text().splitlines())
        assert sorted((f[1], float(f[3]), f[7]) for f in rttm) == sorted(
            (rec, float(st), utt2spk[utt]) for utt, rec, st, _ in segments
        )
        assert all(len({utt2spk[u] for u, r, _, _ in segments if r == rec}) == 2 for rec in durations)
    # mix_both is the sum of its two sources and the noise (LibriMix's mixture), up to int16 rounding
    mixture = next((root / "Libri2Mix" / "wav16k" / "max" / "test" / "mix_both").glob("*.wav"))
    parts = [
        soundfile.read(mixture.parent.parent / kind / mixture.name, dtype="int16")[0] for kind in ("s1", "s2", "noise")
    ]
    total = sum(part.astype(np.int32) for part in parts)
    assert np.max(np.abs(soundfile.read(mixture, dtype="int16")[0] - total)) <= 2


# ----------------------------------------------------------------------------------------------------------------
# reproducibility and bad input


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path):
    out = tmp_path / "corpus"
    sizes = {task: minimum_utterances(task) for task in CORPORA}
    for task in CORPORA:
        build_corpus(task, out / task, utterances=sizes[task], seed=3)
    first = _digest(out)
    shutil.move(out, tmp_path / "first")
    for task in reversed(CORPORA):  # another order in the same process: results must not depend on it
        build_corpus(task, out / task, utterances=sizes[task], seed=3)
    assert _digest(out) == first
    assert any(name.endswith(".flac") for name in first) and any(name.endswith("_mix_both.csv") for name in first)
    other = build_corpus("asr", tmp_path / "other", utterances=sizes["asr"], seed=4)
    assert _digest(other) != _digest(out / "asr")


def test_bad_input_is_refused_with_one_clear_error(tmp_path, capsys):
    with pytest.raises(CorpusError, match="unknown task 'xyz'"):
        build_corpus("xyz", tmp_path / "a")
    with pytest.raises(CorpusError, match="too few .* at least"):
        build_corpus("asr", tmp_path / "a", utterances=minimum_utterances("asr") - 1)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    with pytest.raises(CorpusError, match="not empty.*--force"):
        build_corpus("ic", occupied)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]  # nothing half-written

    assert cli_main(["corpus", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert cli_main(["corpus", "sd", "--out", str(occupied), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err

    # --force replaces only one of our corpora (issue 14): a folder of other files is refused and kept.
    assert cli_main(["corpus", "sd", "--out", str(occupied), "--force", "--quiet", "--utterances", "4"]) == 2
    assert "not a corpus" in capsys.readouterr().err and (occupied / "keep.txt").exists()
    assert cli_main(["corpus", "sd", "--out", str(tmp_path / "ours"), "--quiet", "--utterances", "4"]) == 0
    assert cli_main(["corpus", "sd", "--out", str(tmp_path / "ours"), "--force", "--quiet", "--utterances", "5"]) == 0
    assert load_manifest(tmp_path / "ours")["utterances"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied", "ours"]


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    existing = build_corpus("sd", tmp_path / "corpus", utterances=4)
    before = _digest(existing)

    def explode(ctx):
        (ctx.work / "partial.txt").write_text("half")
        raise RuntimeError("synthesis failed")

    monkeypatch.setattr(api._BUILDERS["sd"], "build", explode)
    with pytest.raises(RuntimeError, match="synthesis failed"):
        build_corpus("sd", existing, utterances=4, force=True)
    assert _digest(existing) == before  # the old corpus is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_manifest_and_overrides_describe_the_corpus(corpus):
    for task in ("ic", "asr"):
        root = corpus(task)
        manifest = load_manifest(root)
        assert manifest["task"] == task and manifest["seed"] == 0 and manifest["utterances"] == default_utterances(task)
        assert manifest["sample_rate"] == 16000 and manifest["synthesizer"]["engine"] == "espeak-ng"
        assert manifest["duration_seconds"] == pytest.approx(
            sum(s["seconds"] for s in manifest["splits"].values()), abs=0.01
        )
        assert all(s in manifest["speakers"] for split in manifest["splits"].values() for s in split["speakers"])
        overrides = s3prl_overrides(root)
        for dotted in manifest["s3prl"]["path_keys"]:
            section, key = dotted.split(".")
            assert Path(overrides[section][key]).is_absolute() and Path(overrides[section][key]).exists()
