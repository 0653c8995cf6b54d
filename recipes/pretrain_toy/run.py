"""The paper's pretraining experiment at toy scale, from nothing, on this machine (arXiv 2410.23955 Tables 1-3, Fig. 2a/3).

Stages (each skipped when its output exists, so a killed run resumes; pretraining itself resumes with ``-a``):

1. corpora: a synthetic ASR corpus of at least 30 minutes (``mrsuperb corpus asr``), plus KS and IC corpora;
2. pretraining: the four toy variants of ``recipes/pretrain/`` (mono-base-like, B4-a-like, B5-a-like,
   pre-residual); the k-means targets are made once and shared (same corpus, same seed, same recipe section);
3. downstream: IC, KS and ASR with the quick configs (``recipes/quick``) and ``--downstream-steps`` steps, for each
   trained variant (``checkpoint_best.pt``) and its random-init twin (``checkpoint_init.pt``: the same network
   before its first step);
4. analysis: ``mrsuperb analyze`` (CCA phone and word, MI phone and word, spoken STS: arXiv 2410.23955 Fig. 3
   at toy size) per trained variant and twin;
5. report: ``report/table3.md`` (final train / valid loss, post- vs pre-residual), ``report/table2.md`` (IC, KS,
   ASR), ``report/analysis.md`` and ``report/analysis_<variant>.png`` (Fig. 3 panels, trained next to its random
   twin), and ``report/report.json`` with every number, its seed and its config.

Usage::

    python recipes/pretrain_toy/run.py --out runs/pretrain_toy [--variants mono_base,b4a] [--tasks ks]
    # longer downstream runs beside the 200-step ones (downstream/<steps>_steps/); the report shows every length
    python recipes/pretrain_toy/run.py --out runs/pretrain_toy --tasks ks --downstream-steps 1000

Everything is seeded (``--seed``); each subprocess's output is in ``OUT/logs/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from downstream_probes.analysis.analyze import output_name
from downstream_probes.analysis.plots import plot_analysis_figure, save_figure
from downstream_probes.corpora.api import s3prl_overrides
from downstream_probes.pipelines.stages import (
    Phase,
    Stage,
    console_script,
    run_logged,
    run_phases,
    stage_log,
    subprocess_env,
)
from downstream_probes.s3prl.run_downstream import override_option
from downstream_probes.tasks import TASKS
from upstream_mrhubert.atomic_io import write_json_atomic, write_text_atomic
from upstream_mrhubert.output_folder import FolderLocked, folder_lock

RECIPES = Path(__file__).resolve().parents[1]
VARIANTS = {
    "mono_base": "toy_mono_base.yaml",
    "b4a": "toy_b4a_no_aux_loss.yaml",
    "b5a": "toy_b5a_no_downsampling.yaml",
    "pre_residual": "toy_pre_residual.yaml",
}
TOY_TASKS = ("ic", "ks", "asr")
# (split, properties): the toy corpus's dev-clean has ~1100 word segments, 110 per held-out part of the PWCCA
# protocol, fewer than the toy model's 192 dimensions: word CCA reads the training split (phones suffice on dev)
ANALYSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train-clean-100", ("word",)),
    ("dev-clean", ("phone", "mi_phone", "mi_word", "sts")),
)
ANALYZE_PROPERTIES = tuple(p for _, props in ANALYSES for p in props)
# k-means with fewer clusters than the reference's 500/5000: the toy training split has ~13k phone and ~4k
# top-500-word segments (the reference's MI training sample is hundreds of thousands of each)
ANALYZE_MI_CLUSTERS = "phone=50,word=100"
MI_TRAIN_SPLIT = "train-clean-100"
CORPUS_UTTERANCES = {"asr": 1000, "ks": 600, "ic": 600, "sts": 60}  # asr: about 37 minutes of speech
TWINS = {"trained": "checkpoint_best.pt", "random": "checkpoint_init.pt"}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ToyExperiment:
    def __init__(self, args: argparse.Namespace) -> None:
        self.out = Path(args.out).resolve()
        self.seed = args.seed
        self.variants = [v for v in args.variants.split(",") if v]
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
        self.tasks = [t for t in args.tasks.split(",") if t]
        self.downstream_steps = args.downstream_steps
        self.max_steps = args.max_steps
        # the stages run one at a time: each gets every core (--jobs 2 on a 2-core machine shared with other work:
        # there two threads per process ran 10-15x slower than one, see docs/pretraining.md)
        self.env = subprocess_env(args.jobs)

    # -- paths ---------------------------------------------------------------------------------------------------
    def corpus(self, task: str) -> Path:
        return self.out / "corpora" / task

    def run_dir(self, variant: str) -> Path:
        return self.out / "pretrain" / variant

    def checkpoint(self, variant: str, twin: str) -> Path:
        return self.run_dir(variant) / "checkpoints" / TWINS[twin]

    def expdir(self, variant: str, twin: str, task: str, steps: int | None = None) -> Path:
        """One downstream run; runs of different lengths (``--downstream-steps``) live side by side."""
        return self.out / "downstream" / f"{steps or self.downstream_steps}_steps" / f"{variant}_{twin}" / task

    def downstream_lengths(self) -> list[int]:
        """The step counts of every downstream run on disk (the report shows them all)."""
        folders = (self.out / "downstream").glob("*_steps")
        return sorted(int(f.name.split("_")[0]) for f in folders if f.name.split("_")[0].isdigit())

    def analysis(self, variant: str, twin: str) -> Path:
        return self.out / "analysis" / f"{variant}_{twin}"

    def log(self, name: str) -> Path:
        return stage_log(self.out / "logs", name)

    def upstream_options(self, variant: str) -> Path:
        """``-g`` file: the pre-residual variant must be run with the residual where it was trained."""
        path = self.out / "upstream_options" / f"{variant}.yaml"
        if not path.is_file():
            pre = "pre_residual" in VARIANTS[variant]
            write_text_atomic(path, f"pre_residual: {'true' if pre else 'false'}\n")
        return path

    # -- stages --------------------------------------------------------------------------------------------------
    def _corpus_stage(self, task: str) -> Stage:
        def run() -> None:
            command = [console_script("mrsuperb"), "corpus", task, "--out", str(self.corpus(task)), "--force"]
            command += ["--utterances", str(CORPUS_UTTERANCES[task]), "--seed", str(self.seed), "--quiet"]
            run_logged(f"corpus {task}", command, self.log(f"corpus {task}"), self.env)

        return Stage(f"corpus {task}", lambda: (self.corpus(task) / "manifest.json").is_file(), run)

    def _pretrain_stage(self, variant: str) -> Stage:
        def done() -> bool:
            results = _read(self.run_dir(variant) / "results.json")
            return bool(results and results.get("status") == "finished")

        def run() -> None:
            targets = self.run_dir(variant) / "targets"
            shared = next(
                (self.run_dir(v) / "targets" for v in self.variants if (self.run_dir(v) / "targets").is_dir()), None
            )
            if shared is not None and not targets.exists():
                shutil.copytree(shared, targets)  # the trainer checks that they match the corpus
            command = [
                console_script("mrsuperb"),
                "pretrain",
                "--config",
                str(RECIPES / "pretrain" / VARIANTS[variant]),
            ]
            command += ["--corpus", str(self.corpus("asr")), "--out", str(self.run_dir(variant)), "-a", "--quiet"]
            if self.max_steps:
                command += ["--max-steps", str(self.max_steps)]
            run_logged(f"pretrain {variant}", command, self.log(f"pretrain {variant}"), self.env)

        return Stage(f"pretrain {variant}", done, run)

    def _downstream_stage(self, variant: str, twin: str, task: str) -> Stage:
        expdir = self.expdir(variant, twin, task)

        def run() -> None:
            if expdir.exists():
                shutil.rmtree(expdir)
            steps = self.downstream_steps
            override = override_option(s3prl_overrides(self.corpus(task)))
            override += f",,config.runner.total_steps={steps},,config.runner.eval_step={max(1, steps // 4)}"
            override += f",,config.runner.save_step={max(1, steps // 4)},,config.runner.log_step={max(1, steps // 20)}"
            override += ",,config.runner.eval_dataloaders=" + repr([TASKS[task].dev_split, TASKS[task].test_split])
            command = [console_script("run_downstream.py"), "-m", "train", "-u", "mrhubert_local"]
            command += ["-k", str(self.checkpoint(variant, twin)), "-g", str(self.upstream_options(variant))]
            command += ["-d", TASKS[task].downstream, "-c", str(RECIPES / "quick" / task / "config.yaml")]
            command += ["-p", str(expdir), "-o", override, "--seed", str(self.seed)]
            run_logged(
                f"downstream {variant}_{twin}/{task}",
                command,
                self.log(f"downstream {variant}_{twin} {task}"),
                self.env,
            )

        return Stage(f"downstream {variant}_{twin}/{task}", lambda: (expdir / "results.json").is_file(), run)

    def _analyze_stage(self, variant: str, twin: str) -> Stage:
        out = self.analysis(variant, twin)

        def run() -> None:
            for split, props in ANALYSES:  # the same folder: the last call's analysis.png shows its properties
                command = [console_script("mrsuperb"), "analyze", "-u", "mrhubert_local"]
                command += ["-k", str(self.checkpoint(variant, twin)), "-g", str(self.upstream_options(variant))]
                command += ["--corpus", str(self.corpus("asr")), "--properties", ",".join(props), "--split", split]
                command += ["--sts-corpus", str(self.corpus("sts")), "--word-counts-split", MI_TRAIN_SPLIT]
                command += ["--mi-train-split", MI_TRAIN_SPLIT, "--mi-clusters", ANALYZE_MI_CLUSTERS]
                command += ["--seed", str(self.seed), "--out", str(out), "--quiet"]
                command += ["--cache-dir", str(self.out / "cache" / "layer_features")]
                name = f"analyze {variant}_{twin} {split}"
                run_logged(name, command, self.log(name), self.env)

        def done() -> bool:
            return all((out / f"{output_name(p)}.json").is_file() for p in ANALYZE_PROPERTIES)

        return Stage(f"analyze {variant}_{twin}", done, run)

    def phases(self) -> list[Phase]:
        corpora = ["asr", "sts", *[t for t in self.tasks if t != "asr"]]
        phases = [
            Phase("corpora", [[self._corpus_stage(t) for t in corpora]]),
            Phase("pretrain", [[self._pretrain_stage(v) for v in self.variants]]),
            Phase(
                "analysis",
                [[self._analyze_stage(v, twin) for v in self.variants for twin in TWINS]],
            ),
            Phase(
                "downstream",
                [[self._downstream_stage(v, twin, t) for v in self.variants for twin in TWINS for t in self.tasks]],
            ),
        ]
        return phases

    # -- report --------------------------------------------------------------------------------------------------
    def report(self) -> dict:
        lengths = self.downstream_lengths()
        report: dict = {"seed": self.seed, "variants": {}, "downstream_steps": lengths}
        tasks_run: dict[int, set[str]] = {steps: set() for steps in lengths}  # the columns of each Table 2 block
        table3 = [
            (
                "| variant | recipe | steps | final train loss | final valid loss | valid masked acc (20 ms) | "
                "majority baseline | wall s |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for variant in self.variants:
            results = _read(self.run_dir(variant) / "results.json") or {}
            last = (results.get("history") or [{}])[-1]
            valid = (results.get("valid_history") or [{}])[-1]
            throughput = results.get("throughput") or {}
            entry = {
                "recipe": str(RECIPES / "pretrain" / VARIANTS[variant]),
                "config": results.get("config"),
                "seed": results.get("seed"),
                "steps": results.get("steps_done"),
                "final_train_loss": last.get("loss"),
                "final_valid_loss": valid.get("loss"),
                "valid_acc_m_0": valid.get("acc_m_0"),
                "majority_baseline_valid": (results.get("targets") or {}).get("majority_baseline_valid"),
                "train_wall_seconds": throughput.get("train_wall_seconds"),
                "audio_seconds_per_second": throughput.get("audio_seconds_per_second"),
                "downstream": {},
                "analysis": {},
            }
            table3.append(
                f"| {variant} | {Path(entry['recipe']).name} | {entry['steps']} | {_fmt(entry['final_train_loss'])} | "
                f"{_fmt(entry['final_valid_loss'])} | {_fmt(entry['valid_acc_m_0'])} | "
                f"{_fmt(entry['majority_baseline_valid'])} | {_fmt(entry['train_wall_seconds'], 0)} |"
            )
            for twin in TWINS:
                for steps, task in ((n, t) for n in lengths for t in TOY_TASKS):
                    downstream = _read(self.expdir(variant, twin, task, steps) / "results.json")
                    if downstream:
                        tasks_run[steps].add(task)
                        spec = TASKS[task]
                        test = downstream.get("metrics", {}).get(downstream.get("test_split"), {})
                        entry["downstream"].setdefault(str(steps), {}).setdefault(twin, {})[task] = {
                            "metric": spec.primary,
                            "test": test.get(spec.primary),
                            "best_step": downstream.get("best_step"),
                            "seed": downstream.get("seed"),
                        }
                for prop in ANALYZE_PROPERTIES:
                    scores = _read(self.analysis(variant, twin) / f"{output_name(prop)}.json")
                    if scores:
                        entry["analysis"].setdefault(twin, {})[output_name(prop)] = scores
            report["variants"][variant] = entry

        table2: list[str] = []
        for steps in lengths:
            ran = [t for t in TOY_TASKS if t in tasks_run[steps]]
            table2 += [
                f"\n{steps} downstream steps (quick configs, seed {self.seed}):\n",
                "| variant | weights | "
                + " | ".join(f"{TASKS[t].title} ({TASKS[t].primary}, test)" for t in ran)
                + " |",
                "|---|---|" + "---|" * len(ran),
            ]
            for variant, entry in report["variants"].items():
                for twin in TWINS:
                    results = entry["downstream"].get(str(steps), {}).get(twin, {})
                    if results:
                        cells = [_fmt(results.get(t, {}).get("test")) for t in ran]
                        table2.append(f"| {variant} | {twin} | " + " | ".join(cells) + " |")
        analysis_rows = [
            (
                "| variant | analysis | best layer (trained) | trained | random twin at that layer | best random | "
                "trained - random (best vs best) |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for variant, entry in report["variants"].items():
            for name in map(output_name, ANALYZE_PROPERTIES):
                trained = entry["analysis"].get("trained", {}).get(name)
                random = entry["analysis"].get("random", {}).get(name)
                if not trained or not random:
                    continue
                best = max(trained, key=trained.get)
                best_random = max(random.values())
                analysis_rows.append(
                    f"| {variant} | {name} | {best} | {trained[best]:.3f} | {random.get(best, float('nan')):.3f} | "
                    f"{best_random:.3f} | {trained[best] - best_random:+.3f} |"
                )
            curves = {f"{variant} {twin}": entry["analysis"][twin] for twin in TWINS if entry["analysis"].get(twin)}
            if curves:
                save_figure(plot_analysis_figure(curves), self.out / "report" / f"analysis_{variant}.png")
        folder = self.out / "report"
        write_text_atomic(
            folder / "table3.md",
            "\n".join(table3) + "\n\nLosses in bits per masked 20 ms frame (fairseq's logged loss).\n",
        )
        write_text_atomic(
            folder / "table2.md",
            "\n".join(table2).lstrip() + "\n",
        )
        write_text_atomic(folder / "analysis.md", "\n".join(analysis_rows) + "\n")
        write_json_atomic(folder / "report.json", report)
        return report


def _fmt(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pretrain_toy", help="everything goes here (default runs/pretrain_toy)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--tasks", default=",".join(TOY_TASKS), help="downstream tasks (ic, ks, asr)")
    parser.add_argument("--downstream-steps", type=int, default=200, help="steps of each downstream training")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipes' optim.max_steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="share the cores as if this many processes ran at once: threads per stage = cores / jobs (default 1)",
    )  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="only rewrite report/ from what exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    experiment = ToyExperiment(args)
    try:
        with folder_lock(experiment.out, "--out", check_links=False):  # each run checks its own folder for links
            if not args.report_only:
                run_phases(experiment.phases(), desc="pretrain toy")
            experiment.report()
    except FolderLocked as error:
        print(f"pretrain_toy: error: {error}", file=sys.stderr)
        return 2
    for name in ("table3.md", "table2.md", "analysis.md"):
        print((experiment.out / "report" / name).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
