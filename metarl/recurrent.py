"""Recurrent policies that adapt in context, and the actor that runs them in the sampler.

The policy reads, at every step, the observation, the previous action (one-hot when discrete), the
previous reward and a flag that the previous step ended an episode (Duan et al. 2016, section 2.2).
Its hidden state is the fast learner: :class:`RecurrentActor` keeps it across the episodes of a trial
and starts each trial from zeros. The inputs it fed are recorded, so the update can recompute the same
log-probabilities by unrolling the same network over the recorded sequence.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

__all__ = ["RecurrentActor", "RecurrentController", "RecurrentCritic", "RecurrentPolicy"]

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentPolicy(nn.Module):
    """GRU (or LSTM) policy with a Gaussian or categorical head and a value head."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden_size: int = 256,
                 cell: str = "gru", init_std: float = 1.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; accepted: {', '.join(CELLS)}")
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"recurrent policies take flat Box observations, got {observation_space}")
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise ValueError(f"no recurrent policy for action space {action_space}; accepted: flat Box or Discrete")
        self.act_dim = int(action_space.n) if self.discrete else action_space.shape[0]
        self.obs_dim, self.hidden_size, self.cell = observation_space.shape[0], hidden_size, cell
        self.input_size = self.obs_dim + self.act_dim + 2
        self.rnn = CELLS[cell](self.input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, self.act_dim)
        self.value = nn.Linear(hidden_size, 1)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((self.act_dim,), float(np.log(init_std))))

    @property
    def state_size(self) -> int:
        return self.hidden_size * (2 if self.cell == "lstm" else 1)

    def initial_state(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.state_size)

    def encode_action(self, action: torch.Tensor) -> torch.Tensor:
        """Actions as network inputs: one-hot when discrete."""
        return nn.functional.one_hot(action.long(), self.act_dim).float() if self.discrete else action.float()

    def inputs(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
               prev_done: torch.Tensor) -> torch.Tensor:
        """``[obs, previous action (encoded; zeros before the first), previous reward, previous done]``."""
        return torch.cat([obs, prev_action, prev_reward[..., None], prev_done[..., None]], dim=-1)

    def forward(self, inputs: torch.Tensor, state: torch.Tensor) -> tuple[Distribution, torch.Tensor, torch.Tensor]:
        """:meth:`unroll` (so that ``torch.func.functional_call`` can run it with other parameters)."""
        return self.unroll(inputs, state)

    def unroll(self, inputs: torch.Tensor, state: torch.Tensor) -> tuple[Distribution, torch.Tensor, torch.Tensor]:
        """Run ``inputs [n, L, in]`` from ``state [n, S]``: (action distributions [n, L], values [n, L], final state)."""
        if self.cell == "lstm":
            h, c = state.split(self.hidden_size, dim=-1)
            out, (h, c) = self.rnn(inputs, (h[None].contiguous(), c[None].contiguous()))
            final = torch.cat([h[0], c[0]], dim=-1)
        else:
            out, h = self.rnn(inputs, state[None].contiguous())
            final = h[0]
        logits = self.head(out)
        if self.discrete:
            dist: Distribution = Categorical(logits=logits)
        else:
            dist = Independent(Normal(logits, self.log_std.exp().expand_as(logits)), 1)
        return dist, self.value(out).squeeze(-1), final

    def sample(self, dist: Distribution, generator: torch.Generator) -> torch.Tensor:
        if self.discrete:
            probs = dist.probs.reshape(-1, dist.probs.shape[-1])
            return torch.multinomial(probs, 1, generator=generator).reshape(dist.probs.shape[:-1])
        base = dist.base_dist
        return base.loc + base.scale * torch.randn(base.loc.shape, generator=generator)


