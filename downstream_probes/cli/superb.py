"""``mrsuperb superb -u NAME[,NAME...] -d TASK[,TASK...] --lrs 1e-5,1e-4,1e-3 [--seeds 0,1,2] -p DIR``: SUPERB's
protocol in one command.

Every (upstream, task, learning rate, seed) is one ordinary s3prl run in DIR/<upstream>/<task>/lr<lr>_seed<seed>/;
for each (upstream, task), DIR/<upstream>/<task>/protocol.json holds every run's dev and test metrics, the learning
rate chosen on dev (best dev metric of each run's best checkpoint, mean over seeds; ties to the smaller lr) and the
test metric of that lr per seed, with mean, sd and count. Rerunning the command runs only what is missing:
finished runs are read, interrupted ones resumed with -a. See docs/superb_protocol.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from downstream_probes.cli._options import (
    add_out_option,
    add_override_option,
    add_quiet_option,
    add_upstream_options,
    comma_list,
    same_named,
)
from downstream_probes.tasks import TASK_NAMES

HELP = "SUPERB protocol: learning-rate x seed grid, dev-based selection"


def run(args: argparse.Namespace) -> int:
    from downstream_probes.s3prl.protocol import SlurmSettings, SuperbOptions, run_superb
    from downstream_probes.s3prl.protocol.grid import parse_lrs, parse_seeds
    from downstream_probes.s3prl.protocol.selection import summary_line

    documents = run_superb(
        SuperbOptions(
            upstreams=comma_list(args.upstream),
            upstream_ckpts=[item or None for item in (args.upstream_ckpt or "").split(",")]
            if args.upstream_ckpt
            else [],
            model_config=args.upstream_model_config,
            tasks=comma_list(args.downstream),
            lrs=parse_lrs(comma_list(args.lrs)),
            seeds=parse_seeds(comma_list(args.seeds)),
            out=Path(args.out),
            **same_named(args, "config", "override", "device", "executor", "jobs", "shared", "wait", "quiet"),
            slurm=SlurmSettings(
                partition=args.slurm_partition,
                time_min=args.slurm_time,
                gpus=args.slurm_gpus,
                cpus=args.slurm_cpus,
                mem_gb=args.slurm_mem_gb,
            ),
        )
    )
    for document in documents:
        print(summary_line(document))
    print(f"wrote {len(documents)} protocol.json under {args.out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_upstream_options(parser, many=True)
    parser.add_argument(
        "-d", "--downstream", required=True, metavar="TASK[,TASK...]", help=f"tasks: {','.join(TASK_NAMES)}"
    )
    parser.add_argument("--lrs", required=True, metavar="LR[,LR...]", help="learning rates, e.g. 1e-5,1e-4,1e-3")
    parser.add_argument("--seeds", default="0", metavar="SEED[,SEED...]", help="seeds (default: 0)")
    add_out_option(
        parser, "folder of the grid (one s3prl experiment folder per cell)", required=True, short="-p", metavar="DIR"
    )
    parser.add_argument(
        "-c", "--config", help="downstream config ({task} is replaced; default: recipes/superb/TASK/config.yaml)"
    )
    add_override_option(parser)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local", help="where cells run")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="local: N cells at a time (one GPU each)")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="train the learning rates of one seed together, one upstream forward per batch (one Slurm job per seed)",
    )
    parser.add_argument("--wait", action="store_true", help="slurm: follow the jobs to the end (progress bar)")
    slurm = parser.add_argument_group("slurm (--executor slurm)")
    slurm.add_argument("--slurm-partition", help="partition")
    slurm.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MIN", help="time limit per job (minutes)")
    slurm.add_argument("--slurm-gpus", type=int, default=0, metavar="N", help="GPUs per job")
    slurm.add_argument("--slurm-cpus", type=int, default=1, metavar="N", help="CPUs per job")
    slurm.add_argument("--slurm-mem-gb", type=float, metavar="GB", help="memory per job")
    add_quiet_option(parser)
