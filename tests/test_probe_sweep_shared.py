"""``probe-sweep --shared``: every probe of a frozen upstream from one upstream forward per batch.

The shared heads are checked against separate ``run_downstream.py`` runs (same dev metrics at every evaluation,
same weights), a killed sweep is resumed with ``-a``, every SUPERB task runs in shared mode on its quick config,
the feature cache is built and read, and ``mrsuperb compare`` reads the sweep. The fast tests cover the random
streams and shared loaders on their own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from downstream_probes import cli
from downstream_probes.paths import recipes_dir
from downstream_probes.s3prl import run_downstream
from downstream_probes.s3prl.loaders import SharedIteration, StreamsDivergedError, group_by_state
from downstream_probes.s3prl.rng import RngState, RngStream, seed_everything
from downstream_probes.s3prl.shared_plan import WEIGHTED_SUM, HeadSpec, SharedSweepOptions, plan_passes, resolve_heads
from downstream_probes.s3prl.shared_sweep import run_shared_sweep
from downstream_probes.tasks import TASKS
from upstream_mrhubert.atomic_io import loads_strict_json
from upstream_mrhubert.output_folder import FolderLocked, OutputLinkError, SettingsMismatch
from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

# SpecAugment draws from torch's generator in every head, so a head that drew from another head's stream would not
# match its separate run: the equivalence test fails without per-head generators.
SPECAUG = "config.specaug={'apply_time_warp':False,'freq_mask_width_range':[0,4],'time_mask_width_range':[0,3]}"


# ------------------------------------------------------------------------------------------------------------
# random streams and shared loaders


def test_rng_stream_keeps_its_own_draws() -> None:
    seed_everything(1)
    start = RngState.capture()
    first, second = RngStream(start), RngStream(start)
    with first.active():
        a = (torch.rand(3), np.random.rand(), random.random())
    torch.rand(100)  # the process's own draws touch neither stream
    with second.active():
        b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert not first.state.differing(second.state)
    with first.active():
        torch.rand(1)
    assert first.state.differing(second.state) == {"torch"}


def _loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(list(range(12)), batch_size=4, shuffle=True)


def test_shared_loader_yields_what_each_run_would_draw() -> None:
    seed_everything(3)
    start = RngState.capture()
    start.restore()
    separate = [batch.tolist() for batch in _loader()]
    streams = [RngStream(start), RngStream(start)]
    shared = [batch.tolist() for batch in SharedIteration(_loader, streams)]
    assert shared == separate
    start.restore()
    list(_loader())
    after_separate = RngState.capture()
    assert all(not stream.state.differing(after_separate) for stream in streams)


def test_shared_fetch_refuses_streams_that_drew_differently() -> None:
    class Cropping(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> int:
            return random.randint(0, 100)  # a dataset drawing in the main process (num_workers=0)

    seed_everything(0)
    streams = [RngStream(RngState.capture()), RngStream(RngState.capture())]
    iteration = SharedIteration(lambda: torch.utils.data.DataLoader(Cropping(), batch_size=1), streams)
    next(iteration)
    with streams[1].active():
        random.random()  # the second run drew from the same generator between two fetches
    with pytest.raises(StreamsDivergedError, match="python"):
        next(iteration)


def test_group_by_state_splits_unequal_streams() -> None:
    seed_everything(0)
    a = RngStream(RngState.capture())
    b = RngStream(RngState.capture())
    torch.rand(1)
    c = RngStream(RngState.capture())
    assert [[id(s) for s in group] for group in group_by_state([a, c, b])] == [[id(a), id(b)], [id(c)]]


def test_plan_and_head_selection() -> None:
    specs = resolve_heads(["T0", "T1", "D0"], ["all"], with_weighted_sum=True)
    assert specs[-1] == HeadSpec(WEIGHTED_SUM, None) and [s.name for s in specs[:3]] == ["T0", "T1", "D0"]
    assert [[s.name for s in group] for group in plan_passes(specs, 3)] == [["T0", "T1", "D0"], [WEIGHTED_SUM]]
    with pytest.raises(ValueError, match="X9"):
        resolve_heads(["T0"], ["X9"], with_weighted_sum=False)
    with pytest.raises(ValueError, match="at least 1"):
        plan_passes(specs, 0)


# ------------------------------------------------------------------------------------------------------------
# end to end, on the tiny model


def quick_config(task: str) -> str:
    return str(recipes_dir() / "quick" / task / "config.yaml")


def shared_options(task: str, ckpt: Path, sweep_dir: Path, override: str, **kwargs) -> SharedSweepOptions:
    return SharedSweepOptions(
        upstream="mrhubert_local",
        task=task,
        sweep_dir=sweep_dir,
        upstream_ckpt=str(ckpt),
        config=quick_config(task),
        override=override,
        device="cpu",
        **kwargs,
    )


def evaluations(expdir: Path) -> list[dict]:
    return [json.loads(line) for line in (expdir / "evaluations.jsonl").read_text().splitlines()]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def ic_sweep(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> tuple[Path, str]:
    """A shared IC sweep of three layers and the weighted sum, with SpecAugment, 4 steps (the quick config's)."""
    override = f"{corpus_overrides('ic')},,{SPECAUG}"
    sweep_dir = workspace / "ic_shared"
    run_shared_sweep(
        shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["T1", "D0", "U0"], with_weighted_sum=True)
    )
    return sweep_dir, override


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["D0"])
def test_shared_head_matches_its_separate_run(layer, workspace: Path, tiny_ckpt: Path, ic_sweep) -> None:
    sweep_dir, override = ic_sweep
    expdir = workspace / f"ic_separate_{layer or 'ws'}"
    argv = ["-m", "train", "-u", "mrhubert_local", "-k", str(tiny_ckpt), "-d", "ic", "-c", quick_config("ic"),
            "-p", str(expdir), "-o", override, "--device", "cpu", *(["-l", layer] if layer else [])]  # fmt: skip
    assert run_downstream.main(argv) == 0
    shared_dir = sweep_dir / (layer or WEIGHTED_SUM)
    separate = evaluations(expdir)
    shared = [r for r in evaluations(shared_dir) if r["phase"] == "train"]
    assert [(r["split"], r["step"]) for r in shared] == [(r["split"], r["step"]) for r in separate]
    assert len(separate) == 4  # dev and test at steps 2 and 4
    for a, b in zip(separate, shared, strict=True):
        assert a["metrics"].keys() == b["metrics"].keys()
        for key in a["metrics"]:
            assert abs(a["metrics"][key] - b["metrics"][key]) <= 1e-6
        assert a["scalars"].keys() == b["scalars"].keys()
        for key in a["scalars"]:
            assert abs(a["scalars"][key] - b["scalars"][key]) <= 1e-6
    mine = torch.load(shared_dir / "states-4.ckpt", map_location="cpu", weights_only=False)
    theirs = torch.load(expdir / "states-4.ckpt", map_location="cpu", weights_only=False)
    for part in ("Downstream", "Featurizer"):
        assert mine[part].keys() == theirs[part].keys()
        for key, value in theirs[part].items():
            assert torch.allclose(mine[part][key].float(), value.float(), rtol=0, atol=1e-6), (part, key)
    results = read_json(shared_dir / "results.json")
    assert results["sweep"]["shared"] is True and results["sweep"]["status"] == "finished"
    expected = {"mode": "weighted_sum"} if layer is None else {"mode": "single", "layer": "D0", "index": 5}
    assert results["layer_selection"] == read_json(expdir / "results.json")["layer_selection"] == expected


