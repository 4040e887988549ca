"""`deepspeed --num_gpus 2 norm_ranks.py CONFIG OUT_JSON`: one optimizer step per loss
normalisation through the real train_window, compared on rank 0 with one big batch.

Each rank takes its accumulation window from the real data path (setup_data), then for every
batch.loss_normalization runs one step with torch SGD at lr 1 from the same initial weights, so
the update is exactly minus the gradient DeepSpeed applied (ZeRO-2: reduced across ranks,
accumulated over micro-batches). Rank 0 then puts all 2 x grad_accum micro-batches into ONE
padded batch and computes the reference gradients of each normalisation by plain autograd.
Writes {mode: {"vs_global": rel. error, "vs_own": rel. error}, "targets": [...]} as JSON.
(A test helper: nothing of it is in the package.)
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import deepspeed
import torch

from generalist import distributed as dist
from generalist.batching.losses import example_losses
from generalist.batching.model_inputs import model_inputs
from generalist.train.config import load_config
from generalist.train.deepspeed_config import filled_deepspeed_config
from generalist.train.preflight import check_config
from generalist.train.setup import setup_data, setup_model
from generalist.train.step import target_counts, train_window

MODES = ("global_tokens", "per_example", "micro_batch")


def one_big_batch(batches: list[dict], pad_id: int) -> dict:
    """Micro-batches joined into one batch, rows right-padded to the longest."""
    width = max(b["input_ids"].shape[1] for b in batches)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
    pad = torch.nn.functional.pad
    out = {k: torch.cat([pad(b[k], (0, width - b[k].shape[1]), value=v) for b in batches])
           for k, v in fill.items()}  # fmt: skip
    out["pixel_values"] = torch.cat([b["pixel_values"] for b in batches])  # one image per row
    return out


def reference_grads(model: torch.nn.Module, big: dict, micro: list[dict], mode: str) -> dict:
    """Gradients of the mode's loss over the global batch, by plain autograd on one process."""
    model = copy.deepcopy(model)
    if mode == "micro_batch":  # each micro-batch's token mean, averaged over all of them
        for batch in micro:
            inputs = dict(batch)
            labels = inputs.pop("labels")
            sums, counts = example_losses(model(**inputs).logits, labels)
            (sums.sum() / counts.sum() / len(micro)).backward()
    else:
        inputs = dict(big)
        labels = inputs.pop("labels")
        sums, counts = example_losses(model(**inputs).logits, labels)
        if mode == "global_tokens":
            loss = sums.sum() / counts.sum()
        else:
            loss = (sums[counts > 0] / counts[counts > 0]).mean()
        loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def relative_error(a: dict, b: dict) -> float:
    top = max(float(v.abs().max()) for v in b.values())
    return max(float((a[n] - b[n]).abs().max()) for n in b) / top


def main(config: str, out: str) -> None:
    cfg = load_config(config)
    mixture = check_config(cfg)
    device = dist.init_distributed()
    bundle = setup_model(cfg, mixture)  # seeded: the same weights on both ranks
    template = copy.deepcopy(bundle.model)
    _, batches = setup_data(cfg, mixture, bundle, None)
    window = [next(batches) for _ in range(cfg.batch.grad_accum)]
    mine = [model_inputs(b) for _, b in window]
    work = Path(out).parent
    torch.save(mine, work / f"window-{dist.rank()}.pt")
    ds = filled_deepspeed_config(cfg, "fp32") | {"zero_allow_untested_optimizer": True}
    applied = {}
    for mode in MODES:
        model = copy.deepcopy(template)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1.0)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
        train_window(engine, window, mode, device, "fp32")
        before = dict(template.named_parameters())
        applied[mode] = {
            n: (before[n] - p).detach().clone()
            for n, p in engine.module.named_parameters()
            if p.requires_grad
        }
    dist.barrier()
    if dist.is_main():
        micro = [b for r in range(dist.world_size()) for b in torch.load(work / f"window-{r}.pt")]
        big = one_big_batch(micro, bundle.tokenizer.pad_token_id)
        refs = {m: reference_grads(template, big, micro, m) for m in MODES}
        result = {
            m: {"vs_global": relative_error(applied[m], refs["global_tokens"]),
                "vs_own": relative_error(applied[m], refs[m])}
            for m in MODES
        }  # fmt: skip
        result["targets"] = [int(target_counts(b["labels"], True).sum()) for b in micro]
        result["examples"] = [int(b["labels"].shape[0]) for b in micro]
        Path(out).write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
