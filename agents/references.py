"""Classic strategies that RL^2 is compared against (Duan et al. 2016, section 4), as evaluation
references on the same held-out tasks.

Bernoulli bandits: random; greedy (highest posterior mean under a Beta(1, 1) prior); epsilon-greedy
(epsilon 0.1); UCB1 (Auer et al. 2002: each arm once, then the highest ``mean + sqrt(2 ln t / n_i)``);
Thompson sampling (a draw from each arm's Beta posterior); the Gittins index (Gittins 1979) of each arm's
Beta posterior for the discount ``1 - 1/n`` of an ``n``-pull horizon, computed by calibration: for a grid of
retirement rewards ``lam``, one backward induction over all posterior states to depth ``n`` gives where
retiring (``lam / (1 - discount)``) stops being worse than pulling; the index is the smallest such ``lam``.

Tabular MDPs: random, and PSRL (Osband et al. 2013): before each episode, draw an MDP from the posterior
(Dirichlet(1) transitions, Gaussian mean rewards with the N(1, 1) prior and unit noise of the task family)
and act optimally in it for the episode.
Each strategy plays a trial of ``episodes`` episodes per task through the family's own environment.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from metarl.errors import ConfigError
from metarl.task import EnvironmentFamily, Task

__all__ = ["BANDIT_STRATEGIES", "MDP_STRATEGIES", "evaluate_references"]


class _BanditStrategy:
    def __init__(self, arms: int, rng: np.random.Generator, horizon: int):
        self.rng, self.pulls, self.wins, self.t = rng, np.zeros(arms), np.zeros(arms), 0

    def update(self, arm: int, reward: float) -> None:
        self.pulls[arm] += 1
        self.wins[arm] += reward
        self.t += 1

    def _argmax(self, scores: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        return int(self.rng.choice(best))


class RandomArm(_BanditStrategy):
    def act(self) -> int:
        return int(self.rng.integers(len(self.pulls)))


class Greedy(_BanditStrategy):
    def act(self) -> int:
        return self._argmax((self.wins + 1) / (self.pulls + 2))


class EpsilonGreedy(Greedy):
    epsilon = 0.1

    def act(self) -> int:
        return int(self.rng.integers(len(self.pulls))) if self.rng.random() < self.epsilon else super().act()


class UCB1(_BanditStrategy):
    def act(self) -> int:
        if (self.pulls == 0).any():
            return int(np.flatnonzero(self.pulls == 0)[0])
        return self._argmax(self.wins / self.pulls + np.sqrt(2 * np.log(self.t) / self.pulls))


class Thompson(_BanditStrategy):
    def act(self) -> int:
        return self._argmax(self.rng.beta(self.wins + 1, self.pulls - self.wins + 1))


def gittins_indices(depth: int, discount: float, grid: int = 2001) -> np.ndarray:
    """``index[s, f]``: the Gittins index of a Beta(1 + s, 1 + f) Bernoulli arm, for ``s + f < depth``."""
    lam = np.linspace(0.0, 1.0, grid)[:, None]  # [grid, 1] retirement rewards per step
    retire = lam / (1 - discount)
    index = np.zeros((depth, depth))
    # value at the truncation depth: the better of retiring and pulling forever at the posterior mean
    s = np.arange(depth + 1)
    p = (1 + s) / (2 + depth)
    value = np.maximum(retire, p / (1 - discount))  # [grid, depth + 1], indexed by successes
    for total in reversed(range(depth)):
        s = np.arange(total + 1)
        p = (1 + s) / (2 + total)
        pull = p * (1 + discount * value[:, s + 1]) + (1 - p) * discount * value[:, s]
        # the smallest retirement reward at which retiring is at least as good as pulling
        index[s, total - s] = lam[np.argmax(retire >= pull, axis=0), 0]
        value = np.maximum(retire, pull)
    return index


class Gittins(_BanditStrategy):
    _tables: dict[int, np.ndarray] = {}

    def __init__(self, arms: int, rng: np.random.Generator, horizon: int):
        super().__init__(arms, rng, horizon)
        if horizon not in Gittins._tables:
            Gittins._tables[horizon] = gittins_indices(horizon + 1, 1 - 1 / max(horizon, 2))
        self.table = Gittins._tables[horizon]

    def act(self) -> int:
        wins, losses = self.wins.astype(int), (self.pulls - self.wins).astype(int)
        return self._argmax(self.table[wins, losses])


BANDIT_STRATEGIES: dict[str, type] = {
    "random": RandomArm, "greedy": Greedy, "epsilon-greedy": EpsilonGreedy, "UCB1": UCB1, "Thompson": Thompson,
    "Gittins": Gittins,
}


class RandomAction:
    def __init__(self, states: int, actions: int, horizon: int, rng: np.random.Generator):
        self.actions, self.rng = actions, rng

    def start_episode(self) -> None:
        pass

    def act(self, state: int, t: int) -> int:
        return int(self.rng.integers(self.actions))

    def update(self, state: int, action: int, reward: float, next_state: int) -> None:
        pass


class PSRL(RandomAction):
    def __init__(self, states: int, actions: int, horizon: int, rng: np.random.Generator):
        super().__init__(states, actions, horizon, rng)
        self.horizon = horizon
        self.counts = np.ones((states, actions, states))  # Dirichlet(1) posterior parameters
        self.reward_sum, self.visits = np.zeros((states, actions)), np.zeros((states, actions))
        self.policy = np.zeros((horizon, states), dtype=np.int64)

    def start_episode(self) -> None:
        s, a, _ = self.counts.shape
        transitions = np.array([[self.rng.dirichlet(self.counts[i, j]) for j in range(a)] for i in range(s)])
        precision = 1.0 + self.visits  # prior N(1, 1), unit observation noise
        means = self.rng.normal((1.0 + self.reward_sum) / precision, 1.0 / np.sqrt(precision))
        value = np.zeros(s)
        for t in reversed(range(self.horizon)):  # finite-horizon dynamic programming in the sampled MDP
            q = means + transitions @ value
            self.policy[t] = q.argmax(1)
            value = q.max(1)

    def act(self, state: int, t: int) -> int:
        return int(self.policy[t, state])

    def update(self, state: int, action: int, reward: float, next_state: int) -> None:
        self.counts[state, action, next_state] += 1
        self.reward_sum[state, action] += reward
        self.visits[state, action] += 1


MDP_STRATEGIES: dict[str, type] = {"random": RandomAction, "PSRL": PSRL}


def _play(family: EnvironmentFamily, task: Task, make: Callable, episodes: int, seed: int) -> list[float]:
    env = family.make_env(task)
    rng = np.random.default_rng(seed)
    bandit = "probs" in task.keys()
    if bandit:
        strategy = make(int(env.action_space.n), rng, family.horizon * episodes)
    else:
        strategy = make(env.observation_space.shape[0], int(env.action_space.n), family.horizon, rng)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        total, done, t = 0.0, False, 0
        if not bandit:
            strategy.start_episode()
        while not done:
            if bandit:
                action = strategy.act()
            else:
                state = int(np.argmax(obs))
                action = strategy.act(state, t)
            obs, reward, terminated, truncated, _ = env.step(action)
            if bandit:
                strategy.update(action, reward)
            else:
                strategy.update(state, action, reward, int(np.argmax(obs)))
            total, t, done = total + reward, t + 1, terminated or truncated
        returns.append(total)
    return returns


def evaluate_references(family: EnvironmentFamily, tasks: list[Task], episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Per strategy, the return of each episode of a trial on each task: ``[episodes, len(tasks)]``."""
    if "probs" in tasks[0].keys():
        strategies = BANDIT_STRATEGIES
    elif "transitions" in tasks[0].keys():
        strategies = MDP_STRATEGIES
    else:
        raise ConfigError(f"reference strategies exist for Bandit and TabularMDP families, not {tasks[0].family}")
    return {
        name: np.array([_play(family, task, make, episodes, seed + i) for i, task in enumerate(tasks)]).T
        for name, make in strategies.items()
    }