@pytest.mark.slow
def test_shared_sweep_json_and_files(ic_sweep) -> None:
    sweep_dir, _ = ic_sweep
    sweep = read_json(sweep_dir / "sweep.json")
    assert sweep["schema"] == "mrsuperb.probe_sweep/1" and sweep["upstream_identity"] == "mrhubert_local:tiny"
    assert [(entry["name"], entry["index"]) for entry in sweep["layers"]] == [("T1", 1), ("D0", 5), ("U0", 10)]
    assert sweep["weighted_sum"]["name"] == WEIGHTED_SUM
    for entry in [*sweep["layers"], sweep["weighted_sum"]]:
        assert entry["status"] == "finished" and 0.0 <= entry["metrics"]["test"]["acc"] <= 1.0
        expdir = Path(entry["expdir"])
        assert (expdir / "states-4.ckpt").is_file() and list(expdir.glob("events.out.tfevents.*"))
        results = read_json(expdir / "results.json")
        assert results["evaluated_checkpoints"]["test"]["step"] == results["best_step"]
    weights = read_json(sweep_dir / WEIGHTED_SUM / "layer_weights.json")
    assert abs(sum(layer["weight"] for layer in weights["layers"]) - 1.0) < 1e-5


@pytest.mark.slow
def test_compare_reads_the_shared_sweep(ic_sweep, tmp_path: Path, capsys) -> None:
    sweep_dir, _ = ic_sweep
    output = tmp_path / "compare.json"
    # the sweep holds three of the 15 layers; the weighted sum weighs all of them
    assert cli.main(["compare", str(sweep_dir), "--common-layers", "--out", str(output)]) == 0
    found = [c for c in read_json(output)["comparisons"] if {c["a"], c["b"]} == {"probe:ic", "weights:ic"}]
    assert len(found) == 1 and found[0]["model"] == "mrhubert_local:tiny" and found[0]["layers"] == 3, found


