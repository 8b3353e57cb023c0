"""Malformed configs and overrides, table-driven: each is refused before any training, with exit code 2 and
one line on stderr naming the field or the file."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from metarl.agents import AGENTS

from metarl.running.cli import main
from metarl.running.config import RANGES, RunConfig, load_config

BASE = {
    "family": "Navigation2D-v0",
    "family_overrides": {"horizon": 5},
    "agent": "maml_trpo",
    "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [4]},
    "iterations": 1,
    "evaluate": False,
}
RL2 = {"family": "Bandit-v0", "agent": "rl2", "agent_config": {"meta_batch_size": 2, "hidden_size": 4}}
SINUSOID = {"family": "Sinusoid-v0", "family_overrides": {}, "agent": "maml",
            "agent_config": {"network": "mlp", "hidden_sizes": [4]}}
PROMP = {"agent": "promp"}
SB3 = {"agent": "sb3_pretrained", "agent_config": {"meta_batch_size": 1, "episodes_per_task": 1}}

# (changes to BASE, overrides, what the message must name)
OVERRIDES = [
    ({}, ["agent_config.max_kl=-1"], "max_kl=-1.0 is out of range: accepted > 0"),
    ({}, ["agent_config.max_kl=1e400"], "'agent_config.max_kl' must be finite, got inf"),
    ({}, ["agent_config.ls_backtrack_ratio=1.5"], "ls_backtrack_ratio=1.5 is out of range: accepted in (0, 1)"),
    ({}, ["agent_config.ls_backtrack_ratio=0"], "ls_backtrack_ratio=0.0 is out of range"),
    ({}, ["agent_config.ls_max_steps=0"], "ls_max_steps=0"),
    ({}, ["agent_config.cg_iters=0"], "cg_iters=0 is out of range: accepted >= 1"),
    ({}, ["agent_config.cg_damping=-1e-3"], "cg_damping=-0.001"),
    ({}, ["agent_config.hidden_sizes=[0]"], "hidden_sizes=[0] is out of range"),
    ({}, ["agent_config.hidden_sizes=[-4, 8]"], "hidden_sizes=[-4, 8] is out of range"),
    ({}, ["agent_config.hidden_sizes=[100000]"], "hidden_sizes=[100000] is out of range: accepted in [1, 65536]"),
    ({}, ["agent_config.hidden_sizes=[1099511627776]"], "'agent_config.hidden_sizes' is too large: 1099511627776"),
    ({}, ["agent_config.hidden_sizes=[1.5]"], "'hidden_sizes' expects list[int], got [1.5]"),
    ({}, ["agent_config.hidden_sizes=8"], "'hidden_sizes' expects list[int], got 8"),
    ({}, ["agent_config.hidden_sizes=[a]"], "'hidden_sizes' expects list[int], got ['a']"),
    ({}, ["agent_config.inner_lr=.nan"], "'agent_config.inner_lr' must be finite, got nan"),
    ({}, ["agent_config.inner_lr=-.inf"], "'agent_config.inner_lr' must be finite, got -inf"),
    ({}, ["agent_config.inner_lr=-0.1"], "inner_lr=-0.1 is out of range"),
    ({}, ["agent_config.inner_lr=0"], "inner_lr=0.0 is out of range"),
    ({}, ["agent_config.inner_lr=fast"], "'inner_lr' expects float, got 'fast'"),
    ({}, ["agent_config.inner_steps=-1"], "inner_steps=-1"),
    ({}, ["agent_config.gamma=1.5"], "gamma=1.5 is out of range: accepted in (0, 1]"),
    ({}, ["agent_config.gamma=0"], "gamma=0.0 is out of range"),
    ({}, ["agent_config.gae_lambda=-0.1"], "gae_lambda=-0.1"),
    ({}, ["agent_config.meta_batch_size=0"], "meta_batch_size=0"),
    ({}, ["agent_config.episodes_per_task=-2"], "episodes_per_task=-2"),
    ({}, ["agent_config.init_std=0"], "init_std=0.0"),
    ({}, ["agent_config.metric=newton"], "metric must be one of"),
    ({}, ["agent_config.metric_subsample=0"], "metric_subsample=0.0 is out of range: accepted in (0, 1]"),
    ({}, ["agent_config.inner_estimator=xyz"], "inner_estimator must be one of"),
    ({}, ["agent_config.first_order=maybe"], "'first_order' expects bool, got 'maybe'"),
    ({}, ["agent_config.nope=1"], "unknown agent_config of maml_trpo field(s) 'nope'"),
    ({}, ["agent_config=5"], "'agent_config' expects dict"),
    ({}, ["seed=99999999999999999999"], "'seed' is too large: 99999999999999999999"),
    ({}, ["seed=-1"], "seed=-1 is out of range: accepted >= 0"),
    ({}, ["seed=true"], "'seed' expects int, got True"),
    ({}, ["seed=2.5"], "'seed' expects int, got 2.5"),
    ({}, ["iterations=1e40"], "'iterations' is too large"),
    ({}, ["iterations=0"], "iterations=0 is out of range"),
    ({}, ["checkpoint_every=0"], "checkpoint_every=0"),
    ({}, ["eval_tasks=0"], "eval_tasks=0"),
    ({}, ["eval_steps=-1"], "eval_steps=-1"),
    ({}, ["torch_threads=0"], "torch_threads=0"),
    ({}, ["evaluate=maybe"], "'evaluate' expects bool"),
    ({}, ["agent=mamml"], "unknown agent 'mamml'"),
    ({}, ["family=NoSuch-v0"], "unknown task family 'NoSuch-v0'"),
    ({}, ["family_overrides.horizon=0"], "horizon must be a positive integer, got 0"),
    ({}, ["family_overrides.horizon=.nan"], "'family_overrides.horizon' must be finite"),
    ({}, ["family_overrides.nope=1"], "unknown override(s) 'nope' for task family 'Navigation2D-v0'"),
    ({}, ["family_overrides=[1]"], "'family_overrides' expects dict"),
    ({}, ["seed"], "override 'seed' is not of the form key=value"),
    ({}, ["=5"], "override '=5' is not of the form key=value"),
    ({}, ["agent_config.=3"], "override 'agent_config.=3' is not of the form key=value"),
    ({}, ["seed=["], "override 'seed=[' is not valid YAML"),
    ({}, ["seed=1", "seed.x=2"], "override 'seed.x=2' sets a field inside seed"),
    (RL2, ["agent_config.learning_rate=0"], "learning_rate=0.0 is out of range"),
    (RL2, ["agent_config.clip_eps=-0.2"], "clip_eps=-0.2"),
    (RL2, ["agent_config.cell=rnn"], "unknown recurrent cell 'rnn'; accepted: gru, lstm"),
    (RL2, ["agent_config.max_grad_norm=0"], "max_grad_norm=0.0"),
    (RL2, ["agent_config.entropy_coef=-1"], "entropy_coef=-1.0"),
    (SINUSOID, ["agent_config.lr=-1e-3"], "lr=-0.001 is out of range"),
    (SINUSOID, ["agent_config.grad_clip=-1"], "grad_clip=-1.0"),
    (SINUSOID, ["agent_config.hidden_sizes=[40, 0]"], "hidden_sizes=[40, 0]"),
    (PROMP, ["agent_config.promp_steps=0"], "promp_steps=0"),
    (PROMP, ["agent_config.target_inner_kl=0"], "target_inner_kl=0.0"),
    (SB3, ["agent_config.tau=2"], "tau=2.0 is out of range: accepted in (0, 1]"),
    (SB3, ["agent_config.buffer_size=0"], "buffer_size=0"),
]

# (the file's text, what the message must name; {path} is the file); were one accepted, its run would be tiny
TINY_TAIL = "iterations: 1\nevaluate: false\nfamily_overrides: {horizon: 5}\n"
TINY_AGENT = "meta_batch_size: 2, episodes_per_task: 2, hidden_sizes: [4]"
FILES = [
    (f"family: Navigation2D-v0\nagent: maml_trpo\nseed: 1\nseed: 2\nagent_config: {{{TINY_AGENT}}}\n{TINY_TAIL}",
     "duplicate key 'seed' at line 4"),
    (f"family: Navigation2D-v0\nagent: maml_trpo\nagent_config: {{{TINY_AGENT}, inner_lr: 0.1, inner_lr: 0.2}}\n"
     f"{TINY_TAIL}", "duplicate key 'inner_lr'"),
    ("family: Navigation2D-v0\nagent: [maml_trpo\n", "config file {path!r} is not valid YAML"),
    ("", "config file {path!r} is empty"),
    ("- family\n- agent\n", "config file {path!r} must hold a mapping, got list"),
    (f"agent: maml_trpo\n{TINY_TAIL}", "run config lacks the required field(s) 'family'"),
    (f"family: Navigation2D-v0\n{TINY_TAIL}", "run config lacks the required field(s) 'agent'"),
    (b"family: Navigation2D-v0\nagent: maml\xff\n", "config file {path!r} is not UTF-8 text (byte 0xff"),
]


def _run(tmp_path: Path, text: str | bytes, overrides: list[str], capsys) -> str:
    config = tmp_path / "config.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = main(["train", str(config), *overrides, "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("metarl train: error: "), err
    assert not (tmp_path / "run").exists()
    return err


@pytest.mark.parametrize("changes, overrides, named", OVERRIDES, ids=[" ".join(o) for _, o, _ in OVERRIDES])
def test_a_malformed_override_is_refused_in_one_line_naming_it(tmp_path, capsys, changes, overrides, named):
    base = {**BASE, **changes}
    assert named in _run(tmp_path, yaml.safe_dump(base), overrides, capsys)


@pytest.mark.parametrize("text, named", FILES)
def test_a_malformed_config_file_is_refused_in_one_line_naming_it(tmp_path, capsys, text, named):
    assert named.format(path=str(tmp_path / "config.yaml")) in _run(tmp_path, text, [], capsys)


@pytest.mark.parametrize("path, named", [("missing.yaml", "does not exist"), (".", "is a directory")])
def test_a_config_path_that_is_not_a_file_is_named(tmp_path, capsys, path, named):
    assert main(["train", str(tmp_path / path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"config file {str(tmp_path / path)!r} {named}" in err


def test_numbers_parse_in_the_forms_people_write(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**RL2, "iterations": 3}))
    config = load_config(path, ["agent_config.learning_rate=3e-4", "agent_config.max_kl=1E-2", "iterations=1e4",
                                "agent_config.clip_eps=.2"])
    assert config.agent_config["learning_rate"] == 3e-4 and config.agent_config["max_kl"] == 0.01
    assert config.iterations == 10000 and config.agent_config["clip_eps"] == 0.2
    assert load_config(path, ["family_overrides.name=1e3"]).family_overrides["name"] == 1000.0


def test_every_numeric_config_field_has_a_range():
    """The ranges are by field name; a numeric field of any agent's config without one would go unchecked."""
    unranged = set()
    for cls in [RunConfig, *(config for _, config in AGENTS.values())]:
        for f in dataclasses.fields(cls):
            hint = str(typing.get_type_hints(cls)[f.name])
            if any(t in hint for t in ("int", "float")) and f.name not in RANGES:
                unranged.add(f"{cls.__name__}.{f.name}")
    assert not unranged
    assert len(OVERRIDES) + len(FILES) >= 50
