"""Reference log-probs: computed once before training, without gradients, batched, and cached on disk.

With a LoRA adapter the reference model is the base model with the adapter off, so its log-probs of each
pair never change during a run. trl's ``DPOTrainer`` computes them again at every step (or, with
``precompute_ref_log_probs``, once per run in memory). Here they are computed once with trl's own
``compute_ref_log_probs``, stored under ``$DPO_HUB_CACHE`` (default ``~/.cache/dpo_hub``)
``/reference_logps/KEY.json``, and reused by any later run whose key matches: the base weights, the
tokenised pairs, ``max_length`` and the precision. Reruns and sweeps over beta, learning rate or LoRA
settings skip the pass entirely.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from dpo_hub.outputs import write_json
from dpo_hub.standins import cache_dir

log = logging.getLogger("dpo_hub")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
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


def attach(trainer: Any, state: Any) -> float:
    """Give ``trainer``'s train and eval datasets their reference log-prob columns; return seconds spent.

    The main process computes what the cache lacks and writes it; the other processes receive it. After
    this, ``trainer`` reads the reference from each batch instead of running the base model every step.
    """
    started = time.perf_counter()
    splits = {"train": trainer.train_dataset, "eval": trainer.eval_dataset}
    values: dict[str, dict] = {}
    if state.is_main_process:
        weights = base_weights_digest(trainer.model)
        for name, dataset in splits.items():
            if dataset is None:
                continue
            path = _cache_file(trainer, weights, dataset)
            if path.exists():
                log.info("reference log-probs (%s): reusing %s", name, path)
                values[name] = json.loads(path.read_text(encoding="utf-8"))
            else:
                values[name] = _compute(trainer, splits[name], name)
                _store(path, values[name])
    values = _broadcast(values, state)
    for name, columns in values.items():
        dataset = splits[name]
        for column in REF_COLUMNS:
            dataset = dataset.add_column(column, columns[column])
        setattr(trainer, "train_dataset" if name == "train" else "eval_dataset", dataset)
    trainer.precompute_ref_logps = True  # trl's flag: read ref_chosen_logps/ref_rejected_logps from the batch
    return time.perf_counter() - started


def _cache_file(trainer: Any, weights: str, dataset: Any) -> Path:
    from importlib.metadata import version

    args = trainer.args
    digest = hashlib.sha256(weights.encode())
    for column in TOKEN_COLUMNS:
        digest.update(json.dumps(list(dataset[column])).encode())
    digest.update(json.dumps([args.max_length, args.truncation_mode, args.bf16, args.fp16, trainer.ld_alpha,
                              version("trl")]).encode())
    return cache_dir() / "reference_logps" / f"{digest.hexdigest()[:32]}.json"


def _compute(trainer: Any, dataset: Any, name: str) -> dict[str, list[float]]:
    import torch
    from torch.utils.data import DataLoader

    model = trainer.model
    device = trainer.accelerator.device
    batch_size = trainer.args.precompute_ref_batch_size or trainer.args.per_device_eval_batch_size
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(*(dataset[col] for col in TOKEN_COLUMNS))]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)  # similar lengths together: little padding
    loader = DataLoader(dataset.select_columns(list(TOKEN_COLUMNS)).select(order), batch_size=batch_size,
                        collate_fn=trainer.data_collator, shuffle=False)
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    started = time.perf_counter()
    try:  # iterating a DataLoader draws a seed from the global RNG: keep training's random stream untouched
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for batch in loader:
                batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                c, r = trainer.compute_ref_log_probs(model, batch)
                chosen += c.float().cpu().tolist()
                rejected += r.float().cpu().tolist()
    finally:
        model.train(was_training)
    log.info("reference log-probs (%s): %d pairs in %.1f s", name, len(chosen), time.perf_counter() - started)
    restore = sorted(range(len(order)), key=order.__getitem__)  # back to the dataset's row order
    return {REF_COLUMNS[0]: [chosen[i] for i in restore], REF_COLUMNS[1]: [rejected[i] for i in restore]}


def _store(path: Path, values: dict) -> None:
    """Cache ``values`` for later runs; a cache that cannot be written only costs the next run the pass."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, values)
    except OSError as err:
        log.warning("reference log-probs not cached (%s: %s); set DPO_HUB_CACHE to a writable folder to reuse "
                    "them in later runs", type(err).__name__, err)


def _broadcast(values: dict[str, dict], state: Any) -> dict[str, dict]:
    if state.num_processes == 1:
        return values
    from accelerate.utils import broadcast_object_list

    payload = [values]
    broadcast_object_list(payload)
    return payload[0]