def _sweep_argv(ckpt: Path, sweep_dir: Path, override: str) -> list[str]:
    return ["probe-sweep", "--shared", "-u", "mrhubert_local", "-k", str(ckpt), "-d", "ic", "-c", quick_config("ic"),
            "-o", override, "-p", str(sweep_dir), "--layers", "D0", "--with-weighted-sum", "--device", "cpu"]  # fmt: skip


def _stable(sweep: dict) -> dict:
    """sweep.json without what differs between two folders (paths, time)."""
    entries = [*sweep["layers"], sweep["weighted_sum"]]
    return {
        "entries": [{k: v for k, v in entry.items() if k not in ("expdir", "layer_weights")} for entry in entries],
        "rest": {k: v for k, v in sweep.items() if k not in ("layers", "weighted_sum", "created")},
    }


@pytest.mark.slow
def test_killed_shared_sweep_resumes_to_the_same_result(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    override = (
        f"{corpus_overrides('ic')},,config.runner.total_steps=12,,config.runner.save_step=2"
        f",,config.runner.eval_step=4,,config.runner.log_step=2,,config.runner.eval_dataloaders=['dev'],,{SPECAUG}"
    )
    whole, killed = workspace / "resume_whole", workspace / "resume_killed"
    assert cli.main(_sweep_argv(tiny_ckpt, whole, override)) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    entry = "import sys; from downstream_probes.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", entry, *_sweep_argv(tiny_ckpt, killed, override)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list((killed / "shared_state").glob("pass-0.rank-0.step-[46].pt")):
            assert process.poll() is None and time.monotonic() < deadline, "the sweep did not reach step 4"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (killed / "sweep.json").exists()
    with pytest.raises(FileExistsError, match="-a"):
        run_shared_sweep(shared_options("ic", tiny_ckpt, killed, override, layers=["D0"], with_weighted_sum=True))
    assert cli.main([*_sweep_argv(tiny_ckpt, killed, override), "-a"]) == 0

    assert _stable(read_json(killed / "sweep.json")) == _stable(read_json(whole / "sweep.json"))
    for name in ("D0", WEIGHTED_SUM):
        assert [(r["split"], r["step"], r["scalars"]) for r in evaluations(killed / name)] == [
            (r["split"], r["step"], r["scalars"]) for r in evaluations(whole / name)
        ]
        a = torch.load(killed / name / "states-12.ckpt", map_location="cpu", weights_only=False)
        b = torch.load(whole / name / "states-12.ckpt", map_location="cpu", weights_only=False)
        for key, value in b["Downstream"].items():
            assert torch.equal(a["Downstream"][key], value), (name, key)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["asr", "sf", "ic", "ks", "se", "sd"])
