"""Each compatibility fix of downstream_probes.s3prl.compat, exercised against the real libraries."""

from __future__ import annotations

import argparse
import configparser
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from downstream_probes.s3prl import compat as s3prl_compat
from downstream_probes.s3prl.compat import sox_effects

s3prl_compat.apply()

import torchaudio  # noqa: E402


def _write_wav(path: Path, data: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    soundfile.write(str(path), data, rate, subtype=subtype)
    return path


# ---------------------------------------------------------------------------------------------- torchaudio


def test_set_audio_backend_is_accepted_and_s3prl_hub_imports() -> None:
    torchaudio.set_audio_backend("sox_io")
    assert torchaudio.get_audio_backend() == "soundfile"
    import s3prl.hub

    assert callable(s3prl.hub.hubert)


def test_torchaudio_load_reads_through_soundfile(tmp_path: Path) -> None:
    samples = (np.sin(np.arange(1600) / 10) * 12000).astype(np.int16)
    path = _write_wav(tmp_path / "a.wav", samples)
    wav, rate = torchaudio.load(str(path))
    assert rate == 16000 and wav.dtype == torch.float32 and wav.shape == (1, 1600)
    np.testing.assert_allclose(wav[0].numpy(), samples / 32768.0, atol=1e-6)

    part, _ = torchaudio.load(path, frame_offset=100, num_frames=50)
    assert torch.equal(part, wav[:, 100:150])
    raw, _ = torchaudio.load(path, normalize=False)
    assert raw.dtype == torch.int16 and torch.equal(raw[0], torch.from_numpy(samples))
    time_first, _ = torchaudio.load(path, channels_first=False)
    assert time_first.shape == (1600, 1)


def test_torchaudio_info_and_save(tmp_path: Path) -> None:
    stereo = np.zeros((800, 2), dtype=np.float32)
    path = _write_wav(tmp_path / "s.wav", stereo, rate=8000)
    info = torchaudio.info(str(path))
    assert (info.sample_rate, info.num_frames, info.num_channels, info.bits_per_sample) == (8000, 800, 2, 16)

    tensor = torch.linspace(-0.5, 0.5, 400).unsqueeze(0)
    torchaudio.save(str(tmp_path / "out.wav"), tensor, 16000, bits_per_sample=16)
    back, rate = torchaudio.load(str(tmp_path / "out.wav"))
    assert rate == 16000 and torch.allclose(back, tensor, atol=1 / 32768)


def test_torchaudio_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        torchaudio.load(str(tmp_path / "nope.wav"))


def test_sox_effects_chain_of_speech_commands(tmp_path: Path) -> None:
    # KS's chain: mono, 16 kHz, -3 dB, on a stereo 8 kHz file.
    tone = (0.5 * np.sin(2 * np.pi * 200 * np.arange(8000) / 8000)).astype(np.float32)
    path = _write_wav(tmp_path / "st.wav", np.stack([tone, tone * 0.5], axis=1), rate=8000, subtype="FLOAT")
    from torchaudio.sox_effects import apply_effects_file

    wav, rate = apply_effects_file(str(path), [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    assert rate == 16000 and wav.shape == (1, 16000)
    expected_peak = 0.75 * 0.5 * 10 ** (-3 / 20)
    assert abs(float(wav.abs().max()) - expected_peak) < 0.01


def test_sox_effects_norm_pad_trim_reverse_vol() -> None:
    from torchaudio.sox_effects import apply_effects_tensor

    signal = torch.tensor([[0.1, -0.2, 0.3, 0.05]])
    normed, _ = apply_effects_tensor(signal, 4, [["norm"]])
    assert torch.isclose(normed.abs().max(), torch.tensor(1.0))
    padded, _ = apply_effects_tensor(signal, 4, [["pad", "0.5", "2s"]])
    assert padded.shape == (1, 8) and torch.equal(padded[:, 2:6], signal)
    trimmed, _ = apply_effects_tensor(signal, 4, [["trim", "0.25", "0.5"]])
    assert torch.equal(trimmed, signal[:, 1:3])
    reversed_, _ = apply_effects_tensor(signal, 4, [["reverse"]])
    assert torch.equal(reversed_, signal.flip(-1))
    louder, _ = apply_effects_tensor(signal, 4, [["vol", "6dB"]])
    assert torch.allclose(louder, (signal * 10 ** (6 / 20)).clamp(-1, 1))


def test_sox_effects_unsupported_effect_is_named() -> None:
    with pytest.raises(sox_effects.UnsupportedSoxEffectError, match="'silence'"):
        sox_effects.apply_effects_tensor(torch.zeros(1, 10), 16000, [["silence", "1", "0.1", "0.1%"]])


def test_speech_commands_dataset_reads_through_the_standin(tmp_path: Path) -> None:
    from s3prl.downstream.speech_commands.dataset import CLASSES, SpeechCommandsTestingDataset

    (tmp_path / "yes").mkdir()
    _write_wav(tmp_path / "yes" / "abc_nohash_0.wav", np.full(8000, 1000, dtype=np.int16), rate=8000)
    dataset = SpeechCommandsTestingDataset(speech_commands_test_root=str(tmp_path))
    wav, label, name = dataset[0]
    assert CLASSES[label] == "yes" and name == "yes-abc_nohash_0.wav" and wav.shape == (16000,)


# ------------------------------------------------------------------------------------ undeclared / removed deps


def test_tensorboardx_is_required_and_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    s3prl_compat.require_tensorboardx()
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    assert "tensorboardX" in setup["options"]["install_requires"]
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        s3prl_compat.require_tensorboardx()


def test_huggingface_hub_legacy_names() -> None:
    from huggingface_hub import HfFolder, Repository

    assert HfFolder.get_token() is None or isinstance(HfFolder.get_token(), str)
    with pytest.raises(RuntimeError, match="push_to_hf_hub"):
        Repository(local_dir="x")
    import s3prl.run_downstream  # imports HfApi, HfFolder at module level

    assert s3prl.run_downstream.HfFolder is HfFolder


def test_catalyst_distributed_sampler_wrapper_shards_the_draws() -> None:
    from catalyst.data.sampler import DistributedSamplerWrapper

    inner = list(range(10, 16))
    shards = [list(DistributedSamplerWrapper(inner, num_replicas=2, rank=rank, shuffle=False)) for rank in (0, 1)]
    assert shards == [[10, 12, 14], [11, 13, 15]]
    import s3prl.downstream.speech_commands.expert  # noqa: F401  (imports the wrapper)


def test_numpy_aliases() -> None:
    assert np.int is int and np.float is float and np.complex is complex
    assert np.fromiter((x for x in (1, 2)), np.int).tolist() == [1, 2]


def test_ctc_snips_corpus_module(tmp_path: Path) -> None:
    from s3prl.downstream.ctc.corpus.snips import SnipsDataset
    from s3prl.downstream.ctc.text import load_text_encoder

    (tmp_path / "train").mkdir()
    lines = []
    for index, words in enumerate(["PLAY JAZZ", "PLAY SOME ROCK MUSIC"]):
        _write_wav(tmp_path / "train" / f"Ivy-u{index}.wav", np.zeros(1600, dtype=np.int16))
        tags = " ".join(["O"] + ["genre" if w in ("JAZZ", "ROCK") else "O" for w in words.split()] + ["PlayMusic"])
        lines.append(f"Ivy-u{index} BOS {words} EOS\t{tags}")
    (tmp_path / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "slots.txt").write_text("O\ngenre\n")
    vocab = Path(__file__).resolve().parent.parent / "recipes" / "superb" / "sf" / "vocab" / "character.txt"
    tokenizer = load_text_encoder("character-slot", str(vocab), str(tmp_path / "slots.txt"))
    dataset = SnipsDataset(["train"], tokenizer, 1, str(tmp_path), train_speakers=["Ivy"])
    assert [Path(f).stem for f in dataset.file_list] == ["Ivy-u1", "Ivy-u0"]  # longest transcript first
    assert tokenizer.decode(dataset.text[1]).startswith("PLAY")
    assert len(SnipsDataset(["train"], tokenizer, 2, str(tmp_path), train_speakers=["Ivy"])[0]) == 2
    with pytest.raises(ValueError, match="train_speakers"):
        SnipsDataset(["train"], tokenizer, 1, str(tmp_path))


def test_snips_real_layout_keeps_superb_speakers(tmp_path: Path) -> None:
    """Audio SNIPS as distributed: all 16 speakers in all three split folders; SUPERB's 8 / 4 / 4 split by speaker."""
    import yaml
    from s3prl.downstream.ctc.corpus.snips import SnipsDataset
    from s3prl.downstream.ctc.text import load_text_encoder

    recipes = Path(__file__).resolve().parent.parent / "recipes" / "superb" / "sf"
    corpus = yaml.safe_load((recipes / "config.yaml").read_text())["downstream_expert"]["corpus"]
    speakers = {split: corpus[f"{split}_speakers"] for split in ("train", "valid", "test")}
    everyone = sorted(name for names in speakers.values() for name in names)
    assert len(everyone) == len(set(everyone)) == 16
    lines = []
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
        for speaker in everyone:
            for number in range(2):
                utt_id = f"{speaker}-snips-{split}-{number}"
                _write_wav(tmp_path / split / f"{utt_id}.wav", np.zeros(1600, dtype=np.int16))
                lines.append(f"{utt_id} BOS PLAY JAZZ EOS\tO O genre PlayMusic")
    (tmp_path / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "slots.txt").write_text("O\ngenre")
    tokenizer = load_text_encoder(
        "character-slot", str(recipes / "vocab" / "character.txt"), str(tmp_path / "slots.txt")
    )
    options = {key: value for key, value in corpus.items() if key.endswith("_speakers")}
    for split in ("train", "valid", "test"):
        dataset = SnipsDataset([split], tokenizer, 1, str(tmp_path), **options)
        found = {Path(f).stem.split("-")[0] for f in dataset.file_list}
        assert found == set(speakers[split]), split
        assert all(Path(f).parent.name == split for f in dataset.file_list)
        assert len(dataset) == 2 * len(speakers[split])


def test_ctc_loader_keeps_num_workers() -> None:
    import s3prl.downstream.ctc.expert as ctc_expert

    seen = []
    corpus = {"num_workers": 0, "name": "snips"}
    # The wrapper hands s3prl a copy: s3prl's pop of num_workers must not reach our config.
    assert getattr(ctc_expert.load_dataset, "__mrsuperb_compat__", False)
    import s3prl.downstream.ctc.data as ctc_data

    def fake_create_dataset(split, tokenizer, num_workers, **kwargs):
        seen.append(num_workers)
        raise StopIteration

    saved = ctc_data.create_dataset
    ctc_data.create_dataset = fake_create_dataset
    try:
        for _ in range(2):
            with pytest.raises(StopIteration):
                ctc_expert.load_dataset("dev", None, corpus)
    finally:
        ctc_data.create_dataset = saved
    assert seen == [0, 0] and corpus["num_workers"] == 0


# ---------------------------------------------------------------------------------------------- checkpoints


class _NotAllowed:
    pass


def test_s3prl_checkpoint_loads_with_safe_unpickler(tmp_path: Path) -> None:
    path = tmp_path / "states-1.ckpt"
    torch.save({"Args": argparse.Namespace(upstream="x", local_rank=None), "Step": 1}, path)
    loaded = torch.load(path, map_location="cpu")
    assert loaded["Args"].upstream == "x"
    torch.save({"Args": _NotAllowed()}, tmp_path / "bad.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "bad.ckpt", map_location="cpu")


def test_runner_saves_checkpoints_atomically_and_keeps_the_previous(tmp_path: Path) -> None:
    import s3prl.downstream.runner as runner_module

    first, second = tmp_path / "states-1.ckpt", tmp_path / "states-2.ckpt"
    runner_module.torch.save({"Step": 1}, str(first))
    runner_module.os.remove(str(first))  # what max_keep does before the next save
    assert first.exists()  # still there until the next checkpoint is complete
    runner_module.torch.save({"Step": 2}, str(second))
    assert not first.exists() and second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["states-2.ckpt"]  # no temporary left
    other = tmp_path / "notes.txt"
    other.write_text("x")
    runner_module.os.remove(str(other))
    assert not other.exists()


# ---------------------------------------------------------------------------------------------- distributed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cuda_set_device_is_a_noop_without_gpu() -> None:
    torch.cuda.set_device(0)


def test_ddp_on_cpu_drops_device_ids_and_evaluates_locally(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = torch.nn.Linear(2, 1)
        wrapped = DistributedDataParallel(model, device_ids=[0], find_unused_parameters=True)
        assert isinstance(wrapped, DistributedDataParallel)
        wrapped(torch.ones(3, 2)).sum().backward()
        with torch.no_grad():
            assert torch.equal(wrapped(torch.ones(1, 2)), model(torch.ones(1, 2)))
    finally:
        dist.destroy_process_group()


def test_translate_local_rank() -> None:
    assert s3prl_compat.translate_local_rank(["-m", "train", "--local-rank=1"], {}) == ["-m", "train", "--local_rank=1"]
    assert s3prl_compat.translate_local_rank(["--local-rank", "2"], {}) == ["--local_rank", "2"]
    assert s3prl_compat.translate_local_rank(["-m", "train"], {"LOCAL_RANK": "1"}) == [
        "-m",
        "train",
        "--local_rank",
        "1",
    ]
    assert s3prl_compat.translate_local_rank(["--local_rank", "0"], {"LOCAL_RANK": "1"}) == ["--local_rank", "0"]
    assert s3prl_compat.translate_local_rank(["-m", "train"], {}) == ["-m", "train"]


def test_device_and_backend_follow_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert s3prl_compat.choose_device_and_backend(["--device", "cuda:1"]) == ["--device", "cuda:1", "--backend", "nccl"]
    assert s3prl_compat.choose_device_and_backend(["--device", "cpu", "--backend", "mpi"])[-1] == "mpi"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert s3prl_compat.choose_device_and_backend([]) == ["--device", "cpu", "--backend", "gloo"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert s3prl_compat.choose_device_and_backend([]) == ["--device", "cuda", "--backend", "nccl"]


def test_apply_all_is_idempotent() -> None:
    from torch.nn.parallel import DistributedDataParallel

    load, ddp = torchaudio.load, DistributedDataParallel
    s3prl_compat.apply()
    s3prl_compat.apply()
    import torch.nn.parallel

    assert torchaudio.load is load and torch.nn.parallel.DistributedDataParallel is ddp
    assert sum(getattr(cls, "__mrsuperb_compat__", False) for cls in ddp.__mro__) >= 1
    assert ddp.__mro__[1].__name__ == "DistributedDataParallel" and not getattr(
        ddp.__mro__[1], "__mrsuperb_compat__", False
    )
