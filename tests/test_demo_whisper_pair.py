"""The demo's trained model: Whisper tiny.en beside its random-init twin (recipes/demo/whisper_pair.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import load_recipe

demo = load_recipe("demo/run.py")  # imports whisper_pair.py beside it: the pair's functions are the demo's


def test_the_pair_is_analysed_on_real_speech_and_trained_on_ic_and_ks(tmp_path: Path) -> None:
    settings = demo.DemoSettings(out=tmp_path / "demo", upstreams=("mono_base", "whisper"), tasks=("ic", "ks", "sd"))
    plan = demo.DemoPlan(settings)
    runs = [stage.name for stage in plan.phases[2].stages]
    assert runs[:3] == ["corpus real", "analyze whisper_tiny_en", "analyze whisper_tiny_en_random"]
    assert [name for name in runs if "whisper" in name and not name.startswith("analyze")] == [
        "train whisper_tiny_en/ic",
        "train whisper_tiny_en_random/ic",
        "corpus whisper_ks",  # KS on a corpus of its own, large enough to tell the two apart
        "train whisper_tiny_en/ks",
        "train whisper_tiny_en_random/ks",
    ]  # not SD: the pair is compared where the demo compares its pre-trained pair
    assert [u.key for u in plan.upstreams] == ["mono_base"]  # no checkpoint, no profile row for the plugin
    assert "whisper" in demo.DEFAULT_UPSTREAMS


def test_without_whisper_the_demo_is_unchanged(tmp_path: Path) -> None:
    plan = demo.DemoPlan(demo.DemoSettings(out=tmp_path / "demo", upstreams=("mono_base",), tasks=("ic",)))
    rules = demo.PairRules(demo.PAIR_TASKS, demo.PAIR_TRAINING_STEPS, demo.is_trained, demo.eval_dataloaders_override)
    assert demo.whisper_pair_chains(plan, rules) == []
    assert not any("whisper" in stage.name or stage.name == "corpus real" for stage in plan.stages)
