"""Model dirs, the empty-adapter guard, and `generalist export` reloaded by plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.cli import main as cli_main
from generalist.errors import GeneralistError
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.lora import save_adapter
from generalist.model.model_dir import load_model_dir, save_model_dir

PLAIN_GENERATE = r"""
import json, sys, io
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
out, prompt, image = sys.argv[1], sys.argv[2], sys.argv[3]
processor = AutoProcessor.from_pretrained(out)
model = AutoModelForImageTextToText.from_pretrained(out).eval()
img = Image.open(image).convert("RGB")
inputs = processor(text=prompt, images=[img], return_tensors="pt")
with torch.no_grad():
    ids = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
new = ids[0, inputs["input_ids"].shape[1]:].tolist()
assert not [m for m in sys.modules if m.split(".")[0] == "generalist"]
print(json.dumps(new))
"""


def test_empty_adapter_is_refused(make_bundle, tmp_path):
    bundle = make_bundle()
    with pytest.raises(GeneralistError, match=r"refusing to save an empty adapter: all 8 LoRA B"):
        save_model_dir(bundle, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    sd = {k: torch.empty(0) if "lora_B" in k else v for k, v in bundle.model.state_dict().items()}
    with pytest.raises(GeneralistError, match="under ZeRO-3 gather the parameters"):
        save_adapter(bundle.model, tmp_path / "adapter", state_dict=sd)
    # a gathered state dict is what gets saved, not the (here untrained) local parameters
    sd = {
        k: torch.full_like(v, 0.5) if "lora_B" in k else v
        for k, v in bundle.model.state_dict().items()
    }
    save_model_dir(bundle, tmp_path / "model", state_dict=sd)
    loaded = load_model_dir(tmp_path / "model")
    b = [p for n, p in loaded.model.named_parameters() if "lora_B" in n]
    assert b and all(torch.all(p == 0.5) for p in b)


def test_export_reloads_in_plain_transformers_and_generates_the_same(make_bundle, h, tmp_path):
    bundle = make_bundle(lora={"r": 4, "dropout": 0.0})
    ex = h.image_example(color="blue")
    h.train(bundle, Collator(bundle, 64)([ex, h.text_example()]))
    ckpt = tmp_path / "checkpoint"
    save_model_dir(bundle, ckpt / "model")
    meta = json.loads((ckpt / "model" / "model.json").read_text())
    assert meta["base"] == "saved" and meta["lora"]["r"] == 4
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    image = tmp_path / "img.png"
    image.write_bytes(ex.images[0])
    run = subprocess.run(
        [sys.executable, "-c", PLAIN_GENERATE, str(tmp_path / "out"), ex.prompt, str(image)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    plain_tokens = json.loads(run.stdout.strip().splitlines()[-1])
    gen = Collator(bundle, 64, for_generation=True)([ex])
    kw = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        ours = bundle.model.generate(**model_inputs(gen), **kw)
        merged = load_model_dir(ckpt).merged_model().generate(**model_inputs(gen), **kw)
    n = gen["input_ids"].shape[1]
    assert ours[0, n:].tolist() == merged[0, n:].tolist() == plain_tokens
    assert len(plain_tokens) == 6
    # the exported dir is an ordinary HF model: it can be the base of a new run (auto classes)
    reborn = build_model(ModelConfig.parse({"name_or_path": str(tmp_path / "out")}))
    assert reborn.family == "llava" and reborn.image_token == "<image>"
    reborn.model.eval()
    with torch.no_grad():  # fresh LoRA (B = 0) leaves the exported model's answers unchanged
        again = reborn.model.generate(**model_inputs(gen), **kw)
    assert again[0, n:].tolist() == plain_tokens


def test_export_cli_errors_name_the_path(tmp_path, capsys):
    assert cli_main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert "no model.json" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    code = cli_main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "busy")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_full_warmup_then_lora_continues_from_saved_weights(make_bundle, h, tmp_path):
    warm = make_bundle(lora={"enabled": False})
    h.train(warm, Collator(warm, 64)([h.image_example()]), steps=1)
    save_model_dir(warm, tmp_path / "warm")
    assert json.loads((tmp_path / "warm" / "model.json").read_text())["base"] == "saved"
    cfg = ModelConfig.parse({"name_or_path": str(tmp_path / "warm")})
    lora = build_model(cfg, LoraSettings.parse({"r": 2}))
    want = dict(warm.model.named_parameters())
    for name, p in lora.model.get_base_model().named_parameters():
        if "lora_" not in name and ".modules_to_save." not in name:
            key = name.replace(".base_layer.", ".").replace(".original_module.", ".")
            assert torch.equal(p, want[key]), name
    h.train(lora, Collator(lora, 64)([h.image_example()]), steps=1)
    save_model_dir(lora, tmp_path / "stage2")
    assert json.loads((tmp_path / "stage2" / "model.json").read_text())["base"] == "reference"
    again = load_model_dir(tmp_path / "stage2")
    batch = Collator(again, 64)([h.image_example()])
    with torch.no_grad():
        torch.testing.assert_close(
            again.model(**model_inputs(batch)).logits, lora.model(**model_inputs(batch)).logits
        )


def test_export_is_quiet_unless_verbose(make_bundle, h, tmp_path):
    bundle = make_bundle(lora={"r": 2})
    h.train(bundle, Collator(bundle, 64)([h.image_example()]), steps=1)
    save_model_dir(bundle, tmp_path / "ckpt" / "model")
    printed = {}
    # a user's shell: earlier tests in this process ran quiet mode, which sets variables that
    # silence what the verbose run must show (generalist.verbosity)
    set_by_quiet = {"DS_ACCELERATOR", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"}
    env = {k: v for k, v in os.environ.items() if k not in set_by_quiet}
    for flags in ([], ["--verbose"]):
        out = tmp_path / f"out{len(flags)}"
        argv = ["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out), *flags]
        run = subprocess.run(
            [sys.executable, "-m", "generalist.cli", *argv],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        printed[bool(flags)] = run.stdout + run.stderr
    assert printed[False] == f"exported a plain Hugging Face model to {tmp_path / 'out0'}\n"
    assert "Setting accelerator to CPU" in printed[True]  # DeepSpeed's notice, seen on request
    assert "Loading weights" in printed[True] and "Writing model shards" in printed[True]
