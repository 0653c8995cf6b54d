"""``probe-sweep --shared``: every single-layer probe of a frozen upstream (and the weighted sum) in one process,
all fed by one upstream forward per batch.

Each probe is a ``Head``: s3prl's own runner, ``Featurizer`` and downstream expert, built from the command line its
separate ``run_downstream.py -m train -l LAYER`` run would get, with its own optimizer, scheduler, clipping, seed
and random generators. The loop below is s3prl 0.4.18's ``Runner.train`` with the upstream forward hoisted out of
the heads: heads whose generators agree share the loader (``SharedIteration``), so each head is trained on the
batches, in the order, its separate run would see; every evaluation reseeds, as s3prl's does. Each head writes what
its separate run writes under ``<sweep_dir>/<head>/`` (checkpoints, tensorboard events, ``evaluations.jsonl``,
``results.json``, ``layer_weights.json`` for the weighted sum); the sweep writes ``sweep.json``.

Heads are trained in passes of at most ``max_heads_per_pass`` (each pass one upstream forward per batch). A pass
saves its own state (every head's generators, the loaders' position) with each ``save_step`` checkpoint, so ``-a``
resumes it exactly where the last checkpoint left it.
"""

from __future__ import annotations

import datetime as _dt
import io
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from downstream_probes import result_files, tasks
from downstream_probes.s3prl import experiment, run_downstream
from downstream_probes.s3prl.experiment import check_runner_config
from downstream_probes.s3prl.feature_cache import cache_for_sweep
from downstream_probes.s3prl.heads import DIVERGED, FINISHED, TRAINING, Head, temporary_logger
from downstream_probes.s3prl.loaders import SharedIteration, group_by_state
from downstream_probes.s3prl.rng import RngState, seed_everything
from downstream_probes.s3prl.separate_run import build_upstream_entry, parse_run_args, s3prl_process, write_run_files
from downstream_probes.s3prl.shared_plan import (
    HeadSpec,
    SharedSweepOptions,
    describe_plan,
    head_argv,
    plan_passes,
    resolve_heads,
)
from downstream_probes.s3prl.sweep import best_checkpoint, new_document, run_entry
from upstream_mrhubert.atomic_io import write_bytes_atomic
from upstream_mrhubert.checkpoints.io import read_restricted_pickle
from upstream_mrhubert.errors import MrsuperbError, UsageError
from upstream_mrhubert.output_folder import check_settings, file_identity, folder_lock, folder_locks

STATE_DIR = "shared_state"
STATE_FORMAT = 1
SETTINGS_REMEDY = (
    "rerun (or resume with -a) with the settings it was made with, or write this sweep into another folder with -p"
)


class SharedSweepError(MrsuperbError, RuntimeError):
    """The shared sweep cannot stand for separate runs (or cannot resume)."""


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def is_leader() -> bool:
    """True in the one process that reports and writes the shared files (rank 0, or the only process)."""
    return _rank() == 0


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
# the sweep


