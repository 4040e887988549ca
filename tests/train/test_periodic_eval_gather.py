"""Periodic evaluation under ZeRO-3 gathers the model once where it fits: the fit check counts
what this rank lacks of every weight against the free memory; without ZeRO-3 nothing changes."""

from __future__ import annotations

import types

import psutil
import pytest
import torch

from generalist.train import periodic_eval


def _engine(stage: int, numels: list[int], local: int) -> types.SimpleNamespace:
    params = []
    for n in numels:
        p = torch.nn.Parameter(torch.zeros(local))  # what ZeRO-3 leaves on the rank
        p.ds_numel = n
        p.ds_tensor = torch.zeros(local)
        params.append(p)
    module = types.SimpleNamespace(parameters=lambda: iter(params))
    return types.SimpleNamespace(module=module, zero_optimization_stage=lambda: stage)


@pytest.mark.parametrize("free_mb", [1, 10, 100])
def test_the_gathered_model_fits_when_its_missing_bytes_fit_the_headroom(monkeypatch, free_mb):
    free = free_mb * 2**20
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=free))
    numels = [1_000_000, 500_000, 250_000]  # fp32: 7 MB in all, 4 bytes x 10 local each
    missing = sum(n - 10 for n in numels) * 4
    engine = _engine(3, numels, 10)
    assert periodic_eval.fits_whole(engine) == (missing <= periodic_eval.HEADROOM * free)


def test_without_zero3_the_model_is_left_as_it_is():
    with periodic_eval.whole_model(None) as gathered:
        assert gathered is False
    with periodic_eval.whole_model(_engine(2, [100], 100)) as gathered:
        assert gathered is False
