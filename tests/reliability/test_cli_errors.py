"""Bad configs and command lines of every kind, through the real `generalist` command in a
subprocess: exit code 2, exactly one error line naming the key/file/name, no traceback.

(tests/train/test_config.py checks load_config's messages in-process, tests/catalog/test_cli.py
the `tasks`/`render` errors, tests/shards/test_shard_cli.py the `shard` ones: here every command
runs as users run it, so a traceback anywhere on the way shows.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

FILES = {
    "unknown_key.yaml": "steps: 3\nbogus_key: 1\n",
    "bad_type.yaml": "steps: many\n",
    "bad_syntax.yaml": "steps: [1, 2\n",
    "not_mapping.yaml": "- 1\n- 2\n",
    "tag.yaml": "steps: !!python/object/apply:os.system ['touch {tmp}/pwned']\n",
    "top_tag.yaml": "!!python/object/apply:os.system ['touch {tmp}/pwned']\n",
    "a_file": "",
}

# (arguments, what the one error line must contain); {good}: a valid config, {tmp}: a directory
CASES = {
    "unknown subcommand": (["trian"], "unknown command 'trian'"),
    "unknown key": (["train", "{tmp}/unknown_key.yaml"], "unknown config key 'bogus_key'"),
    "unknown nested key": (["train", "{good}", "optim.lrr=1"], "did you mean optim.lr"),
    "bad value type": (["train", "{tmp}/bad_type.yaml"], "config key 'steps'"),
    "bad override value": (["train", "{good}", "steps=abc"], "config key 'steps'"),
    "bad YAML syntax": (["train", "{tmp}/bad_syntax.yaml"], "bad_syntax.yaml: not valid YAML"),
    "YAML not a mapping": (["train", "{tmp}/not_mapping.yaml"], "must be a mapping"),
    "binary config": (["train", "{tmp}/binary.yaml"], "binary.yaml"),
    "object tag": (["train", "{tmp}/tag.yaml"], "tag.yaml: refused"),
    "top-level tag": (["train", "{tmp}/top_tag.yaml"], "construct Python objects"),
    "tag in override": (["train", "{good}", "seed=!!python/name:os.system"], "refused"),
    "missing config": (["train", "{tmp}/missing.yaml"], "missing.yaml' does not exist"),
    "config is a dir": (["train", "{tmp}"], "is a directory"),
    "override without =": (["train", "{good}", "foo"], "override 'foo' is not key=value"),
    "override bad YAML": (["train", "{good}", "steps=[1"], "not valid YAML"),
    "unknown task": (["train", "{good}", "tasks={{nope_task: 1.0}}"], "unknown task 'nope_task'"),
    "unknown mixture": (["train", "{good}", "tasks=null", "mixture=nope"], "unknown mixture"),
    "missing shards": (["train", "{good}", "shards={tmp}/none"], "config key 'shards'"),
    "unknown model path": (
        ["train", "{good}", "model.tiny=null", "model.name_or_path={tmp}/no_model"],
        "config key 'model.name_or_path'",
    ),
    "missing import": (["train", "{good}", "imports=[{tmp}/none.py]"], "none.py"),
    "missing deepspeed json": (["train", "{good}", "deepspeed={tmp}/ds.json"], "'deepspeed'"),
    "missing resume dir": (["train", "{good}", "resume={tmp}/ckpt"], "config key 'resume'"),
    "output_dir is a file": (["train", "{good}", "output_dir={tmp}/a_file"], "is a file"),
    "output_dir under a file": (
        ["train", "{good}", "output_dir={tmp}/a_file/run"],
        "config key 'output_dir'",
    ),
    "bad flag": (["train", "{good}", "--bogus"], "unrecognized arguments: --bogus"),
    "no config": (["train"], "required"),
    "evaluate missing checkpoint": (
        ["evaluate", "{good}", "--checkpoint", "{tmp}/ckpt"],
        "--checkpoint {tmp}/ckpt",
    ),
    "shard missing source": (
        ["shard", "easy_vqa", "--source", "{tmp}/src", "--out", "{tmp}/out"],
        "source {tmp}/src does not exist",
    ),
    "shard unknown dataset": (["shard", "nope", "--out", "{tmp}/out"], "unknown dataset 'nope'"),
    "render unknown task": (["render", "nope_task"], "unknown task 'nope_task'"),
    "tasks missing import": (["tasks", "--import", "{tmp}/none.py"], "none.py"),
    "export missing checkpoint": (
        ["export", "--checkpoint", "{tmp}/ckpt", "--out", "{tmp}/x"],
        "{tmp}/ckpt",
    ),
    "export out is a file": (
        ["export", "--checkpoint", "{tmp}/ckpt", "--out", "{tmp}/a_file"],
        "{tmp}/a_file",
    ),
    "bench unknown": (["bench", "nope"], "unknown benchmark 'nope'"),
    "leaderboard no database": (
        ["leaderboard", "--tracking-uri", "sqlite:///{tmp}/none.db"],
        "no MLflow database",
    ),
    "leaderboard unknown experiment": (
        ["leaderboard", "--tracking-uri", "sqlite:///{tmp}/mlflow.db", "--experiment", "nope"],
        "no MLflow experiment 'nope'",
    ),
    "leaderboard server down": (
        ["leaderboard", "--tracking-uri", "http://127.0.0.1:9", "--experiment", "x"],
        "does not answer",
    ),
    "sync missing run dir": (["sync", "{tmp}/no_run"], "{tmp}/no_run"),
    "sync not a run dir": (["sync", "{tmp}"], "is not a run directory"),
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    for name, text in FILES.items():
        (tmp / name).write_text(text.format(tmp=tmp))
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    # an MLflow database with one experiment, made as mlflow does (sqlite via the client)
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").create_experiment("real")
    assert sqlite3.connect(tmp / "mlflow.db").execute("select count(*) from experiments")
    return tmp


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(case: str, tmp: Path, shard_root: Path, cli, config_dict):
    good = tmp / "good.yaml"
    if not good.exists():
        good.write_text(yaml.safe_dump(config_dict(shard_root, tmp / "out")))
    args, expected = CASES[case]
    args = [a.format(good=good, tmp=tmp) for a in args]
    result = cli(*args, cwd=tmp)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if "error" in line or "unknown" in line]
    assert len(errors) == 1, result.stderr
    assert expected.format(tmp=tmp) in errors[0], result.stderr
    assert not (tmp / "pwned").exists()


def test_hub_id_without_network_fails_at_once(tmp: Path, shard_root: Path, cli, config_dict):
    """No network (HF_ENDPOINT on a closed port, as a machine without one): the error names the
    key and says the hub cannot be reached, with none of huggingface_hub's retry lines."""
    import os

    good = tmp / "hub.yaml"
    good.write_text(yaml.safe_dump(config_dict(shard_root, tmp / "hub_out")))
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp / "hf_cache")}
    env["HF_HUB_OFFLINE"] = "0"  # another conftest sets it for the session; here it is not set
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = cli("train", str(good), "model.tiny=null", "model.name_or_path=nobody/no-model")
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("generalist train: error: config key 'model.name_or_path': "), line
    assert "http://127.0.0.1:9 cannot be reached" in line and "hf download nobody/no-model" in line
