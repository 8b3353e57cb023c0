"""Recurrent policies that adapt in context, and the actor that runs them in the sampler.

The policy reads, at every step, the observation, the previous action (one-hot when discrete), the
previous reward and a flag that the previous step ended an episode (Duan et al. 2016, section 2.2).
Its hidden state is the fast learner: :class:`RecurrentActor` carries it, with the previous action, reward
and flag, in the actor state the sampler threads through the episodes of a trial, starting each trial from
zeros. What the network read at each step follows from the trial's own steps (:meth:`RecurrentPolicy.
trial_inputs`), so the update recomputes the same log-probabilities by unrolling the network over them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from metarl.rl.policies import sample_action
from metarl.rl.sampler import ActorState, TrialSteps

__all__ = ["RecurrentActor", "RecurrentCritic", "RecurrentPolicy"]

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

    def trial_inputs(self, steps: TrialSteps) -> torch.Tensor:
        """What the network read at each step of whole trials, ``[..., L, in]``: the step's observation with
        the previous step's action, reward and end-of-episode flag (zeros before a trial's first step)."""
        def previous(x: torch.Tensor) -> torch.Tensor:
            t = steps.mask.dim() - 1  # the time axis
            return torch.cat([torch.zeros_like(x.narrow(t, 0, 1)), x.narrow(t, 0, x.shape[t] - 1)], dim=t)

        return self.inputs(steps.obs, previous(self.encode_action(steps.actions)), previous(steps.rewards),
                           previous(steps.ends))

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
    """A recurrent policy as the sampler's actor: per slot, the hidden state and the previous action (encoded),
    reward and done flag, all zeros at the start of a trial and carried across its episodes."""

    splits_by_task = True

    def __init__(self, policy: RecurrentPolicy):
        self.policy = policy

    def initial_state(self, n: int) -> ActorState:
        return {"hidden": self.policy.initial_state(n), "prev_action": torch.zeros(n, self.policy.act_dim),
                "prev_reward": torch.zeros(n), "prev_done": torch.zeros(n)}

    def for_tasks(self, tasks: slice, per_task: int) -> RecurrentActor:
        """The actor of some of the call's tasks (for a worker that samples those): the same policy for all."""
        return self

    def begin_episode(self, state: ActorState, seeds: np.ndarray) -> ActorState:
        return state  # the previous episode's last step already set the done flag

    def act(self, obs: torch.Tensor, state: ActorState,
            noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, ActorState]:
        x = self.policy.inputs(obs, state["prev_action"], state["prev_reward"], state["prev_done"])
        dist, _, hidden = self.policy.unroll(x[:, None], state["hidden"])
        action = sample_action(dist, None if noise is None else noise[:, None])
        return action[:, 0], dist.log_prob(action)[:, 0], {**state, "hidden": hidden}

    def observe(self, state: ActorState, actions: torch.Tensor, rewards: torch.Tensor,
                done: torch.Tensor) -> ActorState:
        return {**state, "prev_action": self.policy.encode_action(actions), "prev_reward": rewards,
                "prev_done": done}
