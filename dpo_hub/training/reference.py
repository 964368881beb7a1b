"""Reference log-probs: each pair's computed once, without gradients, when a batch first needs it, and cached.

With a LoRA adapter the reference model is the base model with the adapter off, so its log-probs of a pair
never change. trl's ``DPOTrainer`` computes them again at every step, or, with ``precompute_ref_log_probs``,
for the whole train and eval splits before training, in memory. Here a batch's pairs are looked up by the
exact tokens the model sees; a pair not yet known is computed (trl's own ``compute_ref_log_probs``, adapter
off, eval mode, no gradients) before the policy's forward pass and kept under ``$DPO_HUB_CACHE`` (default
``~/.cache/dpo_hub``) ``/reference_logps/KEY/``, KEY being a digest of the base weights, the precision and the
trl version. So a run pays only for the pairs it trains and evaluates on (a ``max_steps`` run over part of a
split pays for that part), and reruns, resumed runs and sweeps over beta, learning rate or LoRA settings reuse
every pair already seen. A single-process run that will use every train pair computes the missing ones up
front in one batched, length-sorted pass. ``DpoHubTrainer.use_reference_cache`` puts the values in the batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpo_hub.artifacts.folders import write_json
from dpo_hub.runtime import cache_dir

log = logging.getLogger("dpo_hub")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def base_weights_digest(model: Any) -> str:
    """sha256 of every parameter and buffer that is not part of a LoRA adapter (the reference model)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if "lora_" in name:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy())
    return digest.hexdigest()


def pair_keys(inputs: dict) -> list[str]:
    """One key per pair of a trl batch ([chosen rows; rejected rows]): its tokens and which of them are
    scored."""
    ids, attention, completion = (inputs[k].cpu() for k in ("input_ids", "attention_mask", "completion_mask"))
    half = len(ids) // 2
    keys = []
    for i in range(half):
        digest = hashlib.blake2b(digest_size=16)
        for row in (i, half + i):
            kept = attention[row].bool()
            digest.update(ids[row][kept].numpy().tobytes())
            digest.update(completion[row][kept].to(dtype=ids.dtype).numpy().tobytes())
        keys.append(digest.hexdigest())
    return keys


class ReferenceCache:
    """Reference log-probs by pair key: those on disk for this base model, plus what this process computes."""

    def __init__(self, trainer: Any, folder: Path) -> None:
        self.trainer, self.folder = trainer, folder
        self.values: dict[str, list[float]] = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                self.values.update(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:  # a damaged entry only costs recomputing its pairs
                log.warning("reference log-probs: skipping unreadable %s (%s)", path, err)
        self.new: dict[str, list[float]] = {}
        self.file = folder / f"{uuid.uuid4().hex}.json"  # this process's additions
        self.seconds, self.tokens, self.reused = 0.0, 0, 0

    def fill(self, model: Any, inputs: dict) -> dict:
        """``inputs`` with the reference columns trl reads, computing the pairs not known yet."""
        import torch

        if REF_COLUMNS[0] in inputs:
            return inputs
        keys = pair_keys(inputs)
        missing = sum(k not in self.values for k in keys)
        if missing:
            started = time.perf_counter()
            for key, pair in zip(keys, self._compute(model, inputs)):
                self.values[key] = self.new[key] = pair
            self.seconds += time.perf_counter() - started
            self.tokens += int(inputs["attention_mask"].sum())
        self.reused += len(keys) - missing
        device = inputs["input_ids"].device
        chosen, rejected = (
            torch.tensor([self.values[k][side] for k in keys], device=device) for side in (0, 1)
        )
        return {**inputs, REF_COLUMNS[0]: chosen, REF_COLUMNS[1]: rejected}

    def _compute(self, model: Any, inputs: dict) -> list[list[float]]:
        import torch

        trainer = self.trainer
        plain = trainer.accelerator.unwrap_model(model)  # no DDP hooks: ranks may miss different pairs
        was_training = plain.training
        plain.eval()  # deterministic whatever the dropout settings, as a cached value must be
        try:  # and the training's random stream stays untouched (an exact resume)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                chosen, rejected = trainer.compute_ref_log_probs(plain, inputs)
        finally:
            plain.train(was_training)
        return [[c, r] for c, r in zip(chosen.float().cpu().tolist(), rejected.float().cpu().tolist())]

    def prefill(self, dataset: Any) -> None:
        """Compute every pair of ``dataset`` not known yet in one batched, length-sorted pass."""
        import torch
        from torch.utils.data import DataLoader

        trainer = self.trainer
        columns = ("prompt_ids", "chosen_ids", "rejected_ids")
        lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(*(dataset[col] for col in columns))]
        order = sorted(
            range(len(lengths)), key=lengths.__getitem__
        )  # similar lengths together: little padding
        loader = DataLoader(
            dataset.select_columns(list(columns)).select(order),
            collate_fn=trainer.data_collator,
            batch_size=trainer.args.per_device_eval_batch_size,
            shuffle=False,
        )
        device = trainer.accelerator.device
        with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws a seed from the global RNG
            for batch in loader:
                batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                self.fill(trainer.model, batch)

    @property
    def computed(self) -> int:
        return len(self.new)

    def flush(self) -> None:
        """Write this process's new pairs; a cache that cannot be written only costs later runs the
        compute."""
        if not self.new:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self.file, self.new)
        except OSError as err:
            log.warning(
                "reference log-probs not cached (%s: %s); set DPO_HUB_CACHE to a writable folder to reuse "
                "them in later runs",
                type(err).__name__,
                err,
            )


