import json

import pytest

from metarl.running.cli import main


def test_list_json_describes_families(capsys):
    assert main(["list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    cheetah = rows["HalfCheetahVel-v0"]
    assert cheetah["horizon"] == 200 and cheetah["observation"] == "Box(17,)" and cheetah["action"] == "Box(6,)"
    assert cheetah["parameters"] == {"velocity": "U[0, 2]"}
    assert rows["Bandit-v0"]["action"] == "Discrete(5)"
    assert rows["ML10-v0"]["train_tasks"] == 500 and rows["ML10-v0"]["test_tasks"] == 250


def test_rollout_reports_train_and_test_tasks(capsys):
    assert main(["rollout", "Navigation2D-v0", "Bandit-v0", "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[1].split()[:2] == ["Navigation2D-v0", "train"]
    assert lines[4].split()[:2] == ["Bandit-v0", "test"]
    steps = int(lines[3].split()[-2])
    assert steps == 20  # two bandit episodes of 10 pulls


def test_bad_family_name_exits_with_a_clear_error(capsys):
    assert main(["rollout", "NoSuchFamily-v0"]) == 2
    err = capsys.readouterr().err
    assert "unknown task family 'NoSuchFamily-v0'" in err and "HalfCheetahVel-v0" in err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_config_reference_is_generated_from_the_config_classes(capsys):
    import dataclasses

    from metarl.agents import ProtoNetConfig

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "torch_threads          int              default 1, accepted in [1, 1024]" in out
    assert "intra-op threads" in out and "agents (metarl config AGENT for their fields): maml," in out
    sampler = out.split("\nsampler (the run config's sampler section", 1)[1]
    assert "backend                str              default 'local', accepted 'local', 'ray'" in sampler
    assert "max_failures           int              default 3, accepted >= 0" in sampler
    assert [line.split()[0] for line in sampler.splitlines()[1::2][:6]] == \
        ["backend", "workers", "address", "cpus_per_worker", "max_failures", "env_workers"]
    assert main(["config", "protonet", "--markdown"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [f.name for f in dataclasses.fields(ProtoNetConfig)]
    assert "| `distance` | str | `'euclidean'` |  | \"euclidean\" (squared, the paper) or \"cosine\" |" in rows
    assert main(["config", "nope"]) == 2
    assert "unknown agent 'nope'; accepted: maml," in capsys.readouterr().err


def test_list_names_a_family_that_cannot_be_made_and_fails(capsys):
    import gymnasium as gym
    from metarl.envs import register, registry

    def broken(**overrides):
        raise ValueError("my plug-in's bug")

    register("Broken-v0", broken)
    try:
        assert main(["list"]) == 1
    finally:
        registry._REGISTRY.pop("Broken-v0")
        gym.registry.pop("metarl/Broken-v0", None)
    out, err = capsys.readouterr()
    assert "Broken-v0  (BROKEN: ValueError: my plug-in's bug)" in out
    assert "metarl list: error: 1 family cannot be made: Broken-v0" in err