def test_every_task_runs_shared(task: str, workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    sweep_dir = workspace / f"every_{task}"
    passes = 2 if task == "ic" else None  # one task shows the plan in two passes; the others save the time
    override = f"{corpus_overrides(task)},,config.runner.total_steps=2"
    options = shared_options(
        task, tiny_ckpt, sweep_dir, override, layers=["D0"], with_weighted_sum=True, max_heads_per_pass=passes and 1
    )
    document, shared = run_shared_sweep(options)
    expected = [["D0"], [WEIGHTED_SUM]] if passes else [["D0", WEIGHTED_SUM]]
    assert document["shared"]["passes"] == expected
    test_split, primary = TASKS[task].test_split, TASKS[task].primary
    for entry in [*document["layers"], document["weighted_sum"]]:
        assert entry["status"] == "finished", entry
        assert test_split in entry["metrics"] and TASKS[task].dev_split in entry["metrics"], entry
        results = read_json(Path(entry["expdir"]) / "results.json")
        assert results["sweep"]["shared"] and results["task"] == task
    assert primary in document["weighted_sum"]["metrics"][TASKS[task].dev_split]
    assert (sweep_dir / WEIGHTED_SUM / "layer_weights.json").is_file()
    assert shared.upstream_forwards > 0
    if task == "sd":
        assert "der" in document["layers"][0]["metrics"]["test"]


@pytest.mark.slow
def test_feature_cache_is_built_once_and_read(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    cache = workspace / "feature_cache"
    override = f"{corpus_overrides('ic')},,config.runner.total_steps=2"
    first, shared = run_shared_sweep(
        shared_options("ic", tiny_ckpt, workspace / "cached_1", override, layers=["D0"], cache_features=cache)
    )
    folders = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1 and (folders[0] / "features.f16").stat().st_size > 0
    index = read_json(folders[0] / "index.json")
    assert index["layers"] == 15 and index["key"]["upstream"] == "mrhubert_local:tiny"
    assert shared.feature_source.hits > 0 and shared.feature_source.misses == 0
    built = (folders[0] / "features.f16").stat().st_mtime_ns
    second, _ = run_shared_sweep(
        shared_options("ic", tiny_ckpt, workspace / "cached_2", override, layers=["D0"], cache_features=cache)
    )
    assert (folders[0] / "features.f16").stat().st_mtime_ns == built  # read, not rebuilt
    assert first["layers"][0]["metrics"] == second["layers"][0]["metrics"]
    live, _ = run_shared_sweep(shared_options("ic", tiny_ckpt, workspace / "live", override, layers=["D0"]))
    for split, metrics in live["layers"][0]["metrics"].items():  # float16 features: the same probe, rounded
        for key, value in metrics.items():
            assert abs(first["layers"][0]["metrics"][split][key] - value) <= 0.26


def write_overflowing_checkpoint(path: Path) -> Path:
    """The tiny model with the last decoder layer's FFN scaled past float32: T12 (and the weighted sum of all
    layers) is not finite, every earlier layer is."""
    from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
    from upstream_mrhubert.testing.tiny import tiny_config, tiny_dictionaries, tiny_state_dict

    model_cfg, task_cfg = tiny_config("base_2res")
    dictionaries = tiny_dictionaries(model_cfg)
    state = tiny_state_dict(model_cfg, task_cfg, dictionaries, seed=0)
    state["decoders.0.layers.3.fc2.weight"] = state["decoders.0.layers.3.fc2.weight"] * 1e38
    return write_fairseq_checkpoint(
        path, model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state, dictionaries_symbols=dictionaries
    )


@pytest.mark.slow
def test_diverging_heads_stop_and_the_others_go_on(workspace: Path, corpus_overrides) -> None:
    ckpt = write_overflowing_checkpoint(workspace / "overflowing.pt")
    override = f"{corpus_overrides('ic')},,config.runner.total_steps=2"
    options = shared_options(
        "ic", ckpt, workspace / "diverging", override, layers=["T1", "T12"], with_weighted_sum=True
    )
    document, _ = run_shared_sweep(options)
    t1, t12 = document["layers"]
    assert t1["status"] == "finished" and "acc" in t1["metrics"]["test"]
    for entry in (t12, document["weighted_sum"]):
        assert entry["status"] == "diverged" and entry["diverged_step"] == 1 and "test" not in entry["metrics"]
        assert read_json(Path(entry["expdir"]) / "results.json")["sweep"]["status"] == "diverged"
        # strict JSON (issue 24 item 9): a non-finite metric is null beside the status, never a bare Infinity
        loads_strict_json((Path(entry["expdir"]) / "results.json").read_text())


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    sweep_dir = workspace / "torchrun"
    argv = _sweep_argv(tiny_ckpt, sweep_dir, corpus_overrides("ic"))
    entry = "import sys; from downstream_probes.cli import main; sys.exit(main(sys.argv[1:]))"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    script = workspace / "probe_sweep_entry.py"
    script.write_text(entry + "\n")
    done = subprocess.run([*launcher, str(script), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = read_json(sweep_dir / "sweep.json")
    assert [entry["status"] for entry in [*sweep["layers"], sweep["weighted_sum"]]] == ["finished", "finished"]
    for name in ("D0", WEIGHTED_SUM):
        saved = torch.load(sweep_dir / name / "states-4.ckpt", map_location="cpu", weights_only=False)
        assert saved["WorldSize"] == 2 and saved["Args"].backend == "gloo"
        assert "test" in read_json(sweep_dir / name / "results.json")["evaluated_checkpoints"]
    assert sorted(p.name for p in (sweep_dir / "shared_state").glob("*.step-4.pt")) == [
        "pass-0.rank-0.step-4.pt",
        "pass-0.rank-1.step-4.pt",
    ]


def test_cache_key_follows_file_content(tmp_path: Path) -> None:
    from downstream_probes.s3prl.feature_cache import cache_key, corpus_fingerprint

    corpus = tmp_path / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    audio = corpus / "wavs" / "a.wav"
    audio.write_bytes(b"\x00\x01" * 100)
    expert = {"datarc": {"file_path": str(corpus), "batch_size": 4}}
    before = corpus_fingerprint(expert)
    stat = audio.stat()
    audio.write_bytes(b"\x00\x02" * 100)  # same size, modification time put back
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus_fingerprint(expert) != before
    assert corpus_fingerprint({"datarc": {**expert["datarc"], "batch_size": 8}}) != corpus_fingerprint(expert)
    key = {"upstream": "mrhubert_local:tiny", "checkpoint_sha256": "0" * 64, "corpus": before, "rate": 320}
    assert cache_key(key) != cache_key({**key, "rate": 640}) and cache_key(key) == cache_key(dict(key))


# ------------------------------------------------------------------------------------------------------------
# hostile reruns (issue 24 items 3-5): one sweep at a time per folder, the recorded settings, no writes through links

_HOLD_LOCK = """
import sys, time
from downstream_probes.s3prl.experiment import experiment_lock
with experiment_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_layer_folder_held_by_run_downstream_is_refused(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    """A shared sweep into a -p whose layer folder a run_downstream.py holds used to write into it."""
    sweep_dir = workspace / "locked_layer"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(sweep_dir / "D0")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        override = f"{corpus_overrides('ic')},,config.runner.total_steps=1"
        with pytest.raises(FolderLocked, match=rf"{sweep_dir / 'D0'} is in use by another run \(pid {holder.pid}\)"):
            run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["T1", "D0"]))
    finally:
        holder.kill()
        holder.wait()
    assert not (sweep_dir / "T1" / "results.json").exists()


@pytest.mark.slow
def test_reruns_with_other_settings_are_refused_naming_the_fields(
    workspace: Path, tiny_ckpt: Path, corpus_overrides, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished sweep rerun with another lr trained nothing and rewrote sweep.json as new; -a -k OTHER.pt went on
    with another model's features; a planted link made the expert write its predictions elsewhere."""
    sweep_dir = workspace / "settings"
    override = f"{corpus_overrides('ic')},,config.runner.total_steps=1,,config.runner.save_step=1"
    run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["D0"]))
    recorded = read_json(sweep_dir / "sweep.json")

    other_lr = f"{override},,config.optimizer.lr=0.5"
    with pytest.raises(SettingsMismatch, match=r"config\.optimizer\.lr \(0\.001 -> 0\.5\)"):
        run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, other_lr, layers=["D0"]))
    with pytest.raises(SettingsMismatch, match=r"heads \(\['D0'\] -> \['D0', 'T1'\]\)"):  # -a with more --layers
        run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["D0", "T1"], resume=True))
    other = write_tiny_checkpoint(workspace / "other.pt", "base_2res", seed=1)
    argv = _sweep_argv(other, sweep_dir, override)
    argv[argv.index("--layers") + 1] = "D0"
    argv.remove("--with-weighted-sum")
    assert cli.main([*argv, "-a"]) == 2
    err = capsys.readouterr().err
    assert "upstream_ckpt ('sha256:" in err and "settings" in err and "Traceback" not in err
    assert read_json(sweep_dir / "sweep.json") == recorded

    elsewhere = workspace / "elsewhere.csv"
    elsewhere.write_text("keep me\n")
    (sweep_dir / "D0" / "test_predict.csv").unlink(missing_ok=True)
    (sweep_dir / "D0" / "test_predict.csv").symlink_to(elsewhere)
    with pytest.raises(OutputLinkError, match=r"D0/test_predict.csv is a symbolic link"):
        run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["D0"]))
    assert elsewhere.read_text() == "keep me\n"


