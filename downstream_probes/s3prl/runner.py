"""s3prl's ``Runner`` with what SUPERB probing needs on top: layers by name, results capture, layer-weight export.

Importing this module imports nothing of s3prl and patches nothing: :func:`make_probe_runner` builds the class on
s3prl's ``Runner`` once the compatibility fixes are applied (``run_downstream.prepare_s3prl``). Nothing of s3prl's
training or evaluation loop is replaced: the subclass resolves ``-l NAME`` before s3prl builds its ``Featurizer``, taps the
scalars the expert logs in ``log_records`` and, once ``train``/``evaluate`` returns, writes ``results.json``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from downstream_probes import result_files, tasks
from downstream_probes.data_checks import check_corpus
from downstream_probes.paths import recipes_dir
from downstream_probes.s3prl.experiment import check_runner_config
from upstream_mrhubert.errors import UsageError

LOGGER = logging.getLogger(__name__)
RECIPES_TOKEN = "{recipes}"
PLACEHOLDER_PREFIX = "/path/to/"
LAYER_WEIGHTS_EXPORTER = "downstream_probes.analysis.layer_weights"


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


def is_leader_process() -> bool:
    """s3prl's rule (rank 0, or no process group): only the leader writes files."""
    from s3prl.utility.helper import is_leader_process as s3prl_is_leader

    return bool(s3prl_is_leader())


def expand_recipe_paths(config: Any, recipes: Path) -> Any:
    """Replace ``{recipes}`` in every string of the config (in place) by the absolute recipes folder.

    Our configs name their dictionaries/vocabularies relative to ``recipes/``; s3prl would resolve them against
    the current directory.
    """
    if isinstance(config, dict):
        for key, value in config.items():
            config[key] = expand_recipe_paths(value, recipes)
    elif isinstance(config, list):
        return [expand_recipe_paths(value, recipes) for value in config]
    elif isinstance(config, str) and RECIPES_TOKEN in config:
        return config.replace(RECIPES_TOKEN, str(recipes))
    return config


