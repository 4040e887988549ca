"""Config loading and every config error, all before any deepspeed init or model building."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generalist.errors import ConfigError
from generalist.train.config import TrainConfig, load_config
from generalist.train.deepspeed_config import filled_deepspeed_config
from generalist.train.preflight import check_config

from support import TINY_TASKS


def test_defaults_then_yaml_then_overrides(tiny_config) -> None:
    path = tiny_config(**{"optim.lr": 0.5, "batch.micro_batch_size": 3})
    cfg = load_config(path, ["optim.lr=1e-3", "steps=7", "resume=none", "tasks={train_words: 2}"])
    assert cfg.optim.lr == pytest.approx(1e-3)  # override beats YAML ("1e-3" read as a float)
    assert cfg.batch.micro_batch_size == 3  # YAML beats default
    assert cfg.batch.grad_accum == 1 and cfg.optim.weight_decay == 0.0  # defaults
    assert cfg.steps == 7 and cfg.resume is None and cfg.tasks == {"train_words": 2.0}
    assert cfg.model.tiny is not None and cfg.model.tiny.hidden_size == 32
    mixture = check_config(cfg)
    assert mixture.rates() == {"train_words": 1.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'; did you mean optim.lr?"),
        (["stepz=3"], "unknown config key 'stepz'; did you mean steps?"),
        (["model.tiny.hiden_size=8"], "'model.tiny.hiden_size'; did you mean model.tiny.hidden_"),
        (["optim.lr=fast"], "config key 'optim.lr': Input should be a valid number"),
        (["optim.lr=-1"], "config key 'optim.lr': Input should be greater than 0"),
        (["batch.micro_batch_size=0"], "config key 'batch.micro_batch_size'"),
        (["optim.decay=step"], "config key 'optim.decay': Input should be 'cosine', 'linear'"),
        (["deepspeed=5"], "config key 'deepspeed'"),
        (["model.name_or_path=x"], "give exactly one of model.name_or_path or model.tiny"),
        (["optim.lr"], "override 'optim.lr' is not key=value"),
        (["logging.every=[1"], "override 'logging.every=[1': not valid YAML"),
        (["batch.loss_normalization=tokens"], "'batch.loss_normalization': Input should be 'glo"),
        (["model.attn_implementation=flash"], "config key 'model.attn_implementation': Input sh"),
        (["tf32=maybe"], "config key 'tf32': Input should be a valid boolean"),
    ],
)
def test_bad_keys_and_values_name_the_key(tiny_config, overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tiny_config(), overrides)
    assert message in str(err.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="config key 'model': Field required"):
        load_config(None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tasks=null"], "give exactly one of config keys 'mixture'"),
        (["mixture=demo"], "give exactly one of config keys 'mixture'"),
        (["tasks=null", "mixture=dmeo"], "config key 'mixture': unknown mixture 'dmeo'; did you"),
        (["tasks={train_wrds: 1}"], "config key 'tasks.train_wrds': unknown task 'train_wrds'"),
        (["tasks={train_words: -1}"], "config key 'tasks': mixture 'inline': rate of"),
        (["eval.every=5", "eval.tasks=[nope]"], "config key 'eval.tasks': unknown task 'nope'"),
        (["imports=[./missing_tasks.py]"], "config key 'imports': module file"),
        (["model.name_or_path=/no/such/model", "model.tiny=null"], "'model.name_or_path'"),
        (["model.name_or_path=nobody/no-model", "model.tiny=null"], "not in the local Hugging"),
        (["deepspeed=/no/such/ds.json"], "neither a ZeRO stage (0-3) nor an existing DeepSpeed"),
        (["resume=/no/such/ckpt"], "config key 'resume': checkpoint directory"),
    ],
)
def test_check_config_errors(tiny_config, overrides, message, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)  # restored after
    with pytest.raises(ConfigError) as err:
        check_config(load_config(tiny_config(), overrides))
    assert message in str(err.value)


def test_missing_shards_name_the_dataset_and_command(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory .*nowhere' does not exist"):
        check_config(load_config(tiny_config(), [f"shards={tmp_path / 'nowhere'}"]))
    root = tmp_path / "half"
    (root / "train_colors").mkdir(parents=True)  # a dataset without manifest is incomplete
    (root / "train_words").mkdir()
    manifest = {"format_version": 1, "splits": {"test": {}}}  # complete, but no train split
    (root / "train_words" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError) as err:
        check_config(load_config(tiny_config(), [f"shards={root}"]))
    assert "no complete shards for dataset 'train_colors'" in str(err.value)
    assert f"generalist shard train_colors --out {root}" in str(err.value)
    with pytest.raises(ConfigError, match=r"dataset 'train_words' under .* has no 'train' rec"):
        check_config(load_config(tiny_config(), [f"shards={root}", "tasks={train_words: 1}"]))


def test_deepspeed_json_is_filled_from_the_config(tiny_config) -> None:
    cfg = load_config(tiny_config(), ["deepspeed=3", "batch.grad_accum=4", "optim.grad_clip=0.5"])
    ds = filled_deepspeed_config(cfg, "bf16")
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert "auto" not in json.dumps(ds)
    offload = Path(__file__).parents[2] / "configs" / "deepspeed" / "zero3_offload.json"
    ds = filled_deepspeed_config(load_config(tiny_config(), [f"deepspeed={offload}"]), "fp32")
    assert ds["optimizer"]["params"]["lr"] == pytest.approx(3e-3)
    assert "auto" not in json.dumps(ds)


def test_cli_config_error_stops_before_compute(tiny_config) -> None:
    """`generalist train` with a bad key: one line, exit 2, deepspeed/torch never imported."""
    code = (
        "import sys; from generalist.cli import main; rc = main(sys.argv[1:]); "
        "print('heavy', 'deepspeed' in sys.modules, 'torch' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", str(tiny_config()), "optim.lrr=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "generalist train: error: unknown config key 'optim.lrr'; did you mean optim.lr?"
    )
    assert "heavy False False" in proc.stdout


def test_bundled_configs_load(shard_root: Path, monkeypatch) -> None:
    """Every YAML under configs/ starts with its command and loads (shards checked elsewhere);
    run as documented (from the repository root) its paths point where its comments say."""
    repo = Path(__file__).parents[2]
    monkeypatch.chdir(repo)
    configs = sorted(Path("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert path.read_text().startswith("# "), path
        assert yaml.safe_load(path.read_text())
        if path.name.startswith("gpu_check_"):  # a GPU check spec: its `train` keys are valid
            from generalist.bench.gpu_check import base_config, load_spec

            spec = load_spec(path)
            cfg = TrainConfig.model_validate(base_config(spec, shard_root, shard_root))
            assert cfg.lora.enabled and cfg.model.gradient_checkpointing
            continue
        cfg = load_config(path)
        for where in (cfg.shards, cfg.output_dir):
            assert not where.is_absolute() and where.parts[0] != "configs", (path, where)
        if isinstance(cfg.deepspeed, str):
            assert Path(cfg.deepspeed).is_file(), (path, cfg.deepspeed)
    assert load_config("configs/demo.yaml").shards == Path("demo_out/shards")
    lora = load_config("configs/demo_lora.yaml").model.name_or_path
    assert lora == "demo_out/warmup/checkpoints/step-000160/model"


def test_relative_paths_in_a_file_are_from_its_folder(tiny_config, tmp_path, monkeypatch) -> None:
    """imports, shards, output_dir, deepspeed, model paths: relative to the config file's folder,
    whatever the current directory; key=value overrides stay relative to the current directory."""
    data = yaml.safe_load(tiny_config().read_text())
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "my_tasks.py").symlink_to(TINY_TASKS)
    (project / "shards").symlink_to(data["shards"])
    (project / "configs" / "zero.json").write_text(json.dumps({"zero_optimization": {}}))
    (project / "vision").mkdir()
    data.update(imports=["my_tasks.py"], shards="../shards", output_dir="../runs/x")
    data.update(deepspeed="zero.json", resume="auto")
    data["model"]["tiny"]["vision_init"] = "../vision"
    config = project / "configs" / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../project/configs/run.yaml")
    assert cfg.imports == ["../project/configs/my_tasks.py"]
    assert cfg.shards == Path("../project/shards")
    assert cfg.output_dir == Path("../project/runs/x")
    assert cfg.deepspeed == "../project/configs/zero.json" and cfg.resume == "auto"
    assert cfg.model.tiny.vision_init == "../project/vision"
    assert check_config(cfg).rates() == {"train_colors": 0.5, "train_words": 0.5}
    # the same file by its absolute path: the same places
    assert load_config(config).shards == project / "shards"
    # on the command line: from the current directory
    cfg = load_config(config, ["shards=shards", "imports=[./my_tasks.py]", "output_dir=out"])
    assert cfg.shards == Path("shards") and cfg.output_dir == Path("out")
    assert cfg.imports == ["./my_tasks.py"]
    with pytest.raises(ConfigError, match=r"config key 'imports': module file './my_tasks.py'"):
        check_config(cfg)
    # hub ids and dotted module names are not paths
    data.update(imports=["json"], model={"name_or_path": "org/model"})
    config.write_text(yaml.safe_dump(data))
    cfg = load_config(config)
    assert cfg.imports == ["json"] and cfg.model.name_or_path == "org/model"


def test_a_url_in_a_config_file_stays_a_url(tiny_config, tmp_path) -> None:
    data = yaml.safe_load(tiny_config().read_text())
    config = tmp_path / "configs" / "remote.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({**data, "shards": "s3://bucket/shards"}))
    assert load_config(config).shards == "s3://bucket/shards"


@pytest.fixture
def no_hub(tmp_path: Path, monkeypatch):
    """The hub endpoint on a closed local port (no network) and an empty cache in tmp_path."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is: connections are refused
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hub"


