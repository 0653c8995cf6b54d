"""One probe of a shared sweep: s3prl's runner and downstream expert for one layer, on a shared upstream.

A ``Head`` is what one ``run_downstream.py -m train [-l LAYER]`` process holds apart from the upstream: the
``ProbeRunner`` (built by s3prl's own ``Runner.__init__``: ``Featurizer`` with its layer selection, the expert,
DDP wrapping under torchrun), its optimizer, scheduler, gradient scaler and SpecAugment, its tensorboard writer,
its ``records`` between two ``log_step``s, and its own random generators (``RngStream``). Each method is one
piece of s3prl 0.4.18's ``Runner.train``/``Runner.evaluate``, in the same order, on the head's generators, so
a head trained on the batches its separate run would see ends where that run ends.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from downstream_probes import result_files
from downstream_probes.s3prl.rng import RngState, RngStream
from downstream_probes.s3prl.runner import make_probe_runner
from upstream_mrhubert.atomic_io import write_bytes_atomic

TRAINING, FINISHED, DIVERGED = "training", "finished", "diverged"


def head_runner_class(layer_name: str | None, upstream_entry: Any) -> type:
    """A ``ProbeRunner`` class that resolves ``-l layer_name`` and takes ``upstream_entry`` as its upstream."""

    def _get_upstream(self):
        return upstream_entry

    return type("SharedProbeRunner", (make_probe_runner(layer_name),), {"_get_upstream": _get_upstream})


def _autocast(device: str, enabled: bool):
    """s3prl's ``torch.cuda.amp.autocast(enabled=amp)``, on whatever device the run uses."""
    return torch.autocast(device_type=torch.device(device).type, enabled=enabled)


