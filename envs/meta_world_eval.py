"""Meta-World's own evaluation protocol for trained metarl agents (``metaworld.evaluation``, metaworld 3.1.1).

:func:`metaworld_evaluation` lets ``metaworld.evaluation.metalearning_evaluation`` score an agent on the test
environments Meta-World builds itself (:func:`make_test_envs`: ``metaworld.make_ml_envs_test``, never the ML1
vector id, whose train split is the test split). Per test class, ``goals_per_class`` goals are spread over
``meta_batch_size / classes`` environments, each cycling through its own. In each of ``num_evals`` rounds
(a new goal per environment) the agent adapts (``adaptation_steps`` times: ``adaptation_episodes`` episodes on
every environment, then ``adapt()``), then evaluation episodes run on every environment, each ending at its
first step with ``info["success"]``: an episode succeeds if its last step succeeded, that is if any step did.
Meta-World reports the success rate (mean over classes, and per class) and the mean return of the evaluation
episodes (which stop at success, so their returns are not full-horizon returns).

How the evaluator counts (``metaworld/evaluation.py``, ``evaluation``): per class, not per environment, and
only the first ``evaluation_episodes`` episodes to end, the loop stopping once every class has that many.
With more environments per class than ``evaluation_episodes`` (the defaults: 20 for ML1, 4 for ML10/ML45,
against 3) the other environments' episodes are not counted, and since successful episodes end early, they
are the ones counted first: the rate leans towards success. With one environment per class
(``meta_batch_size`` = the number of test classes) every episode counts, one goal per class per round.

:class:`MetaWorldAgent` presents a metarl agent as Meta-World's ``MetaLearningAgent``. The agent declares
:attr:`metarl.contract.Capability.ADAPT_ON_GIVEN_EPISODES` and gives an :class:`metarl.contract.EpisodeAdaptation`
(the adapter refuses any other agent, naming it and the capability); environment ``k`` is its task ``k``:

- MAML-TRPO and ProMP act with their meta-parameters, one copy per environment; ``adapt()`` takes one inner
  policy-gradient step per environment on that environment's adaptation episodes (the agent's own advantages
  and inner step); the evaluation episodes act with the adapted parameters;
- RL² runs the adaptation and the evaluation episodes as one trial, its hidden state carried throughout and
  reset by ``init()`` only;
- PEARL acts with ``z`` from the prior, then, after each adaptation step, from the posterior over the context of
  every adaptation episode so far (the prior's while fewer than its ``num_exp_traj_eval`` episodes have run).

Its randomness follows the sampler's streams (:func:`metarl.seeding.episode_streams`): round ``i`` has the seed
``(seed, i)``, and each episode draws from the stream the agent's own evaluation gives it
(``EpisodeAdaptation.stream``): a MAML agent's adaptation step ``s`` (the evaluation after ``S`` steps: ``s = S``)
as its ``collect`` samples step ``s`` with ``episodes_per_task = adaptation_episodes``; RL²'s trial as
``run_trials`` with one trial per task; PEARL's episode ``j`` of the round as trajectory ``j`` of its evaluation.
On the same goals, the adaptation and evaluation episodes are therefore those of our own evaluation, and so are
the adapted parameters (to rounding: the policy runs on batches of another shape), RL²'s hidden state and, with
one adaptation episode per step, PEARL's ``z`` (tested).

Two things the protocol does not give an agent: the observation after an episode's last step (so agents that
read it, MAML-RL with ``bootstrap_time_limit`` and PEARL with ``use_next_obs_in_context``, are refused) and, in
the evaluation episodes, the rewards. An in-context agent reads the previous reward from the observation, which
the environments carry with Meta-World's ``RNNBasedMetaRLWrapper`` (raw rewards), except at the first step of an
episode, where the wrapper writes zeros: there the adapter passes on the last reward it read (that of the step
before the last).
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

import numpy as np
import torch

from metarl.contract import Capability, require
from metarl.errors import ConfigError
from metarl.rl.sampler import Episodes, noise_shape, where_state
from metarl.seeding import derive_seed, episode_streams
from metarl.task import Task

from .meta_world import MetaWorldFamily, _metaworld

__all__ = ["MetaWorldAgent", "make_test_envs", "metaworld_evaluation"]


class MetaWorldAgent:
    """A trained agent (with :attr:`Capability.ADAPT_ON_GIVEN_EPISODES`) as ``metaworld.evaluation.MetaLearningAgent``,
    acting on ``envs`` (from :func:`make_test_envs`) with ``adaptation_episodes`` episodes per adaptation step, its
    draws derived from ``seed``."""

    def __init__(self, agent: Any, envs: Any, family: MetaWorldFamily, adaptation_episodes: int, seed: int):
        require(agent, Capability.ADAPT_ON_GIVEN_EPISODES, "be scored by Meta-World's protocol")
        self.adaptation = agent.episode_adaptation(adaptation_episodes)
        self.envs, self.family, self.seed, self.horizon = envs, family, seed, family.horizon
        probe = family.make_env(family.test_tasks[0])
        self.space = probe.action_space  # actions go to the environments as the sampler sends them: of this dtype
        probe.close()
        self.obs_dim = envs.single_observation_space.shape[0] - self.space.shape[0] - 2  # less the wrapper's fields
        self.round, self.env_steps = -1, 0

    # -- the protocol -----------------------------------------------------------------------------
    def init(self) -> None:
        """A new round: the agent's adaptation begins on the goals the environments now hold."""
        n = self.envs.num_envs
        self.round += 1
        self.adapt_steps = 0
        self.tasks = self._current_tasks()
        self.adaptation.begin(self.tasks, derive_seed(self.seed, self.round))
        self.state = self.adaptation.actor.initial_state(n)
        self.episode = np.zeros(n, dtype=np.int64)  # of the adaptation step, or of the evaluation
        self.t = np.zeros(n, dtype=np.int64)  # steps taken in the current episode
        self.noise = torch.zeros(n, self.horizon, *noise_shape(self.space))
        self.pending = np.zeros(n, dtype=bool)  # acted in the evaluation, outcome not yet observed
        self.last_action = torch.zeros(n, *self.space.shape)
        self.last_reward = torch.zeros(n)
        self.records: list[list[dict[str, list[torch.Tensor]]]] = [[] for _ in range(n)]

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        starting, action, log_prob = self._act(observations)
        obs = torch.as_tensor(np.asarray(observations)[:, : self.obs_dim], dtype=torch.float32)
        for k in range(len(action)):  # what the adaptation step will read
            if starting[k]:
                self.records[k].append({"obs": [], "actions": [], "log_probs": [], "rewards": [], "done": False})
            record = self.records[k][-1]
            record["obs"].append(obs[k])
            record["actions"].append(action[k])
            record["log_probs"].append(log_prob[k])
        return self._clipped(action), {"log_prob": log_prob.numpy()}

    def step(self, timestep: Any) -> None:
        """The outcome of an adaptation step: observed at once, as the sampler observes."""
        rewards = torch.as_tensor(np.asarray(timestep.reward, dtype=np.float32))
        done = np.logical_or(timestep.terminated, timestep.truncated)
        self._observe(np.ones(len(done), dtype=bool), rewards, done)
        for k in range(len(done)):
            self.records[k][-1]["rewards"].append(rewards[k])
            self.records[k][-1]["done"] = bool(done[k])
        self._end_episodes(done)

    def adapt(self) -> None:
        """The agent's adaptation step on the step's episodes (an inner step, a posterior; nothing for RL², whose
        hidden state has adapted). The evaluator resets every environment next."""
        self._end_episodes(self.t > 0)
        self.adaptation.adapt(self._episodes())
        self.episode[:] = 0
        self.records = [[] for _ in range(len(self.records))]
        self.adapt_steps += 1

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        pending = self.pending.copy()
        if pending.any():  # the wrapper's fields: the previous step's reward (its action is the one taken)
            rewards = torch.as_tensor(observations[:, -2], dtype=torch.float32)
            self._observe(pending, rewards, np.zeros(len(pending), dtype=bool))
        _, action, _ = self._act(observations)
        self.pending[:] = True
        return self._clipped(action)

    def reset(self, env_mask: np.ndarray) -> None:
        """Evaluation episodes ending (and the evaluation starting): the reward of the last step is not given;
        the last one read stands in for it."""
        ended = np.asarray(env_mask, dtype=bool) & (self.t > 0)
        if (ended & self.pending).any():
            self._observe(ended & self.pending, self.last_reward, np.ones(len(ended), dtype=bool))
        self._end_episodes(ended)

    # -- acting -----------------------------------------------------------------------------------
    def _stream(self, k: int) -> tuple[int, torch.Tensor]:
        """The episode-start seed and the action noise ``[horizon, ...]`` of environment ``k``'s current episode."""
        seed, per_task, index = self.adaptation.stream(self.adapt_steps, int(self.episode[k]))
        j, row = divmod(index, per_task)  # slot index % per_task of the call's episode index // per_task
        streams = episode_streams(seed, [k], per_task, j, self.horizon, noise_shape(self.space))
        return int(streams.starts[row]), streams.noise[row]

    def _act(self, observations: np.ndarray) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Which environments start an episode, and the actions (unclipped) and their log-probabilities."""
        starting, actor = self.t == 0, self.adaptation.actor
        if starting.any():
            starts = np.zeros(len(starting), dtype=np.uint32)
            for k in np.flatnonzero(starting):
                starts[k], self.noise[k] = self._stream(k)
            self.state = where_state(torch.from_numpy(starting), actor.begin_episode(self.state, starts), self.state)
        obs = torch.as_tensor(np.asarray(observations)[:, : self.obs_dim], dtype=torch.float32)
        with torch.no_grad():
            action, log_prob, self.state = actor.act(obs, self.state,
                                                     self.noise[torch.arange(len(obs)), torch.from_numpy(self.t)])
        self.last_action = action
        self.t += 1
        self.env_steps += len(obs)
        return starting, action, log_prob

    def _clipped(self, action: torch.Tensor) -> np.ndarray:
        return np.clip(action.numpy(), self.space.low, self.space.high)

    def _observe(self, which: np.ndarray, rewards: torch.Tensor, done: np.ndarray) -> None:
        keep = torch.from_numpy(which)
        with torch.no_grad():
            after = self.adaptation.actor.observe(self.state, self.last_action, rewards,
                                                  torch.from_numpy(done.astype(np.float32)))
        self.state = where_state(keep, after, self.state)
        self.last_reward = torch.where(keep, rewards, self.last_reward)
        self.pending[which] = False

    def _end_episodes(self, ended: np.ndarray) -> None:
        self.episode[ended] += 1
        self.t[ended] = 0

    # -- what an adaptation step reads ---------------------------------------------------------------
    def _episodes(self) -> Episodes:
        """Each environment's finished adaptation episodes as the sampler returns them, padded to the horizon."""
        count = min(sum(r["done"] for r in records) for records in self.records)
        n, horizon = len(self.records), self.horizon
        obs = torch.zeros(n, count, horizon, self.obs_dim)
        actions = torch.zeros(n, count, horizon, *self.space.shape)
        rewards, mask, log_probs = (torch.zeros(n, count, horizon) for _ in range(3))
        for k, records in enumerate(self.records):
            for e, record in enumerate([r for r in records if r["done"]][:count]):
                length = len(record["rewards"])
                obs[k, e, :length] = torch.stack(record["obs"])
                actions[k, e, :length] = torch.stack(record["actions"])
                rewards[k, e, :length] = torch.stack(record["rewards"])
                log_probs[k, e, :length] = torch.stack(record["log_probs"])
                mask[k, e, :length] = 1.0
        # No final observation is given (the agents that read it refuse the protocol): zeros stand in for it.
        return Episodes(tasks=self.tasks, obs=obs, actions=actions, rewards=rewards, mask=mask, log_probs=log_probs,
                        last_obs=torch.zeros(n, count, self.obs_dim),
                        terminated=torch.zeros(n, count, dtype=torch.bool))

    def _current_tasks(self) -> list[Task]:
        """The goal each environment holds this round, as a task of the family."""
        names = self.envs.get_attr("task_name")
        by_class = {cls.__name__: name for name, cls in self.family.env_classes.items()}
        vectors = self.envs.get_attr("_last_rand_vec")
        return [Task(self.family.name, {"env_name": by_class[n], "rand_vec": tuple(map(float, v))})
                for n, v in zip(names, vectors, strict=True)]