def test_hub_id_without_network_is_a_config_error(tiny_config, no_hub) -> None:
    cfg = load_config(tiny_config(), ["model.tiny=null", "model.name_or_path=nobody/no-model"])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith("config key 'model.name_or_path': 'nobody/no-model' is a ")
    assert "cannot be reached (no network?)" in str(err.value)


def test_cached_hub_id_without_network_goes_offline(tiny_config, no_hub, capsys) -> None:
    import os

    from huggingface_hub import constants

    snapshot = no_hub / "models--org--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (no_hub / "models--org--cached" / "refs").mkdir()
    (no_hub / "models--org--cached" / "refs" / "main").write_text("a" * 40)
    cfg = load_config(tiny_config(), ["model.tiny=null", "model.name_or_path=org/cached"])
    try:
        check_config(cfg)
        assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    finally:
        os.environ.pop("HF_HUB_OFFLINE", None)
    assert (
        "'org/cached' is loaded from the local cache (HF_HUB_OFFLINE=1)" in capsys.readouterr().err
    )


def test_gpu_settings_unavailable_here_are_config_errors(tiny_config, monkeypatch) -> None:
    """flash_attention_2 and Liger need their packages (checked in preflight) and CUDA (checked
    once the model is built); Liger refuses a family it has no kernels for."""
    from types import ModuleType, SimpleNamespace

    from generalist.model import kernels
    from generalist.model.config import ModelConfig

    monkeypatch.setattr(kernels, "_installed", lambda module: False)
    flash = load_config(tiny_config(), ["model.attn_implementation=flash_attention_2"])
    with pytest.raises(ConfigError) as err:
        check_config(flash)
    assert str(err.value).startswith(
        "config key 'model.attn_implementation': flash_attention_2 needs the flash-attn package"
    )
    with pytest.raises(ConfigError, match=r"'model.liger_kernel': needs the liger-kernel package"):
        check_config(load_config(tiny_config(), ["model.liger_kernel=true"]))

    # installed, but this machine has no CUDA GPU
    import torch

    monkeypatch.setattr(kernels, "_installed", lambda module: True)
    model = SimpleNamespace(
        config=SimpleNamespace(model_type="blip-2", _attn_implementation="sdpa")
    )
    if not torch.cuda.is_available():
        cfg = ModelConfig.parse({"tiny": {}, "attn_implementation": "flash_attention_2"})
        with pytest.raises(ConfigError, match="flash_attention_2 runs on CUDA GPUs only"):
            kernels.apply_kernels(model, cfg)
    # with CUDA, a family Liger has no kernels for is named (Liger itself only logs it)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    applied = []
    fake = ModuleType("liger_kernel.transformers.monkey_patch")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {
        "llava": lambda model, cross_entropy=True, fused_linear_cross_entropy=True, rms_norm=True: (
            applied.append((cross_entropy, fused_linear_cross_entropy, rms_norm))
        )
    }
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    liger = ModelConfig.parse({"tiny": {}, "liger_kernel": True})
    with pytest.raises(ConfigError, match="Liger has no kernels for model type 'blip-2'"):
        kernels.apply_kernels(model, liger)
    model.config.model_type = "llava"
    kernels.apply_kernels(model, liger)
    # our per-example losses need the logits: Liger's (fused) cross-entropy stays off
    assert applied == [(False, False, True)]