class Head:
    """One probe: its runner, its training state and its generators.

    Args:
        name: the head's folder under the sweep (a layer name, or ``weighted_sum``).
        layer: the upstream layer (``-l``), None for the weighted sum.
        args, config: what s3prl's ``get_downstream_args`` returns for the head's own command line.
        upstream_entry: s3prl's ``ModelEntry`` of the shared, frozen upstream.
        start: the generators' state right after the (shared) upstream was built.
    """

    def __init__(self, name: str, layer: str | None, args: Any, config: dict, upstream_entry: Any, start: RngState):
        self.name = name
        self.layer = layer
        self.rng = RngStream(start)
        with self.rng.active():
            self.runner = head_runner_class(layer, upstream_entry)(args, config)
        self.args = self.runner.args
        self.config = self.runner.config
        self.status = TRAINING
        self.diverged_step: int | None = None
        self.records: defaultdict = defaultdict(list)
        self.batch_ids: list[int] = []
        self._trainings: list[bool] = []

    # --- sizes (for the memory plan) ------------------------------------------------------------------------

    def parameter_count(self) -> int:
        return sum(p.numel() for entry in self.runner.all_entries[1:] for p in entry.model.parameters())

    # --- Runner.train, its preamble -------------------------------------------------------------------------

    def start_training(self) -> None:
        """Everything ``Runner.train`` sets up before its loop, on the head's generators."""
        from s3prl.utility.helper import is_leader_process
        from tensorboardX import SummaryWriter

        runner = self.runner
        runner._phase = "train"
        with self.rng.active():
            if is_leader_process():
                result_files.truncate_evaluations(self.args.expdir, runner.init_ckpt.get("Step"))
            self.trainable_models, self.trainable_paras = [], []
            for entry in runner.all_entries:
                if entry.trainable:
                    entry.model.train().to(self.args.device)
                    self.trainable_models.append(entry.model)
                    self.trainable_paras += list(entry.model.parameters())
                else:
                    entry.model.eval()
            self.amp = bool(self.config["runner"].get("fp16", False))
            self.scaler = torch.cuda.amp.GradScaler() if self.amp else None
            self.optimizer = runner._get_optimizer(self.trainable_models)
            self.scheduler = runner._get_scheduler(self.optimizer) if self.config.get("scheduler") else None
            self.specaug = None
            if self.config.get("specaug"):
                from s3prl.downstream.specaug import SpecAug

                self.specaug = SpecAug(**self.config["specaug"])
            self.logger = SummaryWriter(self.args.expdir) if is_leader_process() else None
        self.gradient_accumulate_steps = self.config["runner"].get("gradient_accumulate_steps")

    # --- one batch --------------------------------------------------------------------------------------------

    def forward_backward(
        self,
        split: str,
        wavs: Sequence[torch.Tensor],
        upstream_output: dict,
        others: Sequence[Any],
        batch_id: int,
        global_step: int,
    ) -> None:
        """Featurizer, SpecAugment, expert forward and backward of one training batch (a non-finite loss stops
        the head: it is marked diverged and does no more work)."""
        with self.rng.active():
            with _autocast(self.args.device, self.amp):
                features = self.runner.featurizer.model(wavs, upstream_output)
                if self.specaug:
                    features, _ = self.specaug(features)
                loss = self.runner.downstream.model(split, features, *others, records=self.records)
            if not _finite_everywhere(loss, self.args.device):
                self.diverge(global_step)
                return
            self.batch_ids.append(batch_id)
            loss = loss / self.gradient_accumulate_steps
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            del loss

    def optimizer_step(self, global_step: int) -> None:
        """Unscale, clip, step (or skip a NaN gradient norm, as s3prl does), zero the gradients, schedule."""
        with self.rng.active():
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_paras, self.config["runner"]["gradient_clipping"])
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            elif math.isnan(grad_norm):
                print(f"[Runner] - {self.name}: grad norm is NaN at step {global_step}")
            else:
                self.optimizer.step()
            self.optimizer.zero_grad()
            if self.scheduler:
                self.scheduler.step()

    def drop_records(self) -> None:
        """What a non-leader rank does instead of logging."""
        self.batch_ids = []
        self.records = defaultdict(list)

    def log_training(self, split: str, global_step: int, total_batch_num: int) -> None:
        with self.rng.active():
            self.runner.downstream.model.log_records(
                split,
                records=self.records,
                logger=self.logger,
                global_step=global_step,
                batch_ids=self.batch_ids,
                total_batch_num=total_batch_num,
            )
        self.drop_records()

    def diverge(self, global_step: int) -> None:
        """Stop this head: the loss of step ``global_step`` is not finite."""
        self.status = DIVERGED
        self.diverged_step = int(global_step)
        self.optimizer.zero_grad()
        print(f"[shared sweep] - head {self.name}: loss is not finite at step {global_step}; head stopped")
        self.finish_training()

    # --- evaluation (Runner.evaluate, split into the parts around the shared batches) --------------------------

    def begin_evaluation(self, state: RngState) -> None:
        """Reseeded generators (``state``), every entry in eval mode, fresh records."""
        self.rng.state = state
        self._trainings = [entry.model.training for entry in self.runner.all_entries]
        for entry in self.runner.all_entries:
            entry.model.eval()
        self.eval_records: defaultdict = defaultdict(list)
        self.eval_batch_ids: list[int] = []

    def evaluate_batch(
        self, split: str, wavs: Sequence[torch.Tensor], upstream_output: dict, others: Sequence[Any], batch_id: int
    ) -> None:
        with self.rng.active(), torch.no_grad():
            features = self.runner.featurizer.model(wavs, upstream_output)
            self.runner.downstream.model(split, features, *others, records=self.eval_records, batch_id=batch_id)
            self.eval_batch_ids.append(batch_id)

    def end_evaluation(self, split: str, logger: Any, global_step: int, total_batch_num: int) -> list[str]:
        """``log_records`` of the evaluation (the runner taps it into ``evaluations.jsonl``); training modes back.
        Returns the checkpoint names the expert asks to save (``dev-best.ckpt``)."""
        with self.rng.active():
            save_names = self.runner.downstream.model.log_records(
                split,
                records=self.eval_records,
                logger=logger,
                global_step=global_step,
                batch_ids=self.eval_batch_ids,
                total_batch_num=total_batch_num,
            )
        self.eval_records = defaultdict(list)
        self.eval_batch_ids = []
        for entry, training in zip(self.runner.all_entries, self._trainings, strict=True):
            if training:
                entry.model.train().to(self.args.device)
        return save_names if type(save_names) is list else []

    # --- checkpoints ------------------------------------------------------------------------------------------

    def checkpoint(self, global_step: int, epoch: int) -> dict[str, Any]:
        """s3prl's ``all_states`` (the same keys, so ``run_downstream.py -e`` and ``-m evaluate`` read it)."""
        from s3prl.utility.helper import get_model_state
        from torch.distributed import get_world_size, is_initialized

        states: dict[str, Any] = {
            "Optimizer": self.optimizer.state_dict(),
            "Step": global_step,
            "Epoch": epoch,
            "Args": self.args,
            "Config": self.config,
        }
        for entry in self.runner.all_entries:
            if entry.trainable:
                states[entry.name] = get_model_state(entry.model)
        if self.scheduler:
            states["Scheduler"] = self.scheduler.state_dict()
        if is_initialized():
            states["WorldSize"] = get_world_size()
        return states

    def save(self, names: Sequence[str], global_step: int, epoch: int) -> None:
        """Write the checkpoint under each of ``names`` in the head's folder, atomically."""
        buffer = io.BytesIO()
        torch.save(self.checkpoint(global_step, epoch), buffer)
        for name in names:
            write_bytes_atomic(Path(self.args.expdir) / name, buffer.getvalue())

    def prune_checkpoints(self) -> None:
        """Keep the newest ``max_keep`` ``states-*.ckpt`` (s3prl's ``check_ckpt_num``, after the save)."""
        max_keep = int(self.config["runner"]["max_keep"])
        states = sorted(Path(self.args.expdir).glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
        for path in states[: max(0, len(states) - max_keep)]:
            path.unlink()

    # --- end of training ----------------------------------------------------------------------------------

    def finish_training(self) -> None:
        """Close the writer; on the leader, results.json from the evaluation log and (weighted sum) the layer
        weights, as ``ProbeRunner.train`` does after s3prl's loop."""
        from s3prl.utility.helper import is_leader_process

        if self.status == TRAINING:
            self.status = FINISHED
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if is_leader_process():
            self.runner._write_training_results()
            if self.status == FINISHED:
                self.runner._export_layer_weights()

    # --- resumable state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.state.to_dict(),
            "records": dict(self.records),
            "batch_ids": list(self.batch_ids),
            "status": self.status,
            "diverged_step": self.diverged_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.state = RngState.from_dict(state["rng"])
        self.records = defaultdict(list, state["records"])
        self.batch_ids = list(state["batch_ids"])
        self.status = state["status"]
        self.diverged_step = state["diverged_step"]


def _finite_everywhere(loss: torch.Tensor, device: str) -> bool:
    """Whether the loss is finite on every rank (all ranks stop a head together, or DDP would hang)."""
    finite = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        finite = finite.to(device)
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item() > 0)


def temporary_logger():
    """The throw-away writer s3prl's command-line ``evaluate`` uses, and a function removing it."""
    from tensorboardX import SummaryWriter

    folder = tempfile.mkdtemp()
    writer = SummaryWriter(folder)

    def close() -> None:
        writer.close()
        shutil.rmtree(folder, ignore_errors=True)

    return writer, close