class RecurrentCritic(nn.Module):
    """A value network with its own recurrent cell, reading the policy's inputs from a zero state."""

    def __init__(self, input_size: int, hidden_size: int, cell: str = "gru"):
        super().__init__()
        self.rnn = CELLS[cell](input_size, hidden_size, batch_first=True)
        self.value = nn.Linear(hidden_size, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Values ``[n, L]`` of ``inputs [n, L, in]``."""
        return self.value(self.rnn(inputs)[0]).squeeze(-1)


class RecurrentActor:
    """Acts for ``n`` slots with a recurrent policy across several sampler calls (the episodes of a trial).

    Records, per call, the network inputs ``[n, T, in]`` and value estimates ``[n, T]``; slots whose
    episode has ended keep their hidden state until the next episode of the trial starts.
    """

    def __init__(self, policy: RecurrentPolicy, n: int, generator: torch.Generator):
        self.policy, self.generator = policy, generator
        self.state = policy.initial_state(n)
        self.prev_action = torch.zeros(n, policy.act_dim)  # encoded; zeros: no action yet in this trial
        self.prev_reward = torch.zeros(n)
        self.prev_done = torch.zeros(n)
        self.inputs: list[list[torch.Tensor]] = []
        self.values: list[list[torch.Tensor]] = []
        self._new_episode = True

    def act(self, obs: torch.Tensor, active: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self._new_episode:
            self.inputs.append([])
            self.values.append([])
            self._new_episode = False
        x = self.policy.inputs(obs, self.prev_action, self.prev_reward, self.prev_done)
        dist, value, state = self.policy.unroll(x[:, None], self.state)
        action = self.policy.sample(dist, self.generator)[:, 0]
        log_prob = dist.log_prob(action[:, None])[:, 0]
        keep = torch.zeros(len(obs), dtype=torch.bool)
        keep[torch.as_tensor(active)] = True
        self.state = torch.where(keep[:, None], state, self.state)
        self._pending = (keep, action)
        self.inputs[-1].append(x)
        self.values[-1].append(value[:, 0])
        return action, log_prob

    def observe(self, active: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        keep, action = self._pending
        idx = torch.as_tensor(active)
        self.prev_action[idx] = self.policy.encode_action(action[idx])
        self.prev_reward[idx] = torch.as_tensor(rewards, dtype=torch.float32)
        self.prev_done[idx] = torch.as_tensor(done, dtype=torch.float32)

    def end_episode(self) -> None:
        """Mark the start of the trial's next episode: its first input carries done = 1."""
        self._new_episode = True
        self.prev_done.fill_(1.0)

    def episode_record(self, j: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``[n, horizon, in]`` and values ``[n, horizon]`` of episode ``j``, zero-padded."""
        x, v = torch.stack(self.inputs[j], dim=1), torch.stack(self.values[j], dim=1)
        pad = horizon - x.shape[1]
        return nn.functional.pad(x, (0, 0, 0, pad)), nn.functional.pad(v, (0, pad))


class RecurrentController:
    """A recurrent policy acting in one environment, its hidden state kept across the episodes of a trial:
    ``act(obs)`` before each step, ``observe(reward, done)`` after it, ``end_episode()`` between episodes.

    ``returns``: the return of every episode it finished. With ``action_space`` (a Box), actions are clipped
    to its bounds as the sampler clips them."""

    def __init__(self, policy: RecurrentPolicy, seed: int, action_space: gym.Space | None = None):
        self.policy, self.generator, self.action_space = policy, torch.Generator().manual_seed(seed), action_space
        self.state = policy.initial_state(1)
        self.prev_action = torch.zeros(1, policy.act_dim)
        self.prev_reward, self.prev_done = torch.zeros(1), torch.zeros(1)
        self._action = torch.zeros(1)
        self.returns: list[float] = []
        self._return = 0.0

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The action at ``obs``: sampled, or the distribution's mode with ``deterministic``."""
        x = self.policy.inputs(torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None], self.prev_action,
                               self.prev_reward, self.prev_done)
        dist, _, self.state = self.policy.unroll(x[:, None], self.state)
        self._action = (dist.mode if deterministic else self.policy.sample(dist, self.generator))[:, 0]
        action = self._action[0].numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            action = np.clip(action, self.action_space.low, self.action_space.high)
        return action

    def observe(self, reward: float, done: bool) -> None:
        self.prev_action = self.policy.encode_action(self._action)
        self.prev_reward = torch.tensor([float(reward)])
        self.prev_done = torch.tensor([float(done)])
        self._return += float(reward)
        if done:
            self.returns.append(self._return)
            self._return = 0.0

    def end_episode(self) -> None:
        self.prev_done.fill_(1.0)
