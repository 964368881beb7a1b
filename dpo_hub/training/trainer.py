"""dpo_hub's one boundary with trl: ``DpoHubTrainer``, a ``DPOTrainer`` that changes public methods only.

- ``compute_loss``: the batch carries its reference log-probs from a :class:`~dpo_hub.training.reference.
  ReferenceCache` (pairs not known yet are computed first), so trl does not run the reference model. The
  first training step checks that trl really read them (one model forward per loss, not two); if it did not,
  the cache turns itself off, says so, and the ``reference_cache`` lever reports it.
- ``compute_loss_context_manager``: activations saved for the backward pass in bf16
  (``dpo.saved_activations``).
- ``train`` and ``evaluate``: the levers' trl globals and model wrappers are set only inside them
  (:meth:`levers_on`) and restored afterwards, so trl used directly in the same process behaves as trl.

Each lever's state is in ``trainer.levers`` (name -> :class:`~dpo_hub.training.levers.Lever`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from trl import DPOTrainer

from dpo_hub import upstream
from dpo_hub.training import deepspeed_cpu, fsdp_cpu
from dpo_hub.training.levers import Lever

log = logging.getLogger("dpo_hub")
_UNSET = object()


class DpoHubTrainer(DPOTrainer):
    """``trl.DPOTrainer`` plus dpo_hub's reference cache and speed levers; without them it is trl's
    trainer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.levers: dict[str, Lever] = {}
        self.reference_cache: Any = None
        self._globals: list[tuple[upstream.Private, Any]] = []
        self._attributes: list[tuple[Any, str, Any]] = []
        self._bf16_hooks: tuple[Any, Any] | None = None
        self._depth = 0
        self._forwards = 0
        self._checked_reference = False
        self.weights_need_autocast = False  # set by the bf16_base_weights lever
        # over the whole run, a tensor (no device sync per step): a resume starts from the checkpoint's
        self.train_loss_sum: Any = 0.0  # (RunTotals converts it to a float where it is saved or read)
        self._checked_wrapping = False
        if self.is_fsdp_enabled:
            self.add_callback(fsdp_cpu.ShardLog())

    def create_accelerator_and_postprocess(self) -> None:
        """transformers' accelerator; an FSDP launch on the CPU gets FSDP2 (:mod:`~dpo_hub.training.fsdp_cpu`)
        instead of accelerate's quiet DDP; a DeepSpeed launch on the CPU is checked to be DeepSpeed
        (:mod:`~dpo_hub.training.deepspeed_cpu`)."""
        super().create_accelerator_and_postprocess()
        if fsdp_cpu.wanted():
            fsdp_cpu.enable(self)
        elif deepspeed_cpu.wanted() and self.accelerator.device.type == "cpu":
            deepspeed_cpu.confirm(self)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """transformers' ``save_model``; under FSDP on the CPU the full state dict is gathered on every rank
        and the main process writes it (a normal peft adapter)."""
        if not getattr(self, "fsdp_on_cpu", False):
            return super().save_model(output_dir, _internal_call)
        state_dict = fsdp_cpu.full_state_dict(self.model)
        if self.args.should_save:
            self._save(output_dir or self.args.output_dir, state_dict=state_dict)

    # --- setup, called once after construction -------------------------------------------------------------
    def add_levers(
        self,
        levers: dict[str, Lever],
        trl_globals: list | None = None,
        attributes: list[tuple[Any, str, Any]] | None = None,
    ) -> None:
        """Record levers; ``trl_globals`` ((Private, value)) and ``attributes`` ((object, name, value)) are
        set only while the trainer trains or evaluates."""
        self.levers.update(levers)
        self._globals += trl_globals or []
        self._attributes += attributes or []

    def use_reference_cache(self, cache: Any) -> None:
        """Read each batch's reference log-probs from ``cache`` instead of running the base model every
        step."""
        self.reference_cache = cache
        self.precompute_ref_logps = (
            True  # trl's switch: take ref_chosen_logps/ref_rejected_logps from the batch
        )
        self.model.register_forward_pre_hook(self._count_forward)
        self.levers["reference_cache"] = Lever(
            True, f"per pair, computed on first use, kept in {cache.folder}"
        )

    def keep_activations_in_bf16(self, hooks: tuple[Any, Any]) -> None:
        """Store the activations a step saves for its backward pass with ``hooks``
        (``saved_tensors_hooks``)."""
        self._bf16_hooks = hooks

    # --- trl's public methods ------------------------------------------------------------------------------
    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        # bf16-stored base weights: whoever calls, the step's autocast
        autocast = self.accelerator.autocast() if self.weights_need_autocast else contextlib.nullcontext()
        with autocast:
            return self._compute_loss_with_levers(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss_with_levers(
        self, model: Any, inputs: Any, return_outputs: bool, num_items_in_batch: Any
    ) -> Any:
        if self.reference_cache is None:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        with self.levers_on():  # cached values are computed the same way whoever calls
            inputs = self.reference_cache.fill(model, inputs)
        before = self._forwards
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not return_outputs and not self._checked_reference:  # return_outputs adds a forward of trl's own
            self._checked_reference = True
            if self._forwards - before > 1:
                self._reference_not_read(self._forwards - before)
        return result

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        if not self._checked_wrapping:
            self._checked_wrapping = True
            if self._data_parallel() and self.accelerator.unwrap_model(model) is model:
                raise RuntimeError(
                    "the model reached training without its DistributedDataParallel wrapper: the ranks' "
                    "gradients would not be averaged and each rank would train on its own shard of the data; "
                    "this is a dpo_hub bug with the installed accelerate/transformers, please report it"
                )
        loss = super().training_step(model, inputs, num_items_in_batch)
        # what transformers sums into train_loss, kept across resumes; a tensor: no device sync every step
        self.train_loss_sum = self.train_loss_sum + loss.detach()
        return loss

    def compute_loss_context_manager(self) -> Any:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(super().compute_loss_context_manager())
        # the autocast trl's compute_ref_log_probs uses: the policy is computed in the reference's precision
        # even before accelerate wraps the model's forward (the eval before training): zero adapter, margin 0
        stack.enter_context(self.accelerator.autocast())
        if self._bf16_hooks is not None:
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(*self._bf16_hooks))
        return stack

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """trl's ``train``; under DDP a model that an eval before training left prepared for evaluation only
        is wrapped for training (:func:`~dpo_hub.upstream.forget_evaluation_prepare`)."""
        if self._data_parallel() and self.model_wrapped is self.model:
            upstream.forget_evaluation_prepare(self.accelerator, self.model)
        with self.levers_on():
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        with self.levers_on():
            return super().evaluate(*args, **kwargs)

    # --- helpers -------------------------------------------------------------------------------------------
    def _data_parallel(self) -> bool:
        """Several processes, each with the whole model (DDP): gradients are averaged by the DDP wrapper."""
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        return self.accelerator.num_processes > 1 and not sharded

    @contextlib.contextmanager
    def levers_on(self) -> Iterator[None]:
        """The levers' trl globals and model wrappers, set for the block and restored after it
        (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with contextlib.ExitStack() as stack:
            for private, value in self._globals:
                stack.enter_context(upstream.patched(private, value))
            for owner, name, value in self._attributes:
                stack.enter_context(_attribute(owner, name, value))
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0

    def _count_forward(self, module: Any, args: Any) -> None:
        self._forwards += 1

    def _reference_not_read(self, forwards: int) -> None:
        why = (
            f"trl ran {forwards} model forwards for one loss although the batch carried its reference "
            "log-probs: the installed trl no longer reads DPOTrainer.precompute_ref_logps; the cache is off "
            "and trl computes the reference at every step"
        )
        log.warning("reference log-probs: %s", why)
        self.levers["reference_cache"] = Lever(False, why)
        self.reference_cache = None
        self.precompute_ref_logps = False


@contextlib.contextmanager
def _attribute(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` for the block; afterwards the attribute is as it was (or absent again)."""
    before = owner.__dict__.get(name, _UNSET)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if before is _UNSET:
            delattr(owner, name)
        else:
            setattr(owner, name, before)
