#!/usr/bin/env python
"""``make demo`` (``python recipes/demo/run.py``): the whole pipeline on a fresh machine, with tiny MR-HuBERTs, in
at most 15 minutes on 2 cores.

Stages (each skipped when its output already exists, so an interrupted demo resumes where it stopped):

1. corpora: a small synthetic corpus per SUPERB task and a spoken STS corpus (espeak-ng speech, the real
   datasets' on-disk layouts); checkpoints: tiny random-init look-alikes of three paper configurations, as real
   fairseq files;
2. pretrain: a tiny MR-HuBERT (mono-base layout, ``recipes/pretrain/demo_tiny.yaml``) pre-trained briefly on the
   ASR corpus with ``mrsuperb pretrain``; its best checkpoint and the checkpoint written before its first step
   (the random-init twin) become two more models; a finished pre-training is reused;
3. runs: every task trained briefly (``recipes/quick``, 4 steps) for the random-init look-alikes, IC and KS for the
   pre-trained model and its twin with more steps, all through the ``run_downstream.py`` console script; each run
   writes ``results.json`` and ``layer_weights.json``. ``mrsuperb analyze`` (CCA phone and word, MI phone and word,
   spoken STS) per model runs alongside. The test split is evaluated during training, next to dev, at every
   evaluation step (as SUPERB's IC and KS configs do), and results.json reports it at the step that is best on dev:
   the same numbers ``-m evaluate`` gives for the best checkpoint, one subprocess less per run. SD's DER comes only
   from ``-m evaluate -t test`` (the predicted RTTM is scored there), so SD runs are evaluated separately;
4. compare: ``mrsuperb compare`` of each model's learnt weights and analysis (``compare.json``, ``figures/``);
5. profile: ``mrsuperb profile`` of the demo upstreams (parameters, FLOPs, CPU latency, memory per block);
6. leaderboard: ``leaderboard.md`` and the self-contained ``leaderboard.html`` (with the Fig. 3-style analysis
   figure and the comparison table); the Markdown is printed.

Everything lives under ``--out`` (default ``runs/demo``); each subprocess's output is kept in ``logs/``.
Seeded throughout (``--seed``; the pre-training recipe holds its own). The random-init numbers prove that the
pipeline runs end to end and say nothing about the models, which every table and page states; the pre-trained
model beside its twin shows what a few minutes of pre-training change.

The Whisper pair (a trained model beside its random-init twin) adds its stages to the runs phase from
``whisper_pair.py`` beside this script; the stage runner is ``downstream_probes.pipelines.stages``, shared with the
paper recipe (``recipes/paper_2410.23955/reproduce.py``).

Why mono-base, B2-a and B5-a: they are the efficiency comparison of arXiv 2410.23955 (two and three resolutions
against the same 12 layers at 20 ms). B4-a's inference network is mono-base's (only its pre-training heads
differ), so with random weights it would repeat the mono-base row; ``--upstreams b4a`` adds it anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from downstream_probes.analysis.analyze import output_name
from downstream_probes.corpora import api as corpora
from downstream_probes.corpora.prepare import prepare
from downstream_probes.paths import recipes_dir
from downstream_probes.pipelines.stages import (
    Phase,
    Stage,
    StageError,
    console_script,
    has_test_metrics,
    run_logged,
    run_phases,
    stage_log,
    subprocess_env,
)
from downstream_probes.reports.leaderboard import write_leaderboard
from downstream_probes.s3prl.run_downstream import override_option
from downstream_probes.s3prl.sweep import best_checkpoint
from downstream_probes.tasks import TASK_NAMES, TASKS, upstream_identity
from upstream_mrhubert.atomic_io import write_bytes_atomic, write_json_atomic
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.output_folder import LOCK_FILE, folder_lock
from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

from whisper_pair import PairRules, whisper_pair_chains  # beside this script (its folder is first on sys.path)

DEMO_SCHEMA = "mrsuperb.demo/1"
DEFAULT_OUT = Path("runs") / "demo"
EVALUATED_SEPARATELY = frozenset({"sd"})  # Table-2 metric only from ``-m evaluate`` (RTTM scoring)
# The demo's ASR corpus is small: its dev-clean split holds too few phone segments for the held-out PWCCA
# protocol at the tiny models' width, so CCA reads the training split (the one the cca tests use too).
CCA_SPLIT = "train-clean-100"
PRETRAIN_RECIPE = "demo_tiny"  # recipes/pretrain/<name>.yaml
# The pre-trained model and its twin are compared where a few hundred steps can show a difference.
PAIR_TASKS: tuple[str, ...] = ("ic", "ks")
PAIR_TRAINING_STEPS = 60
# The analysis of every model (arXiv 2410.23955 Fig. 3 at demo size): k-means with fewer clusters than the
# reference's 500/5000, which the demo's few hundred segments could not fill.
ANALYZE_PROPERTIES = ("phone", "word", "mi_phone", "mi_word", "sts")
ANALYZE_MI_CLUSTERS = "phone=20,word=40"
# Corpus sizes other than the builders' defaults: the ASR corpus feeds the pre-training and the analysis, whose
# held-out word CCA needs more word segments than the default 40 utterances give.
CORPUS_UTTERANCES: dict[str, int] = {"asr": 320}
RANDOM_INIT_NOTE = (
    "Demo with tiny MR-HuBERT look-alikes on synthetic speech: random-init ones (4 training steps per task), and "
    f"one pre-trained briefly beside its random-init twin ({PAIR_TRAINING_STEPS} steps on IC and KS). The random-init "
    "rows show that the pipeline works end to end, not the quality of any model; the pair shows what a few minutes "
    "of pre-training change. Whisper tiny.en (trained by OpenAI on real speech) beside its random-init twin shows a "
    "trained model: phone CCA and MI on real speech, IC and KS."
)


class DemoError(StageError):
    """A demo stage failed; the message names the stage, its exit status and its log file."""


@dataclass(frozen=True)
class DemoUpstream:
    """One model of the demo, run as ``mrhubert_local -k <checkpoint>``.

    ``kind``: ``random`` (a tiny random-init look-alike of a paper configuration, ``preset`` of
    ``upstream_mrhubert.testing.tiny``), ``pretrained`` (the tiny MR-HuBERT the demo pre-trains briefly,
    ``recipes/pretrain/demo_tiny.yaml``) or ``twin`` (that same network before its first step).
    """

    key: str
    preset: str | None
    looks_like: str
    kind: str = "random"

    @property
    def stem(self) -> str:
        """The checkpoint's file stem; the leaderboard names local-checkpoint rows after it."""
        if self.kind == "pretrained":
            return f"{self.key}_pretrained"
        if self.kind == "twin":
            return f"{self.key.removesuffix('_twin')}_random-init"
        return f"{self.key}_tiny_random-init"

    @property
    def row(self) -> str:
        """The leaderboard row of its runs (:func:`downstream_probes.tasks.upstream_identity`)."""
        return upstream_identity("mrhubert_local", f"{self.stem}.pt")