def make_test_envs(family: MetaWorldFamily, goals_per_class: int = 40, meta_batch_size: int = 20,
                   split: str = "test") -> Any:
    """The test environments Meta-World builds for ``family``'s benchmark and seed (``make_ml_envs_test``): the first
    ``goals_per_class`` test goals of each class spread over ``meta_batch_size`` environments, episodes cut at the
    family's horizon, the previous action, reward and done flag appended to the observation (raw rewards). With
    ``split="train"``, the same on the training classes and goals (the meta-train success rate)."""
    if not isinstance(family, MetaWorldFamily):
        raise ConfigError(f"Meta-World's protocol scores agents of the Meta-World families (ML1-v0, ML10-v0, ML45-v0), "
                          f"not {family.name}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    classes = len(family.split_classes[split])
    for name, value in (("goals_per_class", goals_per_class), ("meta_batch_size", meta_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if meta_batch_size % classes or goals_per_class % (meta_batch_size // classes) or goals_per_class > 50:
        raise ConfigError(f"Meta-World spreads each of the {classes} {split} classes' goals evenly over meta_batch_size / "
                          f"{classes} environments: meta_batch_size must be a multiple of {classes} and goals_per_class "
                          f"(at most 50) a multiple of meta_batch_size / {classes}; got {meta_batch_size} and "
                          f"{goals_per_class}")
    name = family.env_name if family.benchmark == "ML1" else family.benchmark
    return _metaworld().make_ml_envs_test(name, seed=family.seed, split=split, meta_batch_size=meta_batch_size,
                                          total_tasks_per_cls=goals_per_class, max_episode_steps=family.horizon,
                                          recurrent_info_in_obs=True, normalize_reward_in_recurrent_info=False)


def metaworld_evaluation(agent: Any, family: MetaWorldFamily, envs: Any, *, seed: int, num_evals: int = 10,
                         adaptation_steps: int = 1, adaptation_episodes: int = 10,
                         evaluation_episodes: int = 3) -> dict[str, Any]:
    """Score ``agent`` with ``metaworld.evaluation.metalearning_evaluation`` on ``envs`` (from :func:`make_test_envs`,
    which may serve several evaluations); the defaults are Meta-World's. Its numbers and settings, JSON-ready."""
    counts = {"num_evals": num_evals, "adaptation_steps": adaptation_steps, "adaptation_episodes": adaptation_episodes,
              "evaluation_episodes": evaluation_episodes}
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    from metaworld.evaluation import metalearning_evaluation

    adapter = MetaWorldAgent(agent, envs, family, adaptation_episodes, seed)
    start = time.perf_counter()
    success, mean_return, per_class = metalearning_evaluation(adapter, envs, **counts)
    classes = len(set(envs.get_attr("task_name")))
    return {"protocol": f"metaworld.evaluation.metalearning_evaluation (metaworld {metadata.version('metaworld')})",
            "benchmark": family.env_name if family.benchmark == "ML1" else family.benchmark,
            "benchmark_seed": family.seed, "seed": seed, "max_episode_steps": family.horizon,
            "meta_batch_size": envs.num_envs, "goals_per_class": sum(map(len, envs.get_attr("tasks"))) // classes,
            **counts, "counted_episodes_per_class": num_evals * evaluation_episodes, "success_rate": float(success),
            "mean_return": float(mean_return),
            "per_class_success": {k: float(v) for k, v in sorted(per_class.items())},
            "env_steps": adapter.env_steps, "seconds": time.perf_counter() - start}