class _Flush(TrainerCallback):
    def __init__(self, cache: ReferenceCache) -> None:
        self.cache = cache

    def on_save(self, args, state, control, **kwargs):
        self.cache.flush()

    def on_evaluate(self, args, state, control, **kwargs):
        self.cache.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.cache.flush()
        log.info(
            "reference log-probs: %d pairs computed in %.1f s, %d reused from %s",
            self.cache.computed,
            self.cache.seconds,
            self.cache.reused,
            self.cache.folder,
        )


def open_cache(trainer: Any, state: Any) -> ReferenceCache:
    """The cache for ``trainer``'s base model (one process hashes the weights), with the callback that writes
    it."""
    key = _broadcast(_cache_key(trainer) if state.is_main_process else None, state)
    cache = ReferenceCache(trainer, cache_dir() / "reference_logps" / key)
    trainer.add_callback(_Flush(cache))
    log.info(
        "reference log-probs: %d pairs known in %s; the others are computed when first used",
        len(cache.values),
        cache.folder,
    )
    return cache


def prefill_when_all_are_used(cache: ReferenceCache, trainer: Any, state: Any) -> None:
    """A single-process run that will use every train pair computes the missing ones now, batched (several
    processes: each computes its own batches' pairs when it first meets them)."""
    args = trainer.args
    per_update = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    uses_all = args.max_steps <= 0 or args.max_steps * per_update >= len(trainer.train_dataset)
    if not uses_all or state.num_processes != 1:
        return
    started, computed = time.perf_counter(), cache.computed
    cache.prefill(trainer.train_dataset)
    if trainer.eval_dataset is not None and args.eval_strategy != "no":
        cache.prefill(trainer.eval_dataset)
    cache.flush()
    log.info(
        "reference log-probs: %d pairs computed up front, batched, in %.1f s",
        cache.computed - computed,
        time.perf_counter() - started,
    )


def _cache_key(trainer: Any) -> str:
    from importlib.metadata import version

    args = trainer.args
    digest = hashlib.sha256(base_weights_digest(trainer.model).encode())
    digest.update(json.dumps([args.bf16, args.fp16, trainer.ld_alpha, version("trl")]).encode())
    return digest.hexdigest()[:32]


def _broadcast(value: Any, state: Any) -> Any:
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    payload = [value]
    broadcast_object_list(payload)
    return payload[0]
