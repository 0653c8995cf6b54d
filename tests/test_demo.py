"""recipes/demo/run.py: the demo's stage planning and resume logic (the demo itself runs with ``make demo``, not in
the test suite)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import load_recipe

from downstream_probes.pipelines.stages import StageError
from upstream_mrhubert.output_folder import LOCK_FILE, folder_lock

demo = load_recipe("demo/run.py")


def plan_for(tmp_path: Path, **changes) -> demo.DemoPlan:
    settings = demo.DemoSettings(
        out=tmp_path / "demo", **{"upstreams": ("mono_base",), "tasks": ("ic", "sd"), **changes}
    )
    return demo.DemoPlan(settings)


def names(plan: demo.DemoPlan, done: bool | None = None) -> list[str]:
    return [s.name for s in plan.stages if done is None or s.is_done() == done]


def write_results(expdir: Path, task: str, test_metrics: dict[str, float], weights: bool = True) -> None:
    expdir.mkdir(parents=True, exist_ok=True)
    (expdir / "results.json").write_text(
        json.dumps(
            {
                "schema": "mrsuperb.results/1",
                "task": task,
                "test_split": "test",
                "metrics": {"dev": {"acc": 0.5}, "test": test_metrics},
            }
        )
    )
    if weights:
        (expdir / "layer_weights.json").write_text("{}")


def test_plan_lists_every_stage_in_order(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    # asr's corpus is built whatever the tasks: the analysis reads its alignments (and sts its spoken pairs). SD
    # alone is evaluated separately (its DER comes from -m evaluate); the other tasks evaluate the test split while
    # training. Without the pre-trained pair, the pretrain phase is empty.
    assert names(plan) == [
        "corpus asr",
        "prepare asr",  # the user's path: the corpus is the real dataset's raw layout, `mrsuperb prepare` reads it
        "corpus ic",
        "prepare ic",
        "corpus sd",
        "prepare sd",
        "corpus sts",
        "checkpoint mono_base",
        "analyze mono_base",
        "train mono_base/ic",
        "train mono_base/sd",
        "evaluate mono_base/sd",
        "compare",
        "profile",
        "leaderboard",
    ]
    assert [p.name for p in plan.phases] == ["prepare", "pretrain", "runs", "compare", "profile", "leaderboard"]
    assert [p.workers for p in plan.phases] == [1, 1, 2, 1, 1, 1]
    assert names(plan, done=True) == []


def test_resume_skips_exactly_the_stages_whose_outputs_exist(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    s = plan.settings
    for task in ("asr", "ic"):
        s.corpus(task).mkdir(parents=True)
        (s.corpus(task) / "manifest.json").write_text("{}")
    s.corpus("sd").mkdir(parents=True)  # an interrupted build leaves no manifest: not done
    upstream = demo.DEMO_UPSTREAMS["mono_base"]
    s.checkpoint(upstream).parent.mkdir(parents=True)
    s.checkpoint(upstream).write_bytes(b"x")
    write_results(s.expdir(upstream, "ic"), "ic", {"acc": 0.25})
    write_results(s.expdir(upstream, "sd"), "sd", {"frame_acc": 0.5})  # trained, DER not evaluated yet
    s.prepared("ic").mkdir(parents=True)
    (s.prepared("ic") / "prepared.json").write_text("{}")
    assert names(plan, done=True) == [
        "corpus asr",
        "corpus ic",
        "prepare ic",
        "checkpoint mono_base",
        "train mono_base/ic",
        "train mono_base/sd",
    ]
    write_results(s.expdir(upstream, "sd"), "sd", {"frame_acc": 0.5, "der": 0.3})
    assert "evaluate mono_base/sd" in names(plan, done=True)
    # Without its test metrics (or without layer_weights.json) a training run is redone.
    write_results(s.expdir(upstream, "ic"), "ic", {})
    assert "train mono_base/ic" not in names(plan, done=True)
    write_results(s.expdir(upstream, "ic"), "ic", {"acc": 0.25}, weights=False)
    (s.expdir(upstream, "ic") / "layer_weights.json").unlink()
    assert "train mono_base/ic" not in names(plan, done=True)
    assert "leaderboard" not in names(plan, done=True)  # always rendered again


def test_the_pretrained_pair_is_pretrained_once_and_compared_on_its_tasks(tmp_path: Path) -> None:
    settings = demo.DemoSettings(out=tmp_path / "demo", upstreams=("toy", "toy_twin"), tasks=("asr", "ic", "ks"))
    plan = demo.DemoPlan(settings)
    assert [s.name for s in plan.phases[1].stages] == ["pretrain toy", "checkpoint toy", "checkpoint toy_twin"]
    trained = [s.name for s in plan.stages if s.name.startswith("train ")]
    assert trained == ["train toy/ic", "train toy/ks", "train toy_twin/ic", "train toy_twin/ks"]
    rows = [demo.DEMO_UPSTREAMS[k].row for k in ("toy", "toy_twin")]
    assert rows == ["mrhubert_local:toy_pretrained", "mrhubert_local:toy_random-init"]


def test_training_evaluates_the_test_split_unless_evaluated_separately() -> None:
    assert demo.eval_dataloaders_override("asr") == "config.runner.eval_dataloaders=['dev-clean', 'test-clean']"
    assert demo.eval_dataloaders_override("se") == "config.runner.eval_dataloaders=['dev', 'test']"
    assert demo.eval_dataloaders_override("sd") == "config.runner.eval_dataloaders=['dev']"
    assert demo.required_test_metrics("sd") == ("der", "frame_acc")
    assert demo.required_test_metrics("sf") == ("slot_type_f1", "slot_value_cer")


def test_chains_run_in_order_and_a_failure_stops_the_demo(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    log: list[str] = []

    def stage(name: str, done: bool = False, fail: bool = False) -> demo.Stage:
        def run() -> None:
            log.append(name)
            if fail:
                raise demo.DemoError(f"{name} failed")

        return demo.Stage(name, lambda: done, run)

    plan.phases = [
        demo.Phase("a", [[stage("a1"), stage("a2", done=True), stage("a3")]]),
        demo.Phase("b", [[stage("b1"), stage("b2")], [stage("c1")]], workers=2),
    ]
    plan.run(progress=False)
    assert log[:2] == ["a1", "a3"] and sorted(log[2:]) == ["b1", "b2", "c1"] and log.index("b1") < log.index("b2")
    log.clear()
    plan.phases = [
        demo.Phase("x", [[stage("x1", fail=True), stage("x2")]], workers=2),
        demo.Phase("y", [[stage("y1")]]),
    ]
    with pytest.raises(demo.DemoError, match="x1 failed"):
        plan.run(progress=False)
    assert log == ["x1"]


def test_a_failing_subprocess_names_its_stage_and_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "boom.log"
    command = [sys.executable, "-c", "import sys; print('something broke'); sys.exit(3)"]
    with pytest.raises(StageError, match=r"stage 'boom' failed \(exit status 3\)") as caught:
        demo.run_logged("boom", command, log, demo.subprocess_env(2))
    assert str(log) in str(caught.value) and "something broke" in str(caught.value)
    assert log.read_text().startswith("$ ")


def test_settings_are_checked_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--upstreams b9z"):
        demo.DemoSettings(out=tmp_path, upstreams=("b9z",))
    with pytest.raises(ValueError, match="--tasks asr,er"):
        demo.DemoSettings(out=tmp_path, tasks=("asr", "er"))
    settings = demo.DemoSettings(out=tmp_path / "demo", seed=0)
    demo.check_or_write_settings(settings)
    recorded = json.loads(settings.settings_file.read_text())
    assert recorded["seed"] == 0 and "random-init" in recorded["note"]
    with pytest.raises(ValueError, match="seed 0; use --fresh"):
        demo.check_or_write_settings(demo.DemoSettings(out=tmp_path / "demo", seed=1))
    other = tmp_path / "not_a_demo"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert demo.main(["--out", str(other), "--fresh"]) == 1
    assert "not a demo folder" in capsys.readouterr().err and (other / "precious.txt").is_file()
    assert demo.main(["--out", str(other), "--plan"]) == 0
    assert "[todo] train mono_base/asr" in capsys.readouterr().out


def test_a_demo_folder_in_use_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second demo (or a --fresh one) into the folder a running demo holds used to run alongside it."""
    settings = demo.DemoSettings(out=tmp_path / "demo", upstreams=("b5a",), tasks=("ic",))
    demo.check_or_write_settings(settings)
    with folder_lock(settings.root, "--out"):
        for extra in ([], ["--fresh"]):
            assert demo.main(["--out", str(settings.root), "--upstreams", "b5a", "--tasks", "ic", *extra]) == 1
            assert f"{settings.root} is in use by another run (pid {os.getpid()})" in capsys.readouterr().err
    assert sorted(p.name for p in settings.root.iterdir()) == sorted([LOCK_FILE, settings.settings_file.name])
    # --fresh on an idle demo folder keeps only what it needs to hold it
    (settings.root / "runs").mkdir()
    demo.remove_demo_folder(settings)
    assert [p.name for p in settings.root.iterdir()] == [LOCK_FILE]
    # a new folder holding only the lock file of this run is still the demo's to write
    new = demo.DemoSettings(out=tmp_path / "new")
    with folder_lock(new.root, "--out"):
        demo.check_or_write_settings(new)
    assert new.settings_file.is_file()
