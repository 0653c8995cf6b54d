"""Differential checks: our stand-ins for what the s3prl wheel lacks, run beside s3prl's (and s3prl/LibriMix's) own
code on the same trees, outputs compared.

Needs local checkouts (nothing is copied into the project; the originals are run from the checkout):

    git clone https://github.com/s3prl/s3prl ~/src/s3prl
    git clone https://github.com/s3prl/LibriMix ~/src/LibriMix
    python benchmarks/differential_s3prl.py --s3prl ~/src/s3prl --librimix ~/src/LibriMix --out /tmp/differential

The trees are synthetic corpora in the raw layouts of the real datasets (``mrsuperb corpus``), prepared by
``mrsuperb prepare``. Checks:

- ``len_for_bucket``: s3prl's ``preprocess/generate_len_for_bucket.py`` (its split prompt answered on stdin, audio
  lengths through the compatibility layer's ``torchaudio.info``) against ``prepare asr``: the same rows (index,
  path, length, empty label), in the same order where no two lengths tie, both longest first.
- VoiceBank lists: s3prl's ``enhancement_stft/scripts/Voicebank/data_prepare.py`` (train, dev, test) on our 16 kHz
  folders against ``prepare se``: the same ``wav.scp``, ``utt2spk``, ``spk2utt`` lines (paths compared resolved).
  Our 48 -> 16 kHz files against torchaudio's ``transforms.Resample`` run here on the 48 kHz originals (what
  SpeechBrain's ``download_vctk``, which s3prl's docs prescribe, uses): signal-to-difference ratio at least 40 dB
  on every file (ours are rounded to 16 bits).
- Libri2Mix Kaldi folders: LibriMix's ``scripts/prepare_diarization.py`` against ``prepare sd``: every file
  byte-identical.
- SNIPS reader: s3prl's ``ctc/corpus/snips.py`` ``SnipsDataset`` against ours
  (``downstream_probes.s3prl.compat.snips``) with SUPERB's speaker lists and s3prl's own tokenizer: the same files
  and token ids per split, in the same order.
- SUPERB configs: every key of s3prl's official configs against ``recipes/superb/<task>/config.yaml``; the
  differences listed (data paths and the ASR language-model paths are expected to differ: docs/tasks.md).

Not checked: the ``sox_effects`` stand-in (torchaudio 2.9 removed ``torchaudio.sox_effects``, so the original does
not run on this stack). Prints one line per check and writes ``<out>/differential.json``; exit status 1 if a check
fails.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml

CONFIGS = {  # our task -> s3prl's official config, relative to the checkout
    "asr": "s3prl/downstream/asr/config.yaml",
    "sf": "s3prl/downstream/ctc/snips.yaml",
    "ic": "s3prl/downstream/fluent_commands/config.yaml",
    "ks": "s3prl/downstream/speech_commands/config.yaml",
    "se": "s3prl/downstream/enhancement_stft/configs/cfg_voicebank.yaml",
    "sd": "s3prl/downstream/diarization/config.yaml",
}
EXPECTED_CONFIG_DIFFERENCES = {  # (task, key prefix): why
    ("asr", "downstream_expert.datarc.libri_root"): "data path",
    ("asr", "downstream_expert.datarc.bucket_file"): "data path",
    ("asr", "downstream_expert.datarc.dict_path"): "the same char.dict, under recipes/",
    (
        "asr",
        "downstream_expert.datarc.decoder_args.kenlm_model",
    ): "unused (decoder_type None, as in the official config); the official value is its authors' local path",
    (
        "asr",
        "downstream_expert.datarc.decoder_args.lexicon",
    ): "unused (decoder_type None); the official value is its authors' local path",
    ("sf", "downstream_expert.corpus.path"): "data path",
    ("sf", "downstream_expert.text.slots_file"): "data path",
    ("sf", "downstream_expert.text.vocab_file"): "the same vocabulary, under recipes/",
    ("ic", "downstream_expert.datarc.file_path"): "data path",
    ("ks", "downstream_expert.datarc.speech_commands_root"): "data path",
    ("ks", "downstream_expert.datarc.speech_commands_test_root"): "data path",
    ("se", "downstream_expert.loaderrc."): "data path",
    ("sd", "downstream_expert.loaderrc."): "data path",
}


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


# ----------------------------------------------------------------------------------------------------------------
# the trees


def build_trees(work: Path, utterances: dict[str, int | None]) -> dict[str, Path]:
    """Synthetic corpora (raw layouts) under work/corpora, each prepared by us into work/ours/<task>."""
    from downstream_probes.corpora import build_corpus, load_manifest
    from downstream_probes.corpora.prepare import prepare

    roots = {}
    for task, size in utterances.items():
        root = work / "corpora" / task
        try:
            load_manifest(root)
        except (FileNotFoundError, ValueError):
            build_corpus(task, root, utterances=size, seed=0, force=root.exists())
        prepare(task, root, work / "ours" / task)
        roots[task] = root
    return roots


# ----------------------------------------------------------------------------------------------------------------
# checks


_LEN_FOR_BUCKET = """
import runpy, sys
from downstream_probes.s3prl import compat
compat.apply()  # torchaudio.set_audio_backend and torchaudio.info, removed from torchaudio 2.9
sys.argv = [sys.argv[1], "-i", sys.argv[2], "-o", sys.argv[3], "--n_jobs", "1"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _table(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def check_len_for_bucket(s3prl: Path, work: Path, roots: dict[str, Path]) -> dict:
    libri = roots["asr"] / "LibriSpeech"
    theirs = work / "theirs" / "asr"
    splits = ("train-clean-100", "dev-clean", "test-clean")  # indices 0, 3, 5 of the script's LibriSpeech menu
    _run([sys.executable, "-c", _LEN_FOR_BUCKET, str(s3prl / "s3prl/preprocess/generate_len_for_bucket.py"),
          str(libri), str(theirs)], input="0 3 5\n")  # fmt: skip
    report = {}
    for split in splits:
        ours = _table(work / "ours" / "asr" / "len_for_bucket" / f"{split}.csv")
        original = _table(theirs / "len_for_bucket" / f"{split}.csv")
        lengths = [int(row[2]) for row in ours[1:]]
        ties = len(lengths) != len(set(lengths))
        same_rows = sorted(map(tuple, ours[1:])) == sorted(map(tuple, original[1:]))
        same = ours[0] == original[0] and same_rows and (ties or ours == original)
        report[split] = {"rows": len(ours) - 1, "identical": ours == original, "ties": ties, "ok": same}
    return {"ok": all(r["ok"] for r in report.values()), "splits": report}


def _lines(path: Path) -> list[list[str]]:
    return [line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines()]


def _resolved(rows: list[list[str]]) -> list[tuple[str, str]]:
    return [(key, str(Path(value).resolve())) for key, value in rows]


def check_voicebank(s3prl: Path, work: Path, roots: dict[str, Path]) -> dict:
    import torch
    import torchaudio

    ours = work / "ours" / "se"
    theirs = work / "theirs" / "se"
    script = s3prl / "s3prl/downstream/enhancement_stft/scripts/Voicebank/data_prepare.py"
    report: dict[str, Any] = {}
    for part in ("train", "dev", "test"):
        if not (theirs / "wav16k" / part).exists():
            _run([sys.executable, str(script), str(ours), str(theirs), "--part", part])
        for kind in ("clean", "noisy"):
            for name in ("wav.scp", "utt2spk", "spk2utt"):
                a, b = ours / "wav16k" / part / kind / name, theirs / "wav16k" / part / kind / name
                equal = _resolved(_lines(a)) == _resolved(_lines(b)) if name == "wav.scp" else _lines(a) == _lines(b)
                report[f"{part}/{kind}/{name}"] = {"lines": len(_lines(a)), "ok": equal}
    worst = float("inf")
    raw = roots["se"] / "VoiceBank-DEMAND"
    for source in sorted(raw.glob("*_wav/*.wav")):
        audio, rate = soundfile.read(str(source), dtype="float64")
        reference = torchaudio.transforms.Resample(rate, 16000)(torch.from_numpy(audio).float()).double().numpy()
        mine, _ = soundfile.read(str(ours / f"{source.parent.name}_16k" / source.name), dtype="float64")
        count = min(len(mine), len(reference))
        difference = mine[:count] - reference[:count]
        ratio = 10 * np.log10(np.sum(reference[:count] ** 2) / max(np.sum(difference**2), 1e-20))
        worst = min(worst, float(ratio))
    report["resampling_min_sdr_db"] = round(worst, 1)
    lists_ok = all(v["ok"] for k, v in report.items() if isinstance(v, dict))
    return {"ok": lists_ok and worst >= 40.0, "files": report}


def check_librimix(librimix: Path, work: Path, roots: dict[str, Path]) -> dict:
    theirs = work / "theirs" / "sd"
    metadata = roots["sd"] / "Libri2Mix" / "wav16k" / "max" / "metadata"
    _run([sys.executable, "scripts/prepare_diarization.py", "--target_dir", str(theirs), "--source_dir", str(metadata),
          "--rttm_dir", str(roots["sd"] / "metadata" / "LibriSpeech")], cwd=librimix)  # fmt: skip
    report = {}
    for split in ("train", "dev", "test"):
        for name in ("wav.scp", "segments", "utt2spk", "spk2utt", "rttm", "reco2dur"):
            a = (work / "ours" / "sd" / split / name).read_bytes()
            b = (theirs / split / name).read_bytes()
            report[f"{split}/{name}"] = {"lines": a.count(b"\n"), "ok": a == b}
    return {"ok": all(v["ok"] for v in report.values()), "files": report}


def check_snips(s3prl: Path, work: Path, roots: dict[str, Path]) -> dict:
    from downstream_probes.paths import recipes_dir
    from downstream_probes.s3prl import compat
    from downstream_probes.s3prl.compat.snips import SnipsDataset as Ours

    compat.apply()
    from s3prl.downstream.ctc.text import load_text_encoder

    spec = importlib.util.spec_from_file_location(
        "s3prl_original_snips", s3prl / "s3prl/downstream/ctc/corpus/snips.py"
    )
    assert spec is not None and spec.loader is not None
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)
    config = yaml.safe_load((recipes_dir() / "superb" / "sf" / "config.yaml").read_text())["downstream_expert"]
    corpus = {key: config["corpus"][key] for key in ("train_speakers", "valid_speakers", "test_speakers")}
    root = roots["sf"] / "SNIPS"
    tokenizer = load_text_encoder(
        "character-slot", str(recipes_dir() / "superb" / "sf" / "vocab" / "character.txt"), str(root / "slots.txt")
    )
    report = {}
    for split in (["train"], ["valid"], ["test"]):
        a = Ours(split, tokenizer, 1, str(root), **corpus)
        b = original.SnipsDataset(split, tokenizer, 1, str(root), num_workers=1, **corpus)
        files_a, files_b = [str(f) for f in a.file_list], [str(f) for f in b.file_list]
        same_set = sorted(zip(files_a, map(list, a.text), strict=True)) == sorted(
            zip(files_b, map(list, b.text), strict=True)
        )
        report[split[0]] = {"files": len(files_a), "same_order": files_a == files_b, "ok": same_set}
    return {"ok": all(v["ok"] for v in report.values()), "splits": report}


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def check_configs(s3prl: Path, work: Path, roots: dict[str, Path]) -> dict:
    from downstream_probes.paths import recipes_dir

    report: dict[str, Any] = {}
    ok = True
    for task, relative in CONFIGS.items():
        ours = _flat(yaml.safe_load((recipes_dir() / "superb" / task / "config.yaml").read_text()))
        official = _flat(yaml.safe_load((s3prl / relative).read_text()))
        differences = []
        for key in sorted(set(ours) | set(official)):
            if ours.get(key, "<absent>") == official.get(key, "<absent>"):
                continue
            why = next(
                (r for (t, p), r in EXPECTED_CONFIG_DIFFERENCES.items() if t == task and key.startswith(p)), None
            )
            ok &= why is not None
            differences.append({"key": key, "ours": ours.get(key, "<absent>"), "s3prl": official.get(key, "<absent>"),
                                "expected": why})  # fmt: skip
        report[task] = {"keys": len(official), "differences": differences}
    return {"ok": ok, "tasks": report}


CHECKS: dict[str, tuple[str, Callable[..., dict]]] = {
    "len_for_bucket": ("s3prl", check_len_for_bucket),
    "voicebank": ("s3prl", check_voicebank),
    "librimix_sd": ("librimix", check_librimix),
    "snips_reader": ("s3prl", check_snips),
    "superb_configs": ("s3prl", check_configs),
}


def _summary(name: str, result: dict) -> str:
    if name == "len_for_bucket":
        detail = ", ".join(
            f"{s}: {r['rows']} rows {'identical' if r['identical'] else 'same rows (ties reordered)'}"
            for s, r in result["splits"].items()
        )
    elif name == "voicebank":
        lists = [k for k, v in result["files"].items() if isinstance(v, dict)]
        detail = f"{len(lists)} list files equal; resampling vs torchaudio min SDR {result['files']['resampling_min_sdr_db']} dB"
    elif name == "librimix_sd":
        detail = f"{len(result['files'])} files byte-identical" if result["ok"] else "files differ"
    elif name == "snips_reader":
        detail = ", ".join(
            f"{s}: {r['files']} files{'' if r['same_order'] else ' (order of equal lengths differs)'}"
            for s, r in result["splits"].items()
        )
    else:
        detail = "; ".join(
            f"{t}: {len(r['differences'])} of {r['keys']} keys differ"
            + (f" ({', '.join(d['key'].rsplit('.', 1)[-1] for d in r['differences'])})" if r["differences"] else "")
            for t, r in result["tasks"].items()
        )
    return f"{'PASS' if result['ok'] else 'FAIL'} {name}: {detail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--s3prl", type=Path, required=True, help="a checkout of github.com/s3prl/s3prl")
    parser.add_argument("--librimix", type=Path, required=True, help="a checkout of github.com/s3prl/LibriMix")
    parser.add_argument("--out", type=Path, required=True, help="work folder (corpora, both outputs, the report)")
    args = parser.parse_args(argv)
    for name, path, probe in (("--s3prl", args.s3prl, "s3prl/preprocess/generate_len_for_bucket.py"),
                              ("--librimix", args.librimix, "scripts/prepare_diarization.py")):  # fmt: skip
        if not (path / probe).is_file():
            parser.error(f"{name} {path}: no {probe} there; pass a checkout of the repository")
    work = args.out.resolve()
    roots = build_trees(work, {"asr": 24, "se": 12, "sd": 8, "sf": 40})
    results = {}
    for name, (repository, check) in CHECKS.items():
        results[name] = check(getattr(args, repository).resolve(), work, roots)
        print(_summary(name, results[name]), flush=True)
    from upstream_mrhubert.atomic_io import write_json_atomic

    commits = {}
    for name in ("s3prl", "librimix"):
        done = subprocess.run(
            ["git", "-C", str(getattr(args, name)), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        commits[name] = done.stdout.strip() or "unknown (not a git checkout)"
    write_json_atomic(work / "differential.json", {"checkouts": commits, "results": results})
    print(f"checkouts: s3prl {commits['s3prl']}, LibriMix {commits['librimix']}; report: {work / 'differential.json'}")
    return 0 if all(result["ok"] for result in results.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
