"""The agent contract and the architecture around it: every agent declares what it is and can do, the command
line asks the declaration instead of probing, the core reaches the agents only through the composition root,
the toolkit's own errors end a command in one line while a bug shows its traceback, and few-shot learners run
on the device their config names."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import toy_episodes
from metarl.agents import AGENTS
from metarl.agents.maml import MAML, MAMLConfig
from metarl.agents.maml_trpo import MAMLTRPO

from metarl.contract import CAPABILITY_PROTOCOLS, Agent, Capability, check_agent
from metarl.errors import CheckpointError, ConfigError, MetaRLError, NonFiniteError, RunDirError
from metarl.running.checkpoint import load_checkpoint, save_checkpoint
from metarl.running.cli import main
from metarl.running.config import RunConfig, build_dataclass
from metarl.running.run import build_run, load, make_family
from metarl.task import EnvironmentFamily, EpisodeSource, protocol_members, provides

ROOT = Path(__file__).resolve().parents[1]
NAV = {"family": "Navigation2D-v0", "family_overrides": {"horizon": 5}, "agent": "maml_trpo", "iterations": 1,
       "evaluate": False, "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [4]}}
SINUSOID = {"family": "Sinusoid-v0", "family_overrides": {"shots": 2, "queries": 2, "num_test_tasks": 4},
            "agent": "maml", "iterations": 2, "evaluate": False, "eval_tasks": 4,
            "agent_config": {"network": "mlp", "hidden_sizes": [8], "inner_lr": 0.01, "meta_batch_size": 2}}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _config(tmp_path: Path, base: dict, **changes) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**base, **changes}))
    return str(path)


# -- the declaration --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(AGENTS))
def test_every_registered_agent_keeps_the_contract_it_declares(name):
    agent_cls = AGENTS[name][0]
    source = make_family("Navigation2D-v0") if agent_cls.learns_from is EnvironmentFamily else toy_episodes()
    small = {"meta_batch_size": 1, "episodes_per_task": 1} if name.startswith("sb3") else {}
    _, agent, _ = build_run(RunConfig(family="unused", agent=name, agent_config=small), source)  # runs check_agent
    assert agent.learns_from in (EnvironmentFamily, EpisodeSource)
    assert all(isinstance(c, Capability) for c in agent.capabilities)


class Incomplete:
    """An agent class that forgets ``curve_axis``, has no ``sampler`` to learn from environments through and
    provides no ``video_policies`` for its VIDEOS."""

    learns_from = EnvironmentFamily
    metric = "return"
    capabilities = frozenset({Capability.VIDEOS})

    def __init__(self):
        self.config = None

    def meta_step(self, tasks, seed): ...
    def adaptation_curve(self, tasks, steps, seed): ...
    def state_dict(self): ...
    def load_state_dict(self, state): ...


def test_check_agent_names_what_an_agent_class_lacks():
    agent = Incomplete()
    with pytest.raises(TypeError, match=r"agent Incomplete lacks curve_axis of the agent contract"):
        check_agent(agent)
    Incomplete.curve_axis = lambda self, points: ("", [])
    try:
        with pytest.raises(TypeError, match="learns from environments but lacks sampler"):
            check_agent(agent)
        agent.sampler = None
        with pytest.raises(TypeError, match="declares the capability 'videos' but lacks video_policies"):
            check_agent(agent)
        agent.capabilities = frozenset()
        agent.metric = "reward"
        with pytest.raises(TypeError, match="scores its curve by 'reward'; accepted metrics: return, accuracy, mse"):
            check_agent(agent)
    finally:
        del Incomplete.curve_axis


def test_the_contract_lists_what_the_trainer_reads():
    assert protocol_members(Agent) == ["config", "learns_from", "metric", "capabilities", "meta_step",
                                       "adaptation_curve", "curve_axis", "state_dict", "load_state_dict"]
    assert set(CAPABILITY_PROTOCOLS) == set(Capability)
    assert protocol_members(CAPABILITY_PROTOCOLS[Capability.ADAPT_IN_CONTEXT]) == ["family", "adapt"]


def test_sources_are_told_apart_without_drawing_their_tasks():
    class Counting:
        """A few-shot source whose held-out episodes count their draws."""

        name, metric, draws = "Counting", "accuracy", 0

        @property
        def test_tasks(self):
            Counting.draws += 1
            return []

        def describe(self): ...
        def batch(self, tasks, device="cpu"): ...

    source = Counting()
    assert provides(source, EpisodeSource) and not provides(source, EnvironmentFamily) and Counting.draws == 0
    assert provides(make_family("Navigation2D-v0"), EnvironmentFamily)


def test_an_agent_given_the_other_kind_of_source_is_refused_by_name(tmp_path, capsys):
    assert main(["train", _config(tmp_path, NAV, family="Sinusoid-v0", family_overrides={}), "--no-progress",
                 "--run-dir", str(tmp_path / "a")]) == 2
    assert "MAMLTRPO learns from environments (meta-RL); <Sinusoid 10-shot> is not a source of them" in \
        capsys.readouterr().err
    assert main(["train", _config(tmp_path, SINUSOID, family="Navigation2D-v0", family_overrides={}),
                 "--no-progress", "--run-dir", str(tmp_path / "b")]) == 2
    assert "MAML learns from few-shot episodes; <TaskFamily Navigation2D-v0 horizon=100> is not" in capsys.readouterr().err


def test_commands_refuse_an_agent_without_the_capability(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", _config(tmp_path, SINUSOID), "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["adapt", str(run), "--task", '{"amplitude": 1.0}']) == 2
    assert "MAML cannot adapt to a task you give" in capsys.readouterr().err
    assert main(["eval", str(run), "--video"]) == 2
    assert "MAML cannot make videos: it does not have the capability 'videos' (its capabilities: step_size)" in \
        capsys.readouterr().err


def test_rollout_leaves_out_episode_sources_and_refuses_one_by_name(capsys, monkeypatch):
    from metarl.running import cli

    assert "Navigation2D-v0" in cli._environment_families()
    assert not {"Omniglot-v0", "Sinusoid-v0"} & set(cli._environment_families())
    assert main(["rollout", "Sinusoid-v0"]) == 2
    assert "'Sinusoid-v0' is a few-shot task source: it has no environment to roll out" in capsys.readouterr().err


def _core_imports() -> dict[str, set[str]]:
    """Each core module (path under metarl/) and the metarl modules it imports, at the top or inside functions."""
    imports = {}
    for path in sorted((ROOT / "metarl").rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        imports[path.relative_to(ROOT / "metarl").as_posix()] = {n for n in names if n.startswith("metarl.")}
    return imports


def test_the_core_reaches_the_agents_only_through_the_composition_root():
    importers = {path for path, names in _core_imports().items()
                 if any(n == "metarl.agents" or n.startswith("metarl.agents.") for n in names)}
    assert importers == {"running/run.py"}


def test_each_room_of_the_core_imports_only_the_rooms_below_it():
    """vocabulary (the top-level files) < networks < rl, fewshot < running; the families (metarl.envs) are made
    by the composition root, the command line and a Ray worker (which makes its family by name)."""
    below = {"": set(), "networks": {""}, "rl": {"", "networks"}, "fewshot": {"", "networks"},
             "running": {"", "networks", "rl", "fewshot"}}
    allowed_envs = {"running/run.py", "running/cli.py", "rl/distributed.py"}
    rooms = set(below) - {""}
    wrong = []
    for path, names in _core_imports().items():
        if path == "__init__.py":  # the package's face: Task, the families, metarl.load
            continue
        room = path.split("/")[0] if "/" in path else ""
        for name in names:
            parts = name.split(".")
            target = parts[1] if parts[1] in rooms | {"envs", "agents"} else ""
            if target in (room, "agents") or (target == "envs" and path in allowed_envs):  # agents: the test above
                continue
            # for annotations only: the Actor and Episodes of an EpisodeAdaptation
            type_only = path == "contract.py" and name.startswith("metarl.rl.sampler")
            if target not in below[room] and not type_only:
                wrong.append(f"{path} imports {name}")
    assert not wrong


# -- errors -----------------------------------------------------------------------------------------------------
def test_the_toolkit_errors_are_value_errors_of_one_family():
    for error in (ConfigError, CheckpointError, RunDirError, NonFiniteError):
        assert issubclass(error, MetaRLError) and issubclass(error, ValueError)


@pytest.mark.parametrize("error", [ConfigError("the config's fault"), NonFiniteError("the run diverged")])
def test_a_toolkit_error_in_training_ends_the_command_in_one_line(tmp_path, capsys, monkeypatch, error):
    def meta_step(self, tasks, seed):
        raise error

    monkeypatch.setattr(MAMLTRPO, "meta_step", meta_step)
    assert main(["train", _config(tmp_path, NAV), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metarl train: error: ") and str(error) in err and err.count("\n") == 1


@pytest.mark.parametrize("error", [ValueError("a bug"), TypeError("a bug"), KeyError("a bug")])
def test_any_other_error_in_training_shows_its_traceback(tmp_path, capsys, monkeypatch, error):
    def meta_step(self, tasks, seed):
        raise error

    monkeypatch.setattr(MAMLTRPO, "meta_step", meta_step)
    with pytest.raises(type(error), match="a bug"):  # not caught: the interpreter prints the traceback
        main(["train", _config(tmp_path, NAV), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert "metarl train: error" not in capsys.readouterr().err


# -- devices ----------------------------------------------------------------------------------------------------
def test_a_device_this_machine_lacks_or_that_does_not_exist_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"device must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"):
        build_dataclass(MAMLConfig, {"device": "gpu"}, "agent_config of maml")
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=f"device '{missing}' is not available: this machine has"):
        build_dataclass(MAMLConfig, {"device": missing}, "agent_config of maml")
    with pytest.raises(ConfigError, match="unknown agent_config of maml_trpo field"):  # MAML-RL runs on the CPU
        build_run(RunConfig(family="Navigation2D-v0", agent="maml_trpo", agent_config={"device": "cpu"}))


def test_a_run_resumes_and_evaluates_on_another_device(tmp_path):
    """The device is where a run computes, not what it computes: resume and eval may change it (here from a
    recorded ``cuda`` to the CPU, as on a machine without the GPU the run was trained on)."""
    run = tmp_path / "run"
    assert main(["train", _config(tmp_path, SINUSOID), "--run-dir", str(run), "--no-progress"]) == 0
    path = run / "checkpoints" / "iter_000002.pt"
    state = load_checkpoint(path)
    recorded = json.loads(state["config"])
    recorded["agent_config"]["device"] = "cuda"
    save_checkpoint({**state, "config": json.dumps(recorded)}, path)
    (run / "config.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    assert main(["train", "--resume", str(run), "iterations=3", "agent_config.device=cpu", "--no-progress"]) == 0
    assert main(["eval", str(run), "agent_config.device=cpu", "--tasks", "2"]) == 0
    assert load(run, device="cpu").device == torch.device("cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_few_shot_learner_trains_evaluates_and_fits_on_cuda(tmp_path):
    def trained(device: str) -> MAML:
        agent = MAML(make_family("Sinusoid-v0", {"shots": 5, "queries": 5}),
                     MAMLConfig(network="mlp", hidden_sizes=[16], inner_lr=0.01, meta_batch_size=4, device=device))
        for it in range(3):
            agent.meta_step(agent.family.sample_tasks(4, seed=it), seed=it)
        return agent

    gpu, cpu = trained("cuda"), trained("cpu")
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    tasks = gpu.family.test_tasks[:8]
    np.testing.assert_allclose(gpu.adaptation_curve(tasks, 2, seed=0), cpu.adaptation_curve(tasks, 2, seed=0),
                               rtol=1e-3, atol=1e-4)
    x = np.linspace(-5, 5, 10, dtype=np.float32)[:, None]
    prediction = gpu.fit(x, np.sin(x[:, 0])).predict(x)
    assert isinstance(prediction, np.ndarray)
    np.testing.assert_allclose(prediction, cpu.fit(x, np.sin(x[:, 0])).predict(x), rtol=1e-3, atol=1e-4)
    protonet = build_run(RunConfig(family="unused", agent="protonet",
                                   agent_config={"channels": 8, "device": "cuda"}), toy_episodes())[1]
    protonet.meta_step(protonet.family.sample_tasks(2, seed=0), seed=0)
    assert protonet.adaptation_curve(protonet.family.test_tasks[:4], 0, seed=0).shape == (1, 4)
    save_checkpoint({"iteration": 1, "agent": protonet.state_dict()}, tmp_path / "iter_000001.pt")
    assert load_checkpoint(tmp_path / "iter_000001.pt")["agent"]["model"]  # read back on the CPU