DEMO_UPSTREAMS: dict[str, DemoUpstream] = {
    u.key: u
    for u in (
        DemoUpstream("mono_base", "base_2res", "MR-HuBERT base (mono-base): 20/40 ms, 4-4-4"),
        DemoUpstream("b2a", "3res_32223", "B2-a: 20/40/80 ms, 3-2-2-2-3"),
        DemoUpstream("b5a", "mono_resolution", "B5-a: mono-resolution 20 ms, 4-4-4"),
        DemoUpstream("b4a", "single_prediction", "B4-a: mono-base without the low-resolution loss"),
        DemoUpstream(
            "toy", None, "tiny MR-HuBERT (mono-base layout, 64-dim, 1-1-1), pre-trained briefly", "pretrained"
        ),
        DemoUpstream("toy_twin", None, "the same tiny MR-HuBERT before pre-training (random init)", "twin"),
        # A trained model beside its random-init twin (the Whisper plugin; stages in whisper_pair.py)
        DemoUpstream("whisper", None, "Whisper tiny.en and its random-init twin (plugin)", "plugin"),
    )
}
DEFAULT_UPSTREAMS: tuple[str, ...] = ("mono_base", "b2a", "b5a", "toy", "toy_twin", "whisper")
PROFILE_REFERENCE = "b5a"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds and where; ``folder`` layout below."""

    out: Path = DEFAULT_OUT
    seed: int = 0
    upstreams: tuple[str, ...] = DEFAULT_UPSTREAMS
    tasks: tuple[str, ...] = TASK_NAMES
    jobs: int = 2
    profile_seconds: float = 10.0

    def __post_init__(self) -> None:
        unknown = [u for u in self.upstreams if u not in DEMO_UPSTREAMS]
        if unknown or not self.upstreams:
            raise UsageError(f"--upstreams {','.join(self.upstreams)}: choose among {', '.join(DEMO_UPSTREAMS)}")
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown or not self.tasks:
            raise UsageError(f"--tasks {','.join(self.tasks)}: choose among {', '.join(TASK_NAMES)}")
        if self.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {self.jobs}")
        if self.seed < 0:
            raise UsageError(f"--seed must be a non-negative whole number, got {self.seed}")

    @property
    def root(self) -> Path:
        return Path(self.out).resolve()

    def corpus(self, task: str) -> Path:
        return self.root / "corpora" / task

    def prepared(self, task: str) -> Path:
        """What ``mrsuperb prepare`` wrote for the corpus of ``task`` (the real datasets' path)."""
        return self.root / "prepared" / task

    def checkpoint(self, upstream: DemoUpstream) -> Path:
        return self.root / "checkpoints" / f"{upstream.stem}.pt"

    def expdir(self, upstream: DemoUpstream, task: str) -> Path:
        return self.root / "runs" / upstream.key / task

    def analysis(self, upstream: DemoUpstream) -> Path:
        # The folder name labels the curve in the leaderboard's CCA figure.
        return self.root / "analysis" / upstream.stem

    def log(self, stage: str) -> Path:
        return stage_log(self.root / "logs", stage)

    @property
    def settings_file(self) -> Path:
        return self.root / "demo.json"

    @property
    def profile_json(self) -> Path:
        return self.root / "profile.json"

    @property
    def leaderboard_md(self) -> Path:
        return self.root / "leaderboard.md"

    @property
    def leaderboard_html(self) -> Path:
        return self.root / "leaderboard.html"

    def record(self) -> dict:
        return {
            "schema": DEMO_SCHEMA,
            "seed": self.seed,
            "upstreams": list(self.upstreams),
            "tasks": list(self.tasks),
            "profile_seconds": self.profile_seconds,
            "note": RANDOM_INIT_NOTE,
        }


# ---------------------------------------------------------------------------------------------------------------
# Stages


def required_test_metrics(task: str) -> tuple[str, ...]:
    """The Table-2 metrics of ``task`` (the leaderboard's columns) that its test split must hold."""
    return TASKS[task].reported_metrics


def _is_file(path: Path) -> bool:
    return path.is_file()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_trained(expdir: Path, task: str) -> bool:
    """The training run finished: results.json (with the test metrics, unless evaluated separately) and weights."""
    finished = (expdir / "results.json").is_file() and (expdir / "layer_weights.json").is_file()
    return finished and (task in EVALUATED_SEPARATELY or has_test_metrics(expdir, task))


def eval_dataloaders_override(task: str) -> str:
    """s3prl's ``-o`` entry evaluating the test split next to dev during training (SD: dev only)."""
    spec = TASKS[task]
    splits = [spec.dev_split] if task in EVALUATED_SEPARATELY else [spec.dev_split, spec.test_split]
    return f"config.runner.eval_dataloaders={splits!r}"


class DemoPlan:
    """The stages of one demo, built from its settings (nothing runs until :meth:`run`)."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.upstreams = [DEMO_UPSTREAMS[key] for key in settings.upstreams if DEMO_UPSTREAMS[key].kind != "plugin"]
        self.env = subprocess_env(settings.jobs)
        self._overrides: dict[str, str] = {}
        self._lock = threading.Lock()
        self.phases = [
            self._prepare_phase(),
            self._pretrain_phase(),
            self._runs_phase(),
            self._compare_phase(),
            self._profile_phase(),
            self._leaderboard_phase(),
        ]

    @property
    def stages(self) -> list[Stage]:
        return [stage for phase in self.phases for stage in phase.stages]

    # -- phase 1: corpora and checkpoints (in this process) --------------------------------------------------

    def _prepare_phase(self) -> Phase:
        s = self.settings
        # asr: the analysis reads its alignments and pre-training its audio; sts: the spoken STS corpus
        corpus_tasks = [t for t in TASK_NAMES if t in s.tasks or t == "asr"] + ["sts"]
        chains = [
            [
                Stage(
                    f"corpus {task}",
                    partial(_is_file, s.corpus(task) / "manifest.json"),
                    partial(self._build_corpus, task),
                ),
                *(
                    [
                        Stage(
                            f"prepare {task}",
                            partial(_is_file, s.prepared(task) / "prepared.json"),
                            partial(self._prepare_corpus, task),
                        )
                    ]
                    if task in TASK_NAMES
                    else []
                ),
            ]
            for task in corpus_tasks
        ]
        chains += [
            [Stage(f"checkpoint {u.key}", partial(_is_file, s.checkpoint(u)), partial(self._write_checkpoint, u))]
            for u in self.upstreams
            if u.kind == "random"
        ]
        return Phase("prepare", chains)

    # -- phase 2: the brief pre-training of the toy model (a subprocess; its checkpoints feed the runs) ---------

    @property
    def pretrain_dir(self) -> Path:
        return self.settings.root / "pretrain" / PRETRAIN_RECIPE

    def _pretrained(self) -> list[DemoUpstream]:
        return [u for u in self.upstreams if u.kind != "random"]

    def _pretrain_phase(self) -> Phase:
        s = self.settings
        if not self._pretrained():
            return Phase("pretrain", [])
        chain = [Stage("pretrain toy", self._pretrain_finished, self._pretrain)]
        chain += [
            Stage(f"checkpoint {u.key}", partial(_is_file, s.checkpoint(u)), partial(self._copy_pretrained, u))
            for u in self._pretrained()
        ]
        return Phase("pretrain", [chain])

    def _pretrain_finished(self) -> bool:
        record = _read_json(self.pretrain_dir / "results.json")
        return record is not None and record.get("status") == "finished"

    def _pretrain(self) -> None:
        s = self.settings
        command = [
            console_script("mrsuperb"),
            "pretrain",
            "--config",
            str(recipes_dir() / "pretrain" / f"{PRETRAIN_RECIPE}.yaml"),
            "--corpus",
            str(s.corpus("asr")),
            "--out",
            str(self.pretrain_dir),
            "-a",  # the recipe holds its own seed
            "--quiet",
        ]
        run_logged("pretrain toy", command, s.log("pretrain toy"), self.env)
        if not self._pretrain_finished():
            raise DemoError(f"stage 'pretrain toy' did not finish; see {s.log('pretrain toy')}")

    def _copy_pretrained(self, upstream: DemoUpstream) -> None:
        """The best checkpoint (``pretrained``) or the one written before step 1 (``twin``), under the demo's name."""
        name = "checkpoint_best.pt" if upstream.kind == "pretrained" else "checkpoint_init.pt"
        source = self.pretrain_dir / "checkpoints" / name
        if not source.is_file():
            raise DemoError(f"pre-training left no {source}; see {self.settings.log('pretrain toy')}")
        write_bytes_atomic(self.settings.checkpoint(upstream), source.read_bytes())

    def _build_corpus(self, task: str) -> None:
        # build_corpus renames a finished folder into place; a leftover without a manifest is an interrupted build.
        corpora.build_corpus(
            task,
            self.settings.corpus(task),
            utterances=CORPUS_UTTERANCES.get(task),
            seed=self.settings.seed,
            force=True,
            workers=self.settings.jobs,
        )

    def _prepare_corpus(self, task: str) -> None:
        prepare(task, self.settings.corpus(task), self.settings.prepared(task))

    def _write_checkpoint(self, upstream: DemoUpstream) -> None:
        if upstream.preset is None:
            raise DemoError(f"{upstream.key}: a random-init upstream needs a preset")
        write_tiny_checkpoint(self.settings.checkpoint(upstream), upstream.preset, seed=self.settings.seed)

    # -- phase 3: training runs, test evaluations and the analysis (subprocesses, in parallel) -----------------

    def tasks_of(self, upstream: DemoUpstream) -> list[str]:
        """The tasks a model is trained on: all asked for, the pre-trained pair only where it is compared."""
        if upstream.kind == "random":
            return list(self.settings.tasks)
        return [t for t in self.settings.tasks if t in PAIR_TASKS]

    def _runs_phase(self) -> Phase:
        s = self.settings
        chains = []
        for upstream in self.upstreams:
            for task in self.tasks_of(upstream):
                expdir = s.expdir(upstream, task)
                chain = [
                    Stage(
                        f"train {upstream.key}/{task}",
                        partial(is_trained, expdir, task),
                        partial(self._train, upstream, task),
                    )
                ]
                if task in EVALUATED_SEPARATELY:
                    chain.append(
                        Stage(
                            f"evaluate {upstream.key}/{task}",
                            partial(has_test_metrics, expdir, task),
                            partial(self._evaluate, upstream, task),
                        )
                    )
                chains.append(chain)
        for upstream in self.upstreams:
            chains.append(
                [
                    Stage(
                        f"analyze {upstream.key}",
                        partial(self._analysed, upstream),
                        partial(self._analyze, upstream),
                    )
                ]
            )
        # The analysis chains are the longest: start them first.
        chains = chains[-len(self.upstreams) :] + chains[: -len(self.upstreams)]
        pair = whisper_pair_chains(
            self, PairRules(PAIR_TASKS, PAIR_TRAINING_STEPS, is_trained, eval_dataloaders_override)
        )
        return Phase("runs", pair + chains, workers=s.jobs)

    def _override(self, task: str) -> str:
        with self._lock:
            if task not in self._overrides:
                corpus, prepared = self.settings.corpus(task), self.settings.prepared(task)
                self._overrides[task] = override_option(corpora.s3prl_overrides(corpus, prepared))
            return self._overrides[task]

    def _train(self, upstream: DemoUpstream, task: str) -> None:
        s = self.settings
        expdir = s.expdir(upstream, task)
        stage = f"train {upstream.key}/{task}"
        trained = (expdir / "results.json").is_file() and (
            task in EVALUATED_SEPARATELY or has_test_metrics(expdir, task)
        )
        if not trained:
            if expdir.exists():  # an interrupted (or incomplete) run: four steps, simply start again
                shutil.rmtree(expdir)
            override = f"{self._override(task)},,{eval_dataloaders_override(task)}"
            if upstream.kind != "random":
                steps = PAIR_TRAINING_STEPS
                override += (
                    f",,config.runner.total_steps={steps},,config.runner.eval_step={steps // 3},,"
                    f"config.runner.save_step={steps // 3}"
                )
            command = [
                console_script("run_downstream.py"),
                "-m",
                "train",
                "-u",
                "mrhubert_local",
                "-k",
                str(s.checkpoint(upstream)),
                "-d",
                task,
                "-c",
                str(recipes_dir() / "quick" / task / "config.yaml"),
                "-p",
                str(expdir),
                "-o",
                override,
                "--seed",
                str(s.seed),
            ]
            run_logged(stage, command, s.log(stage), self.env)
        if not (expdir / "layer_weights.json").is_file():
            run_logged(
                f"export-weights {upstream.key}/{task}",
                [console_script("mrsuperb"), "export-weights", str(expdir)],
                s.log(f"export-weights {upstream.key}/{task}"),
                self.env,
            )
        if not is_trained(expdir, task):
            raise DemoError(
                f"stage '{stage}' ended without {expdir}/results.json (with the test metrics "
                f"{', '.join(required_test_metrics(task))}) and layer_weights.json; see {s.log(stage)}"
            )

    def _evaluate(self, upstream: DemoUpstream, task: str) -> None:
        s = self.settings
        expdir = s.expdir(upstream, task)
        stage = f"evaluate {upstream.key}/{task}"
        command = [
            console_script("run_downstream.py"),
            "-m",
            "evaluate",
            "-e",
            str(best_checkpoint(expdir)),
            "-t",
            TASKS[task].test_split,
        ]
        run_logged(stage, command, s.log(stage), self.env)
        if not has_test_metrics(expdir, task):
            metrics = ", ".join(required_test_metrics(task))
            raise DemoError(
                f"stage '{stage}' ended without the test metrics {metrics} in {expdir}/results.json; see {s.log(stage)}"
            )

    def _analysed(self, upstream: DemoUpstream) -> bool:
        folder = self.settings.analysis(upstream)
        return all((folder / f"{output_name(p)}.json").is_file() for p in ANALYZE_PROPERTIES)

    def _analyze(self, upstream: DemoUpstream) -> None:
        s = self.settings
        stage = f"analyze {upstream.key}"
        command = [
            console_script("mrsuperb"),
            "analyze",
            "-u",
            "mrhubert_local",
            "-k",
            str(s.checkpoint(upstream)),
            "--corpus",
            str(s.corpus("asr")),
            "--properties",
            ",".join(ANALYZE_PROPERTIES),
            "--sts-corpus",
            str(s.corpus("sts")),
            "--split",
            CCA_SPLIT,
            "--mi-train-split",
            CCA_SPLIT,
            "--mi-clusters",
            ANALYZE_MI_CLUSTERS,
            "--word-counts-split",
            CCA_SPLIT,
            "--seed",
            str(s.seed),
            "--out",
            str(s.analysis(upstream)),
            "--cache-dir",
            str(s.root / "cache" / "layer_features"),
            "--quiet",
        ]
        run_logged(stage, command, s.log(stage), self.env)

    # -- phase 4: compare the rankings of every model (weights, analysis) ----------------------------------------

    @property
    def compare_json(self) -> Path:
        # beside the analysis outputs: the leaderboard finds both under the folders it is given
        return self.settings.root / "analysis" / "compare.json"

    def _compare_phase(self) -> Phase:
        return Phase("compare", [[Stage("compare", lambda: False, self._compare)]])

    def _compare(self) -> None:
        s = self.settings
        command = [
            console_script("mrsuperb"),
            "compare",
            str(s.root / "runs"),
            str(s.root / "analysis"),
            "-o",
            str(self.compare_json),
            "--plot-dir",
            str(s.root / "figures"),
        ]
        run_logged("compare", command, s.log("compare"), self.env)

    # -- phase 5: efficiency profile (alone, so that latencies are not disturbed) ------------------------------

    def _profile_phase(self) -> Phase:
        return Phase("profile", [[Stage("profile", lambda: self.settings.profile_json.is_file(), self._profile)]])

    def _profile(self) -> None:
        s = self.settings
        command = [console_script("mrsuperb"), "profile", "-u", *(u.row for u in self.upstreams)]
        for upstream in self.upstreams:
            command += ["-k", f"{upstream.row}={s.checkpoint(upstream)}"]
        if PROFILE_REFERENCE in s.upstreams:
            command += ["--reference", DEMO_UPSTREAMS[PROFILE_REFERENCE].row]
        command += [
            "--seconds",
            f"{s.profile_seconds:g}",
            "--threads",
            "1",
            "--seed",
            str(s.seed),
            "--out",
            str(s.profile_json),
        ]
        run_logged("profile", command, s.log("profile"), {**self.env, "OMP_NUM_THREADS": "1"})

    # -- phase 6: the leaderboard (always rendered again: it reflects whatever runs exist) ---------------------

    def _leaderboard_phase(self) -> Phase:
        return Phase("leaderboard", [[Stage("leaderboard", lambda: False, self._leaderboard)]])

    def _leaderboard(self) -> None:
        s = self.settings
        profile = s.profile_json if s.profile_json.is_file() else None
        for fmt, path in (("md", s.leaderboard_md), ("html", s.leaderboard_html)):
            write_leaderboard(
                [s.root / "runs", s.root / "analysis"],  # not pretrain/: its results.json is the pre-training's
                fmt,
                out=path,
                profile=profile,
                note=RANDOM_INIT_NOTE,
                title="mrsuperb demo leaderboard (tiny models: random-init, and one pre-trained beside its twin)",
            )

    # -- running ---------------------------------------------------------------------------------------------

    def pending(self) -> list[Stage]:
        return [stage for stage in self.stages if not stage.is_done()]

    def run(self, progress: bool = True) -> dict[str, float]:
        """Run every phase in order; returns the seconds spent per executed stage."""
        return run_phases(self.phases, desc="demo", progress=progress)


# ---------------------------------------------------------------------------------------------------------------
# Settings record and command line


def check_or_write_settings(settings: DemoSettings) -> None:
    """Record the settings in ``demo.json``; a folder made with another seed is refused (its outputs would mix)."""
    recorded = _read_json(settings.settings_file)
    if recorded is not None and recorded.get("seed") != settings.seed:
        raise UsageError(
            f"{settings.root} holds a demo made with seed {recorded.get('seed')}; use --fresh to start "
            f"over there, or --out for another folder"
        )
    if recorded is None:
        check_demo_folder(settings)
    merged = settings.record()
    if recorded is not None:  # a resumed demo may add upstreams or tasks
        merged["upstreams"] = sorted(set(recorded.get("upstreams", [])) | set(settings.upstreams))
        merged["tasks"] = [t for t in TASK_NAMES if t in set(recorded.get("tasks", [])) | set(settings.tasks)]
    write_json_atomic(settings.settings_file, merged)


def _folder_content(settings: DemoSettings) -> list[Path]:
    """What the demo folder holds besides its lock file."""
    root = settings.root
    return [path for path in root.iterdir() if path.name != LOCK_FILE] if root.is_dir() else []


def check_demo_folder(settings: DemoSettings) -> None:
    """The demo writes into (and ``--fresh`` deletes) only a demo folder: one with a demo.json, or an empty one."""
    if _folder_content(settings) and not settings.settings_file.is_file():
        raise UsageError(
            f"{settings.root} is not empty and holds no demo.json: not a demo folder; choose another --out"
        )


def remove_demo_folder(settings: DemoSettings) -> None:
    """``--fresh``: delete what a previous demo wrote, keeping the lock file this run holds."""
    check_demo_folder(settings)
    for path in _folder_content(settings):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python recipes/demo/run.py",
        description="The mrsuperb demo: synthetic corpora, tiny random-init MR-HuBERTs, every SUPERB task trained "
        "briefly through run_downstream.py, CCA, efficiency profile, leaderboard. Resumable.",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"demo folder (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of corpora, checkpoints, training, CCA (default 0)")
    parser.add_argument(
        "--upstreams",
        type=_csv,
        default=DEFAULT_UPSTREAMS,
        help=f"comma-separated, among {', '.join(DEMO_UPSTREAMS)} (default {','.join(DEFAULT_UPSTREAMS)})",
    )
    parser.add_argument(
        "--tasks", type=_csv, default=TASK_NAMES, help=f"comma-separated (default {','.join(TASK_NAMES)})"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=max(1, min(2, os.cpu_count() or 1)),
        help="subprocesses at once (default: 2, or 1 on a single core)",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="clip length of the profile (default 10)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo folder first and start over")
    parser.add_argument("--plan", action="store_true", help="list the stages (done or to do) and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = DemoSettings(
            out=Path(args.out),
            seed=args.seed,
            upstreams=args.upstreams,
            tasks=args.tasks,
            jobs=args.jobs,
            profile_seconds=args.profile_seconds,
        )
        plan = DemoPlan(settings)
        if args.plan:
            for phase in plan.phases:
                print(f"{phase.name}:")
                for stage in phase.stages:
                    print(f"  [{'done' if stage.is_done() else 'todo'}] {stage.name}")
            return 0
        check_demo_folder(settings)  # before the lock file is written into a folder that is not the demo's
        # one demo per folder: a second one (or a --fresh) would remove or rewrite what the first is writing
        with folder_lock(settings.root, "--out", check_links=False):
            if args.fresh:
                remove_demo_folder(settings)
            check_or_write_settings(settings)
            start = time.perf_counter()
            pending = len(plan.pending())
            print(
                f"mrsuperb demo in {settings.root}: {len(plan.stages)} stages, {len(plan.stages) - pending} already "
                f"done; {settings.jobs} at a time; logs in {settings.root / 'logs'}"
            )
            print(RANDOM_INIT_NOTE)
            plan.run()
            elapsed = time.perf_counter() - start
    except (StageError, ValueError, FileNotFoundError) as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    print()
    print(settings.leaderboard_md.read_text(encoding="utf-8"))
    print(
        f"Demo finished in {elapsed / 60:.1f} min. Leaderboard: {settings.leaderboard_md} and "
        f"{settings.leaderboard_html} (open it in a browser: figures inline). Profile: {settings.profile_json}."
    )
    print(RANDOM_INIT_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
