"""Environments in worker processes: the same episodes as in one process, errors raised where the call was
made, and no worker left behind when the main process ends or is killed."""

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl
from metarl.errors import ConfigError
from metarl.rl.env_pool import EnvPool, RemoteEnv, WorkerError
from metarl.rl.policies import make_policy
from metarl.rl.sampler import MLPActor, Sampler
from metarl.running.config import RunConfig
from metarl.running.run import build_run


@pytest.fixture(scope="module")
def pool():
    pool = EnvPool(2)
    yield pool
    pool.close()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def _run_both(remote, local, rng, steps):
    """Step remote and local copies with the same actions; every output must be identical."""
    stepper = RemoteEnv.batch_stepper(remote)
    active = np.arange(len(remote))
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (len(active), *remote[0].action_space.shape)).astype(np.float32)
        obs, rewards, terminated, truncated = stepper.step(active, actions)
        expected = [local[i].step(a) for i, a in zip(active, actions, strict=True)]
        np.testing.assert_array_equal(obs, np.stack([e[0] for e in expected]))
        np.testing.assert_array_equal(rewards, [e[1] for e in expected])
        np.testing.assert_array_equal(terminated, [e[2] for e in expected])
        np.testing.assert_array_equal(truncated, [e[3] for e in expected])
        if "success" in expected[0][4]:
            np.testing.assert_array_equal(stepper.success, [bool(e[4]["success"]) for e in expected])
        else:
            assert stepper.success is None
        active = active[~(terminated | truncated)]
        if len(active) == 0:
            break


@pytest.mark.parametrize("name, overrides", [("ML1-v0", {"env_name": "pick-place-v3", "horizon": 10}),
                                             ("Navigation2D-v0", {})])
def test_remote_environments_step_exactly_as_in_this_process(pool, name, overrides):
    family = metarl.envs.make(name, **overrides)
    tasks = family.train_tasks[:3]
    remote = [pool.make(family, t) for t in tasks]
    local = [family.make_env(t) for t in tasks]
    assert {e.worker for e in remote} == {0, 1} and remote[0].family is family
    assert remote[0].observation_space == local[0].observation_space
    rng = np.random.default_rng(0)
    for round_ in range(2):
        if round_:  # switch tasks in place, as the sampler does between calls
            for r, loc, task in zip(remote, local, family.train_tasks[3:6], strict=True):
                r.set_task(task)
                loc.unwrapped.set_task(task)
            assert remote[0].task == family.train_tasks[3]
        seeds = [7, 8, 9]
        obs = RemoteEnv.batch_reset(remote, seeds)
        np.testing.assert_array_equal(obs, np.stack([e.reset(seed=s)[0] for e, s in zip(local, seeds, strict=True)]))
        _run_both(remote, local, rng, steps=family.horizon)
    one = remote[1].step(np.zeros(local[1].action_space.shape, dtype=np.float32))  # a single remote step
    assert isinstance(one[1], float)
    for env in [*remote, *local]:
        env.close()


def test_an_environment_error_is_raised_in_the_caller_and_the_pool_goes_on(pool):
    family = metarl.envs.make("Navigation2D-v0")
    env = pool.make(family, family.train_tasks[0])
    with pytest.raises(gym.error.ResetNeeded, match="before reset") as info:
        env.step(np.zeros(2, dtype=np.float32))
    assert "in environment worker" in "".join(getattr(info.value, "__notes__", []))
    with pytest.raises(ValueError, match="not a Navigation2D-v0 task|belongs to family"):
        env.set_task(metarl.envs.make("ML1-v0").train_tasks[0])
    assert env.reset(seed=0)[0].shape == (2,)
    env.close()


def test_a_dead_worker_is_named():
    pool = EnvPool(1)
    family = metarl.envs.make("Navigation2D-v0")
    env = pool.make(family, family.train_tasks[0])
    os.kill(pool.pids[0], signal.SIGKILL)
    with pytest.raises(WorkerError, match=r"environment worker 0 \(pid \d+\) died"):
        env.reset(seed=0)
    pool.close()
    with pytest.raises(WorkerError, match="closed"):
        pool.make(family, family.train_tasks[0])


def test_a_pool_dropped_without_close_stops_its_workers():
    pool = EnvPool(1)
    pids = pool.pids
    del pool  # the finalizer that also runs at interpreter exit
    assert not [p for p in pids if _alive(p)]


CHILD = """
import time
from metarl.rl.env_pool import EnvPool
pool = EnvPool(2)
print(*pool.pids, flush=True)
time.sleep(120)
"""


def test_workers_end_when_the_main_process_is_killed():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in child.stdout.readline().split()]
    assert len(pids) == 2
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    child.stdout.close()
    deadline = time.monotonic() + 60  # each worker reads end-of-file once it has started up
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)]


def test_the_sampler_with_workers_returns_the_episodes_of_one_process():
    family = metarl.envs.make("ML1-v0", env_name="reach-v3", horizon=10)
    env = family.make_env(family.train_tasks[0])
    actor = MLPActor(make_policy(env.observation_space, env.action_space))
    tasks = family.train_tasks[:2]
    local, pooled = Sampler(family), Sampler(family, workers=2)
    for seed in (0, 1):  # the second call reuses the environments
        ours, theirs = (s.sample(tasks, actor, episodes_per_task=2, seed=seed) for s in (local, pooled))
        for name in ("obs", "actions", "rewards", "mask", "log_probs", "last_obs", "terminated", "success"):
            assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    pids = pooled.pool.pids
    local.close()
    pooled.close()
    assert not [p for p in pids if _alive(p)]


def test_a_run_config_asks_for_worker_processes_in_its_sampler_section():
    config = RunConfig(family="Navigation2D-v0", agent="maml_trpo", sampler={"env_workers": 2})
    sampler = build_run(config)[1].sampler
    assert sampler.workers == 2 and sampler.pool is None  # the processes start with the first environment
    with pytest.raises(ConfigError, match="env_workers"):
        build_run(RunConfig(family="Navigation2D-v0", agent="maml_trpo", sampler={"env_workers": 0}))