class SharedSweep:
    """All heads of one upstream on one task (see the module docstring)."""

    def __init__(self, options: SharedSweepOptions, feature_source: Any = None) -> None:
        self.options = options
        self.sweep_dir = Path(options.sweep_dir)
        self.feature_source = feature_source
        self.timing: dict[str, float] = defaultdict(float)
        self.upstream_forwards = 0
        self._checked_upstream_rng = False
        spec = tasks.task_for(options.task)
        if spec is None:
            raise UsageError(f"unknown task {options.task!r}; choose one of {', '.join(tasks.TASKS)}")
        self.test_split = spec.test_split
        self.upstream: Any = None
        # the upstream's arguments: a head's command line without -l, in the sweep folder
        self.args, self.config, _ = parse_run_args(head_argv(options, HeadSpec("", None)))
        check_runner_config(self.config)
        self.specs: list[HeadSpec] = []
        self.passes: list[list[HeadSpec]] = []
        self.parsed: dict[str, tuple[Any, dict, list[str]]] = {}

    # --- setup ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """s3prl's ``main`` up to ``Runner(args, config)``: seed, build the upstream once, remember the state;
        then the heads' command lines (``--layers`` resolved against the upstream's ``layer_names``)."""
        started = time.perf_counter()
        seed_everything(self.args.seed)
        self.upstream = build_upstream_entry(self.args, self.config)
        self.after_upstream = RngState.capture()
        names = getattr(getattr(self.upstream.model, "module", self.upstream.model), "layer_names", None)
        if names is None:
            raise UsageError(f"upstream {self.args.upstream!r} does not expose layer_names; a sweep needs named layers")
        self.all_layers = list(names)
        self.specs = (
            list(self.options.heads)
            if self.options.heads
            else resolve_heads(self.all_layers, self.options.layers, self.options.with_weighted_sum)
        )
        self.passes = plan_passes(self.specs, self.options.max_heads_per_pass)
        self.parsed = {spec.name: parse_run_args(head_argv(self.options, spec)) for spec in self.specs}
        for name, (args, config, _) in self.parsed.items():
            if args.seed != self.args.seed or config["runner"] != self.config["runner"]:
                raise UsageError(f"head {name}: seed or runner settings differ from the others; a sweep needs one")
        self.timing["setup"] += time.perf_counter() - started

    def settings(self) -> dict[str, Any]:
        """What makes this sweep's results (recorded in ``settings.json``; a rerun or ``-a`` must match it): the
        upstream and its checkpoint's content, the heads and passes, the seed and s3prl's whole config (runner,
        optimizer, expert; ``-c`` and ``-o`` applied)."""
        return {
            "command": "probe-sweep --shared",
            "task": self.options.task,
            "upstream": self.options.upstream,
            "upstream_ckpt": file_identity(self.options.upstream_ckpt),
            "model_config": file_identity(self.options.model_config),
            "heads": [spec.name for spec in self.specs],
            "passes": [[spec.name for spec in group] for group in self.passes],
            "seed": self.args.seed,
            "config": self.config,
        }

    def build_head(self, spec: HeadSpec, init_ckpt: Path | None = None) -> Head:
        args, config, backup_files = self.parsed[spec.name]
        args = type(args)(**vars(args))
        args.init_ckpt = str(init_ckpt) if init_ckpt is not None else None
        if init_ckpt is None:
            write_run_files(args, config, backup_files)
        return self.new_head(spec, args, config)

    def new_head(self, spec: HeadSpec, args: Any, config: dict) -> Head:
        started = time.perf_counter()
        with memoized_forward(self.upstream.model):
            head = Head(spec.name, spec.layer, args, config, self.upstream, self.after_upstream)
        self.timing["setup"] += time.perf_counter() - started
        return head

    # --- upstream forward -----------------------------------------------------------------------------------

    def upstream_features(self, wavs: list[torch.Tensor], amp: bool, phase: str = "train") -> dict:
        """The frozen upstream's output for one batch (``torch.no_grad``, as s3prl runs a frozen upstream)."""
        _synchronize(self.args.device)
        started = time.perf_counter()
        before = None if self._checked_upstream_rng else RngState.capture()
        with torch.autocast(device_type=torch.device(self.args.device).type, enabled=amp), torch.no_grad():
            if self.feature_source is not None:
                features = self.feature_source(wavs)
            else:
                features = self.upstream.model(wavs)
        if before is not None:
            if before.differing(RngState.capture()):
                raise SharedSweepError(
                    f"upstream {self.args.upstream!r} draws random numbers in eval mode; the heads of a shared sweep "
                    "would not see what their separate runs see"
                )
            self._checked_upstream_rng = True
        _synchronize(self.args.device)
        self.timing[f"upstream_{phase}"] += time.perf_counter() - started
        self.upstream_forwards += 1
        return features

    def _to_device(self, wavs: Sequence) -> list[torch.Tensor]:
        return [torch.FloatTensor(wav).to(self.args.device) for wav in wavs]

    # --- evaluation -----------------------------------------------------------------------------------------

    def evaluate(self, heads: Sequence[Head], split: str, global_step: int, loggers: dict[str, Any]) -> dict[str, list]:
        """``Runner.evaluate(split)`` of every head from one pass over the split (each reseeds as s3prl does)."""
        started = time.perf_counter()
        seed_everything(self.args.seed)
        reseeded = RngState.capture()
        if torch.cuda.is_available() and torch.device(self.args.device).type == "cuda":
            with torch.cuda.device(self.args.device):
                torch.cuda.empty_cache()
        for head in heads:
            head.begin_evaluation(reseeded)
        lead = heads[0]
        iteration = SharedIteration(
            lambda: lead.runner.downstream.model.get_dataloader(split), [head.rng for head in heads]
        )
        ratio = float(self.config["runner"].get("evaluate_ratio", 1))
        evaluate_steps = round(len(iteration) * ratio)
        for batch_id, (wavs, *others) in enumerate(
            tqdm(iteration, dynamic_ncols=True, desc=split, total=evaluate_steps)
        ):
            if batch_id > evaluate_steps:
                break
            wavs = self._to_device(wavs)
            features = self.upstream_features(wavs, amp=False, phase="evaluation")
            for head in heads:
                head.evaluate_batch(split, wavs, features, others, batch_id)
        names = {
            head.name: head.end_evaluation(split, loggers[head.name], global_step, len(iteration)) for head in heads
        }
        self.timing["evaluation"] += time.perf_counter() - started
        return names

    # --- training pass --------------------------------------------------------------------------------------

    def _state_path(self, pass_index: int, step: int, rank: int | None = None) -> Path:
        rank = _rank() if rank is None else rank
        return self.sweep_dir / STATE_DIR / f"pass-{pass_index}.rank-{rank}.step-{step}.pt"

    def latest_state(self, pass_index: int) -> dict[str, Any] | None:
        """The newest saved state of a pass on this rank (steps as saved by the leader)."""
        folder = self.sweep_dir / STATE_DIR
        found = sorted(
            folder.glob(f"pass-{pass_index}.rank-{_rank()}.step-*.pt"), key=lambda p: int(p.stem.split("-")[-1])
        )
        if not found:
            return None
        state = read_restricted_pickle(
            found[-1], remedy=f"delete {found[-1]} to resume from the state before it, or rerun without -a"
        )
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise SharedSweepError(f"{found[-1]}: not a shared-sweep state of format {STATE_FORMAT}")
        return state

    def _save_state(self, pass_index: int, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self._state_path(pass_index, int(state["step"]))
        write_bytes_atomic(path, buffer.getvalue())
        older = sorted(
            path.parent.glob(f"pass-{pass_index}.rank-{_rank()}.step-*.pt"), key=lambda p: int(p.stem.split("-")[-1])
        )
        for stale in older[:-2]:
            stale.unlink()

    def _train_loader_factory(self, head: Head, split: str, epoch: int) -> Callable[[], Any]:
        """``get_dataloader(split, epoch=epoch)`` with s3prl's fallback for experts without ``epoch``."""
        from torch.utils.data import DistributedSampler

        def make():
            try:
                return head.runner.downstream.model.get_dataloader(split, epoch=epoch)
            except TypeError as error:
                if "unexpected keyword argument 'epoch'" not in str(error):
                    raise
                loader = head.runner.downstream.model.get_dataloader(split)
                if hasattr(loader, "sampler") and isinstance(loader.sampler, DistributedSampler):
                    loader.sampler.set_epoch(epoch)
                return loader

        return make

    def train_pass(self, pass_index: int, specs: Sequence[HeadSpec], resume: dict[str, Any] | None) -> list[Head]:
        """Train one pass's heads to ``total_steps`` (from ``resume``, a saved pass state, if given)."""
        runner_cfg = self.config["runner"]
        total = int(runner_cfg["total_steps"])
        train_split = runner_cfg.get("train_dataloader", "train")
        step = int(resume["step"]) if resume else 0
        epoch = int(resume["epoch"]) if resume else 0
        backward_steps = int(resume["backward_steps"]) if resume else 0
        saved_heads = resume["heads"] if resume else {}
        if resume and set(saved_heads) != {spec.name for spec in specs}:
            raise SharedSweepError(
                f"the saved pass {pass_index} trained {sorted(saved_heads)}, not {[s.name for s in specs]}: resume "
                "with the same --layers, --with-weighted-sum and --max-heads-per-pass"
            )

        heads: list[Head] = []
        for spec in specs:
            previous = saved_heads.get(spec.name)
            if previous is not None and previous["status"] != TRAINING:
                continue  # stopped (diverged) before the checkpoint: its results are written
            ckpt = spec.expdir(self.sweep_dir) / f"states-{step}.ckpt" if resume else None
            if ckpt is not None and not ckpt.is_file():
                raise SharedSweepError(f"cannot resume head {spec.name}: {ckpt} is missing")
            head = self.build_head(spec, ckpt)
            head.start_training()
            heads.append(head)
        by_name = {head.name: head for head in heads}
        parameters = sum(head.parameter_count() for head in heads)
        print(
            f"[shared sweep] - pass {pass_index}: {len(heads)} head(s), {parameters:,} trainable parameters, "
            f"~{parameters * 16 / 2**20:.1f} MiB of weights, gradients and Adam moments (float32)"
        )
        gradient_accumulate_steps = int(runner_cfg.get("gradient_accumulate_steps"))
        pbar = tqdm(total=total, initial=step, dynamic_ncols=True, desc=f"shared pass {pass_index}")
        streams_to_replay = resume["streams"] if resume else None
        active = [head for head in heads if head.status == TRAINING]

        while step < total and active:
            iterations = self._open_train_iterations(active, train_split, epoch, streams_to_replay, saved_heads)
            streams_to_replay = None
            batch_id = iterations[0][0].fetched
            while True:
                started = time.perf_counter()
                batches = []
                for iteration, _ in iterations:
                    try:
                        batches.append(next(iteration))
                    except StopIteration:
                        batches.append(None)
                self.timing["data"] += time.perf_counter() - started
                if all(batch is None for batch in batches):
                    break
                if any(batch is None for batch in batches):
                    raise SharedSweepError("loaders shared by different heads ended at different batches")
                if step >= total:
                    break
                global_step = step + 1
                self._train_batch(iterations, batches, train_split, batch_id, global_step)
                batch_id += 1
                backward_steps += 1
                if backward_steps % gradient_accumulate_steps > 0:
                    continue
                started = time.perf_counter()
                for head in active:
                    if head.status == TRAINING:
                        head.optimizer_step(global_step)
                self.timing["heads"] += time.perf_counter() - started
                active = [head for head in active if head.status == TRAINING]
                iterations = _without_stopped(iterations)
                if not active:
                    break
                step = global_step
                pbar.update(1)
                if not is_leader():
                    for head in active:
                        head.drop_records()
                    if global_step % runner_cfg["save_step"] == 0:
                        self._save_state(pass_index, self._pass_state(step, epoch, backward_steps, iterations, heads))
                    continue
                self._log_evaluate_save(active, iterations, train_split, global_step, epoch)
                if global_step % runner_cfg["save_step"] == 0:
                    self._save_state(pass_index, self._pass_state(step, epoch, backward_steps, iterations, heads))
                    for head in active:
                        head.prune_checkpoints()
            epoch += 1
        pbar.close()
        for head in heads:
            if head.status == TRAINING:
                head.finish_training()
        final = self._pass_state(step, epoch, backward_steps, [], heads, finished=True)
        for name, previous in saved_heads.items():
            if name not in by_name:
                final["heads"][name] = previous
        self._save_state(pass_index, final)
        return heads

    def _open_train_iterations(
        self,
        active: Sequence[Head],
        split: str,
        epoch: int,
        replay: Sequence[dict[str, Any]] | None,
        saved_heads: dict[str, Any],
    ) -> list[tuple[SharedIteration, list[Head]]]:
        """One shared loader per group of heads with identical generators; on resume, the saved loaders rebuilt
        from their creation states and advanced to where they stood, then every head's generators restored."""
        by_name = {head.name: head for head in active}
        iterations = []
        if replay is None:
            by_stream = {id(head.rng): head for head in active}
            for group in group_by_state([head.rng for head in active]):
                members = [by_stream[id(stream)] for stream in group]
                iteration = SharedIteration(self._train_loader_factory(members[0], split, epoch), group)
                iterations.append((iteration, members))
            return iterations
        for saved in replay:
            members = [by_name[name] for name in saved["heads"] if name in by_name]
            if not members:
                continue
            creation = RngState.from_dict(saved["creation"])
            for head in members:
                head.rng.state = creation
            iteration = SharedIteration(self._train_loader_factory(members[0], split, epoch), [h.rng for h in members])
            iteration.skip(int(saved["fetched"]))
            iterations.append((iteration, members))
        for head in active:
            head.load_state_dict(saved_heads[head.name])
        return iterations

    def _train_batch(self, iterations, batches, split: str, batch_id: int, global_step: int) -> None:
        amp = bool(self.config["runner"].get("fp16", False))
        computed: list[tuple[list, dict]] = []
        for (_, members), (wavs, *others) in zip(iterations, batches, strict=True):
            wavs = self._to_device(wavs)
            features = next((f for w, f in computed if _same_batch(w, wavs)), None)
            if features is None:
                features = self.upstream_features(wavs, amp)
                computed.append((wavs, features))
            started = time.perf_counter()
            for head in members:
                if head.status == TRAINING:
                    head.forward_backward(split, wavs, features, others, batch_id, global_step)
            self.timing["heads"] += time.perf_counter() - started

    def _log_evaluate_save(self, active, iterations, split: str, global_step: int, epoch: int) -> None:
        runner_cfg = self.config["runner"]
        started = time.perf_counter()
        if global_step % runner_cfg["log_step"] == 0:
            lengths = {head.name: len(it) for it, members in iterations for head in members}
            for head in active:
                head.log_training(split, global_step, lengths[head.name])
        self.timing["heads"] += time.perf_counter() - started
        save_names: dict[str, list[str]] = {head.name: [] for head in active}
        if global_step % runner_cfg["eval_step"] == 0:
            for eval_split in runner_cfg["eval_dataloaders"]:
                loggers = {head.name: head.logger for head in active}
                for name, names in self.evaluate(active, eval_split, global_step, loggers).items():
                    save_names[name] += names
        if global_step % runner_cfg["save_step"] == 0:
            for head in active:
                save_names[head.name].append(f"states-{global_step}.ckpt")
        started = time.perf_counter()
        for head in active:
            if save_names[head.name]:
                head.save(save_names[head.name], global_step, epoch)
        self.timing["checkpoints"] += time.perf_counter() - started

    def _pass_state(self, step, epoch, backward_steps, iterations, heads, finished: bool = False) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "finished": finished,
            "step": int(step),
            "epoch": int(epoch),
            "backward_steps": int(backward_steps),
            "streams": [
                {"heads": [h.name for h in members], "creation": it.creation_state.to_dict(), "fetched": it.fetched}
                for it, members in iterations
            ],
            "heads": {head.name: head.state_dict() for head in heads},
        }

    # --- test evaluation of the best dev checkpoints ------------------------------------------------------------

    def test_pass(self, specs: Sequence[HeadSpec], split: str) -> None:
        """``run_downstream.py -m evaluate -e <best> -t split`` of every head, from one pass over the split."""
        heads = []  # built on every rank: under torchrun, s3prl wraps each expert in DDP (a collective)
        for spec in specs:
            best = best_checkpoint(spec.expdir(self.sweep_dir))
            device = ["--device", self.options.device] if self.options.device else []
            args, config, _ = parse_run_args(["-m", "evaluate", "-e", str(best), "-t", split, *device])
            write_run_files(args, config, [])
            head = self.new_head(spec, args, config)
            head.runner._phase = "evaluate"
            heads.append(head)
        if not heads or not is_leader():  # s3prl evaluates on the leader only
            return
        loggers, closers = {}, []
        for head in heads:
            loggers[head.name], close = temporary_logger()
            closers.append(close)
        try:
            self.evaluate(heads, split, 0, loggers)
        finally:
            for close in closers:
                close()
        for head in heads:
            head.runner._write_evaluation_results(split)

    def describe_timing(self) -> str:
        """Where the time went (upstream forwards vs heads) and the peak memory of this process."""
        import resource

        t = self.timing
        upstream = t["upstream_train"] + t["upstream_evaluation"]
        heads = t["heads"] + t["evaluation"] - t["upstream_evaluation"]
        total = upstream + heads + t["data"] + t["checkpoints"]
        share = (lambda x: 100.0 * x / total) if total > 0 else (lambda x: 0.0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        lines = [
            f"upstream forwards: {self.upstream_forwards}",
            (
                f"time: upstream {upstream:.2f} s ({share(upstream):.0f}%), heads {heads:.2f} s ({share(heads):.0f}%), "
                f"data {t['data']:.2f} s ({share(t['data']):.0f}%), checkpoints {t['checkpoints']:.2f} s"
            ),
            f"setup (upstream and heads built): {t['setup']:.2f} s; evaluation {t['evaluation']:.2f} s",
            f"peak memory: {peak:.0f} MiB resident",
        ]
        if torch.cuda.is_available() and torch.device(self.args.device).type == "cuda":
            lines.append(f"peak GPU memory: {torch.cuda.max_memory_allocated(self.args.device) / 2**20:.0f} MiB")
        if self.feature_source is not None and hasattr(self.feature_source, "hits"):
            lines.append(
                f"feature cache: {self.feature_source.hits} batches read, {self.feature_source.misses} run live"
            )
        return "\n".join(lines)

    # --- the whole sweep ------------------------------------------------------------------------------------

    def run(self, evaluate: bool, test_split: str) -> None:
        if self.upstream is None:
            self.start()
        print(describe_plan(self.passes))
        for index, specs in enumerate(self.passes):
            todo = [spec for spec in specs if not _head_done(spec.expdir(self.sweep_dir), evaluate, test_split)]
            if not todo:
                continue
            state = self.latest_state(index) if self.options.resume else None
            if state is None or not state["finished"]:
                if state is None:
                    _refuse_stale_folders(self.sweep_dir, specs, self.options.resume)
                self.train_pass(index, specs, state)
                state = self.latest_state(index)
                if state is None:
                    raise SharedSweepError(f"pass {index} saved no state in {self.sweep_dir / STATE_DIR}")
            statuses = {spec.name: state["heads"].get(spec.name, {}) for spec in specs}
            _barrier()  # every rank done, every checkpoint written
            for spec in specs:
                mark_shared(spec.expdir(self.sweep_dir), index, statuses[spec.name])
            _barrier()
            if evaluate:
                untested = [s for s in specs if not _head_done(s.expdir(self.sweep_dir), True, test_split)]
                self.test_pass([s for s in untested if statuses[s.name].get("status") != DIVERGED], test_split)
                for spec in specs:
                    mark_shared(spec.expdir(self.sweep_dir), index, statuses[spec.name])
            _barrier()


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


@contextmanager
def memoized_forward(model: torch.nn.Module) -> Iterator[None]:
    """Hand every head the upstream's output for the random second of audio s3prl's ``Featurizer`` runs it on when
    it is built: every head starts from the same generators, so draws the same second; it is computed once."""
    original = model.forward
    memo: list[tuple[list[torch.Tensor], Any]] = []

    def forward(wavs, *args, **kwargs):
        if not args and not kwargs and memo and _same_batch(memo[0][0], wavs):
            return memo[0][1]
        output = original(wavs, *args, **kwargs)
        memo[:] = [([wav.clone() for wav in wavs], output)]
        return output

    model.forward = forward
    try:
        yield
    finally:
        del model.forward


def _without_stopped(iterations):
    """The loaders with the stopped (diverged) heads taken out, and those left without heads dropped."""
    kept = []
    for iteration, members in iterations:
        for head in members:
            if head.status != TRAINING:
                iteration.drop(head.rng)
        members = [head for head in members if head.status == TRAINING]
        if members:
            kept.append((iteration, members))
    return kept


def _same_batch(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _head_done(expdir: Path, evaluate: bool, test_split: str) -> bool:
    results = result_files.read_results(expdir)
    if results is None or "sweep" not in results:
        return False
    if results["sweep"].get("status") == DIVERGED:
        return True
    return not evaluate or test_split in results.get("evaluated_checkpoints", {})


def _refuse_stale_folders(sweep_dir: Path, specs: Sequence[HeadSpec], resume: bool = False) -> None:
    for spec in specs:
        if list(spec.expdir(sweep_dir).glob("states-*.ckpt")):
            if resume:
                raise SharedSweepError(
                    f"{spec.expdir(sweep_dir)} holds checkpoints but {sweep_dir / STATE_DIR} has no saved state of "
                    "its pass (deleted?): the heads cannot be resumed exactly; start afresh in another -p"
                )
            raise FileExistsError(
                f"{spec.expdir(sweep_dir)} already holds checkpoints; resume the sweep with -a, or choose a new -p"
            )


def mark_shared(expdir: Path, pass_index: int, head_state: dict[str, Any]) -> None:
    """Add the ``sweep`` field (this head was trained in a shared sweep, and how it ended) to results.json."""
    if not is_leader():
        return
    results = result_files.read_results(expdir)
    if results is None:
        return
    results["sweep"] = {
        "shared": True,
        "pass": pass_index,
        "status": head_state.get("status", FINISHED),
        "diverged_step": head_state.get("diverged_step"),
    }
    result_files.write_results(expdir, results)


# ----------------------------------------------------------------------------------------------------------------
# entry point


def run_shared_sweep(options: SharedSweepOptions) -> tuple[dict[str, Any], SharedSweep]:
    """Train every head (in passes), evaluate the best dev checkpoints on the test split, write ``sweep.json``.

    Returns the sweep document and the finished ``SharedSweep`` (its ``timing`` and ``upstream_forwards``).
    """
    spec = tasks.task_for(options.task)
    if spec is None:
        raise UsageError(f"unknown task {options.task!r}; choose one of {', '.join(tasks.TASKS)}")
    run_downstream.prepare_s3prl()
    sweep_dir = Path(options.sweep_dir)
    leader = experiment.is_leader_launch()
    shared = SharedSweep(options)
    with folder_lock(sweep_dir) if leader else nullcontext(), s3prl_process(shared.args):
        shared.start()
        heads = [sweep_dir / head.name for head in shared.specs]
        # every layer folder under the lock run_downstream.py takes, so neither writes into the other's run
        with folder_locks(heads) if leader else nullcontext():
            if leader:
                started = (sweep_dir / STATE_DIR).is_dir() or any(
                    (folder / result_files.RESULTS_FILE).exists() or any(folder.glob("states-*.ckpt"))
                    for folder in heads
                )
                check_settings(sweep_dir, shared.settings(), remedy=SETTINGS_REMEDY, started=started)
            if options.cache_features is not None:
                shared.feature_source = cache_for_sweep(shared, Path(options.cache_features))
            shared.run(options.evaluate, spec.test_split)
    all_layers, specs = shared.all_layers, shared.specs

    document = new_document(spec, options.upstream, options.upstream_ckpt)
    document["shared"] = {
        "passes": [[head.name for head in group] for group in shared.passes],
        "feature_cache": str(Path(options.cache_features).resolve()) if options.cache_features else None,
    }
    for head in specs:
        entry = run_entry(head.name, all_layers.index(head.layer) if head.layer else None, sweep_dir / head.name)
        results = result_files.read_results(sweep_dir / head.name) or {}
        entry["status"] = results.get("sweep", {}).get("status", "missing")
        if entry["status"] == DIVERGED:
            entry["diverged_step"] = results["sweep"].get("diverged_step")
        if head.layer is None:
            entry["layer_weights"] = str((sweep_dir / head.name / result_files.LAYER_WEIGHTS_FILE).resolve())
            document["weighted_sum"] = entry
        else:
            document["layers"].append(entry)
    document["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if is_leader():
        result_files.write_sweep(sweep_dir, document)
    return document, shared