@pytest.mark.slow
def test_resume_with_other_passes_is_refused_naming_the_field(
    workspace: Path, tiny_ckpt: Path, corpus_overrides
) -> None:
    """-a with another --max-heads-per-pass was a raw SharedSweepError traceback (issue 24): the heads would be
    regrouped into passes whose saved states do not exist; now the recorded settings refuse it, naming passes."""
    sweep_dir = workspace / "passes"
    override = f"{corpus_overrides('ic')},,config.runner.total_steps=1,,config.runner.save_step=1"
    run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["D0", "T1"]))
    with pytest.raises(SettingsMismatch, match=r"passes"):
        run_shared_sweep(
            shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["D0", "T1"], max_heads_per_pass=1, resume=True)
        )


@pytest.mark.slow
def test_feature_cache_bytes_are_verified(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    """A cache file overwritten with other values of the same size was read (dev loss 900 instead of 6); a killed
    build's .KEY.partial-PID stayed forever; --cache-features naming a file was a traceback (issue 24 item 7)."""
    from downstream_probes.s3prl.feature_cache import FeatureCacheError

    cache = workspace / "verified_cache"
    override = f"{corpus_overrides('ic')},,config.runner.total_steps=2"
    first, _ = run_shared_sweep(
        shared_options("ic", tiny_ckpt, workspace / "verified_1", override, layers=["D0"], cache_features=cache)
    )
    (folder,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    data = folder / "features.f16"
    values = np.fromfile(data, dtype=np.float16)
    (values * np.float16(100)).tofile(data)  # same size, other values
    dead = cache / f".{folder.name}.partial-{2**22 + 12345}"  # beyond pid_max: no process has it
    dead.mkdir()
    second, shared = run_shared_sweep(
        shared_options("ic", tiny_ckpt, workspace / "verified_2", override, layers=["D0"], cache_features=cache)
    )
    assert shared.feature_source.hits > 0 and not dead.exists()
    assert np.array_equal(np.fromfile(data, dtype=np.float16), values)  # rebuilt: the extracted values again
    assert first["layers"][0]["metrics"] == second["layers"][0]["metrics"]
    not_a_folder = workspace / "cache_file"
    not_a_folder.write_text("x")
    with pytest.raises(FeatureCacheError, match=r"--cache-features .*cache_file is a file"):
        run_shared_sweep(
            shared_options(
                "ic", tiny_ckpt, workspace / "verified_3", override, layers=["D0"], cache_features=not_a_folder
            )
        )


def test_resume_without_the_saved_pass_state_says_so(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    """-a after shared_state/ was deleted answered "resume with -a" although -a was given (issue 24)."""
    from downstream_probes.s3prl.shared_sweep import SharedSweepError

    sweep_dir = workspace / "state_deleted"
    (sweep_dir / "D0").mkdir(parents=True)
    (sweep_dir / "D0" / "states-2.ckpt").write_bytes(b"")  # the heads' checkpoints stayed, the pass state went
    override = f"{corpus_overrides('ic')},,config.runner.total_steps=2"
    with pytest.raises(SharedSweepError, match=r"shared_state has no saved state of its pass \(deleted\?\)"):
        run_shared_sweep(shared_options("ic", tiny_ckpt, sweep_dir, override, layers=["D0"], resume=True))
