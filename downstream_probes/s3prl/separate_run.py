"""What s3prl's ``run_downstream.main`` does for one run, piece by piece, for code that runs several runs' heads in
one process (``probe-sweep --shared``, ``superb --shared``): parse its command line (through our rewriting), write
the files it writes into the experiment folder, set up the process as it does, build the upstream as its runner does.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from downstream_probes.s3prl import run_downstream
from upstream_mrhubert.errors import UsageError


def parse_run_args(argv: Sequence[str]) -> tuple[Any, dict, list[str]]:
    """s3prl's ``(args, config, backup_files)`` for ``argv``, through our ``run_downstream`` rewriting."""
    import s3prl.run_downstream as s3prl_main

    run_downstream.reject_unsupported(argv)
    s3prl_argv, _ = run_downstream.build_argv(argv)
    run_downstream.check_paths(s3prl_argv)
    saved = sys.argv
    sys.argv = ["run_downstream.py", *s3prl_argv]
    try:
        return s3prl_main.get_downstream_args()
    finally:
        sys.argv = saved


def write_run_files(args: Any, config: dict, backup_files: Sequence[str]) -> None:
    """The ``args_*.yaml``/``config_*.yaml`` (and backups) s3prl's ``main`` writes into every experiment folder."""
    import yaml
    from s3prl.utility.helper import backup, get_time_tag, is_leader_process

    if not is_leader_process():
        return
    expdir = Path(args.expdir)
    (expdir / f"args_{get_time_tag()}.yaml").write_text(yaml.dump(vars(args)))
    (expdir / f"config_{get_time_tag()}.yaml").write_text(yaml.dump(config))
    for file in backup_files:
        backup(file, str(expdir))


@contextmanager
def s3prl_process(args: Any) -> Iterator[None]:
    """What s3prl's ``main`` does to the process (sharing strategy, ``isinstance`` hack, process group, cuDNN),
    undone afterwards except the process group."""
    from s3prl.utility.helper import hack_isinstance

    saved = (builtins.isinstance, torch.multiprocessing.get_sharing_strategy())
    torch.multiprocessing.set_sharing_strategy("file_system")
    hack_isinstance()
    if args.local_rank is not None and not torch.distributed.is_initialized():
        torch.cuda.set_device(args.local_rank)
        torch.distributed.init_process_group(args.backend)
    if args.disable_cudnn:
        torch.backends.cudnn.enabled = False
    else:
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        builtins.isinstance = saved[0]
        torch.multiprocessing.set_sharing_strategy(saved[1])


def build_upstream_entry(args: Any, config: dict) -> Any:
    """The upstream's ``ModelEntry`` through s3prl's own ``Runner._get_upstream`` (hub, device, barriers)."""
    from s3prl.downstream.runner import Runner

    if args.upstream_trainable:
        raise UsageError("--shared trains probes of a frozen upstream; drop -f/--upstream_trainable")
    builder = Runner.__new__(Runner)
    builder.args, builder.config, builder.init_ckpt = args, config, {}
    return Runner._get_upstream(builder)