def unset_data_paths(config: Any, prefix: str = "config") -> list[str]:
    """Config keys still holding a ``/path/to/...`` placeholder."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            found += unset_data_paths(value, f"{prefix}.{key}")
    elif isinstance(config, str) and config.startswith(PLACEHOLDER_PREFIX):
        found.append(prefix)
    return found


if TYPE_CHECKING:

    class _RunnerBase:
        """What the mixin overrides of s3prl's (untyped) ``Runner`` and reaches through ``super()``; the real base is
        only known at run time (:func:`make_probe_runner`)."""

        def __init__(self, args: Any, config: Any) -> None: ...
        def _get_featurizer(self) -> Any: ...
        def _get_downstream(self) -> Any: ...
        def train(self) -> None: ...
        def evaluate(self, split: str | None = None, logger: Any = None, global_step: int = 0) -> Any: ...

else:
    _RunnerBase = object


class ProbeRunnerMixin(_RunnerBase):
    """What a ProbeRunner adds to s3prl's Runner: layer names, results.json and layer-weight export.

    Mixed in before s3prl's ``Runner`` by :func:`make_probe_runner`; every ``super()`` call reaches s3prl's code.
    """

    args: Any
    config: Any
    upstream: Any
    init_ckpt: Any

    requested_layer_name: str | None = None

    def __init__(self, args: Any, config: Any) -> None:
        check_runner_config(config)  # before the upstream is built: a 0 here was a ZeroDivisionError in training
        expand_recipe_paths(config, recipes_dir())
        missing = unset_data_paths(config)
        if missing and args.mode != "inference":
            overrides = ",,".join(f"{key}=/your/data" for key in missing)
            raise UsageError(
                f"data path(s) not set in the config: {', '.join(missing)}; point them at your corpus with "
                f'-o "{overrides}"'
            )
        self.spec = tasks.task_for(args.downstream)
        if self.spec is not None and args.mode != "inference":
            check_corpus(self.spec.task, config.get("downstream_expert", {}))  # before the upstream is built
        super().__init__(args, config)

    # --- layers by name -----------------------------------------------------------------------------------

    def upstream_layer_names(self) -> list[str] | None:
        names = getattr(_unwrap(self.upstream.model), "layer_names", None)
        return list(names) if names is not None else None

    def _get_featurizer(self) -> Any:
        name = self.requested_layer_name
        if name is not None and self.args.upstream_layer_selection is None:
            names = self.upstream_layer_names()
            if names is None:
                raise UsageError(
                    f"-l {name}: upstream {self.args.upstream!r} does not expose layer_names; select the layer by index"
                )
            if name not in names:
                raise UsageError(
                    f"-l {name}: upstream {self.args.upstream!r} has no layer {name!r}; its layers: {names}"
                )
            self.args.upstream_layer_selection = names.index(name)
        self._check_layer_index()
        try:
            return super()._get_featurizer()
        except IndexError:  # an upstream without layer_names: s3prl's Featurizer indexes its hidden states
            raise UsageError(
                f"-l {self.args.upstream_layer_selection}: upstream {self.args.upstream!r} has fewer layers; "
                "pass a smaller index (0 is the first, -1 the last)"
            ) from None

    def _check_layer_index(self) -> None:
        """``-l N`` within the upstream's layers; a negative N (``-1``: the last) becomes the layer's own index, so
        results.json records the layer's name."""
        index = self.args.upstream_layer_selection
        names = self.upstream_layer_names()
        if index is None or names is None:
            return
        if not -len(names) <= index < len(names):
            raise UsageError(
                f"-l {index}: upstream {self.args.upstream!r} has {len(names)} layers (indices 0 to {len(names) - 1}, "
                f"or -1 for the last; or a name): {', '.join(names)}"
            )
        self.args.upstream_layer_selection = index % len(names)

    def layer_selection(self) -> dict[str, Any]:
        index = self.args.upstream_layer_selection
        if index is None:
            return {"mode": "weighted_sum"}
        names = self.upstream_layer_names()
        label = names[index] if names is not None and 0 <= index < len(names) else str(index)
        return {"mode": "single", "layer": label, "index": int(index)}

    # --- metric capture -----------------------------------------------------------------------------------

    def _get_downstream(self) -> Any:
        entry = super()._get_downstream()
        original = entry.model.log_records

        @functools.wraps(original)
        def log_records(split, *args, logger=None, global_step=0, **kwargs):
            tap = tasks.ScalarTap(logger)
            returned = original(split, *args, logger=tap, global_step=global_step, **kwargs)
            if split != self.config["runner"].get("train_dataloader", "train"):
                self._record_evaluation(split, global_step, tap.scalars)
            return returned

        entry.model.log_records = log_records
        return entry

    def _record_evaluation(self, split: str, global_step: int, scalars: dict[str, float]) -> None:
        training = self._phase == "train"
        step = int(global_step) if training else int(self.init_ckpt.get("Step", 0))
        record = {
            "phase": self._phase,
            "split": split,
            "step": step,
            "metrics": tasks.metrics_from_scalars(self.spec, split, scalars),
            "scalars": scalars,
        }
        if is_leader_process():
            result_files.append_evaluation(self.args.expdir, record)
        self._last_evaluation = record

    # --- train / evaluate ---------------------------------------------------------------------------------

    _phase = "train"
    _last_evaluation: dict[str, Any] | None = None

    def train(self) -> None:
        self._phase = "train"
        if is_leader_process():
            result_files.truncate_evaluations(self.args.expdir, self.init_ckpt.get("Step"))
        super().train()
        if is_leader_process():
            self._write_training_results()
            self._export_layer_weights()

    def evaluate(self, split: str | None = None, logger: Any = None, global_step: int = 0) -> Any:
        from_command_line = split is None and logger is None and global_step == 0
        if not from_command_line:
            return super().evaluate(split, logger, global_step)
        self._phase = "evaluate"
        returned = super().evaluate(split, logger, global_step)
        self._write_evaluation_results(self.args.evaluate_split)
        return returned

    # --- results.json -------------------------------------------------------------------------------------

    def _base_results(self, metrics: dict[str, dict[str, float]], best_step: int | None) -> dict[str, Any]:
        spec = self.spec
        return result_files.new_results(
            task=spec.task if spec else self.args.downstream,
            upstream=self.args.upstream,
            layer_selection=self.layer_selection(),
            metrics=metrics,
            test_split=spec.test_split if spec else self.args.evaluate_split,
            best_step=best_step,
            config=self.config,
            seed=int(self.args.seed),
            expdir=self.args.expdir,
            extra={
                "upstream_ckpt": self.args.upstream_ckpt,
                "downstream": self.args.downstream,
                "total_steps": int(self.config["runner"]["total_steps"]),
            },
        )

    def _write_training_results(self) -> None:
        evaluations = result_files.read_evaluations(self.args.expdir)
        eval_splits = list(self.config["runner"].get("eval_dataloaders", []))
        dev_split = eval_splits[0] if eval_splits else (self.spec.dev_split if self.spec else "dev")
        best_step, metrics = result_files.best_training_step(self.spec, evaluations, dev_split)
        if best_step is None:
            best_step = int(self.config["runner"]["total_steps"])
        results = self._base_results(metrics, best_step)
        results["history"] = [r for r in evaluations if r.get("phase") == "train"]
        result_files.write_results(self.args.expdir, results)

    def _write_evaluation_results(self, split: str) -> None:
        if not is_leader_process() or self._last_evaluation is None:
            return
        metrics = dict(self._last_evaluation["metrics"])
        extra: dict[str, Any] = {}
        if self.spec is not None and self.spec.task == "sd" and split == "test":
            metrics.update(self._score_diarization(extra))
        step = int(self.init_ckpt.get("Step", 0))
        previous = result_files.read_results(self.args.expdir) or {}
        same_run = (
            previous.get("task") == (self.spec.task if self.spec else self.args.downstream)
            and previous.get("upstream") == self.args.upstream
        )
        all_metrics = dict(previous.get("metrics", {})) if same_run else {}
        all_metrics[split] = metrics
        results = self._base_results(all_metrics, step)
        if same_run and "history" in previous:
            results["history"] = previous["history"]
        evaluated = dict(previous.get("evaluated_checkpoints", {})) if same_run else {}
        evaluated[split] = {"checkpoint": str(self.args.init_ckpt), "step": step, **extra}
        results["evaluated_checkpoints"] = evaluated
        result_files.write_results(self.args.expdir, results)

    def _score_diarization(self, extra: dict[str, Any]) -> dict[str, float]:
        # here, not at the top: pyannote (with pandas and matplotlib, a second to import) scores SD only
        from downstream_probes.s3prl.diarization import score_expdir

        score = score_expdir(self.args.expdir, self.config["downstream_expert"]["loaderrc"]["test_dir"])
        extra["der_threshold"] = score.threshold
        extra["der_median_filter"] = score.median
        extra["der_grid"] = score.grid
        return {"der": score.der}

    # --- layer weights ------------------------------------------------------------------------------------

    def _export_layer_weights(self) -> None:
        """Call the analysis exporter (``export_layer_weights(expdir)``) when it is installed."""
        if self.args.upstream_layer_selection is not None:
            return
        if importlib.util.find_spec(LAYER_WEIGHTS_EXPORTER) is None:
            LOGGER.warning("%s not available: layer_weights.json not written", LAYER_WEIGHTS_EXPORTER)
            return
        exporter = importlib.import_module(LAYER_WEIGHTS_EXPORTER)
        names = self.upstream_layer_names()
        try:
            exporter.export_layer_weights(self.args.expdir, layer_names=names, resolve_upstream=names is None)
        except FileNotFoundError as error:  # no checkpoint saved (total_steps not a multiple of save_step)
            LOGGER.warning("layer_weights.json not written: %s", error)


def make_probe_runner(layer_name: str | None) -> type:
    """A ProbeRunner class (our mixin on s3prl's ``Runner``) that resolves ``-l layer_name`` (None: ``-l`` was absent
    or an index). Needs the compatibility fixes applied first: importing s3prl's runner imports its hub."""
    from s3prl.downstream.runner import Runner

    return type("ProbeRunner", (ProbeRunnerMixin, Runner), {"requested_layer_name": layer_name})
