"""Env-steps per second of each MuJoCo task family, side by side with what it derives from.

For every family, in one process and interleaved over several rounds (the best round is kept):
  raw    the bare ``mujoco.mj_step(model, data, nstep=frame_skip)`` loop on the family env's model,
  base   the environment the family derives from: ``gymnasium.make(<id>)`` with its default
         wrappers and the family's horizon (Meta-World: the metaworld class with ``set_task``),
  ours   ``family.make_env(task)``.
Every loop feeds the same pre-drawn uniform random actions and resets where the family's episodes end.
RandParams families run the task with every scale 1 (the base env's own physics): a randomised model
costs what its physics costs, whoever steps it. The goal is ours/base >= 0.9: a family costs no more
than the gymnasium env it derives from.

    python benchmarks/env_speed.py [--steps 4000] [--rounds 3] [FAMILY ...]
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np

import metarl

FAMILIES = {  # family -> (overrides, gymnasium id it derives from)
    "HalfCheetahVel-v0": ({}, "HalfCheetah-v5"),
    "HalfCheetahDir-v0": ({}, "HalfCheetah-v5"),
    "AntVel-v0": ({}, "Ant-v5"),
    "AntDir-v0": ({}, "Ant-v5"),
    "AntDir2D-v0": ({}, "Ant-v5"),
    "AntGoal-v0": ({}, "Ant-v5"),
    "HumanoidDir-v0": ({}, "Humanoid-v5"),
    "HopperRandParams-v0": ({}, "Hopper-v5"),
    "Walker2DRandParams-v0": ({}, "Walker2d-v5"),
    "RandParams-v0": ({}, "HalfCheetah-v5"),
    "ML1-v0": ({"env_name": "reach-v3"}, None),
    "ML1-v0:pick-place": ({"env_name": "pick-place-v3"}, None),
}


def env_loop(env: gym.Env, actions: np.ndarray, ends: list[int] | None = None) -> float:
    """Steps per second of ``env`` over ``actions``, resetting at episode ends (recorded into ``ends``)."""
    env.reset(seed=0)
    start = time.perf_counter()
    for t, a in enumerate(actions):
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
            if ends is not None:
                ends.append(t)
    return len(actions) / (time.perf_counter() - start)


def raw_loop(model: mujoco.MjModel, frame_skip: int, ctrl: np.ndarray, ends: set[int]) -> float:
    """The bare simulator, resetting where the family's episodes ended."""
    data = mujoco.MjData(model)
    start = time.perf_counter()
    for t, a in enumerate(ctrl):
        data.ctrl[:] = a
        mujoco.mj_step(model, data, nstep=frame_skip)
        if t in ends:
            mujoco.mj_resetData(model, data)
            mujoco.mj_forward(model, data)
    return len(ctrl) / (time.perf_counter() - start)


def metaworld_base(family: metarl.envs.TaskFamily) -> gym.Env:
    """The metaworld environment class itself, set to the same task as ours."""
    import metaworld

    task = family.train_tasks[0]
    cls = family.env_classes[task["env_name"]]
    env = cls()
    data = {"rand_vec": task.array("rand_vec"), "env_cls": cls, "partially_observable": True}
    env.set_task(metaworld.types.Task(env_name=task["env_name"], data=pickle.dumps(data)))
    return gym.wrappers.TimeLimit(env, family.horizon)


def measure(label: str, overrides: dict, base_id: str | None, steps: int, rounds: int) -> dict[str, float]:
    family = metarl.envs.make(label.split(":")[0], **overrides)
    task = family.train_tasks[0]
    if isinstance(family, metarl.envs.RandParams):  # the base env's own physics: compare like with like
        task = metarl.Task(family.name, {k: np.ones(d.shape) for k, d in family.parameters().items()})
    ours = family.make_env(task)
    inner = ours.unwrapped.env if base_id is None else ours.unwrapped  # Meta-World: the class env inside
    model, frame_skip = inner.model, inner.frame_skip
    base = metaworld_base(family) if base_id is None else gym.make(
        base_id, max_episode_steps=family.horizon, **family.env_kwargs
    )
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, *ours.action_space.shape)).astype(np.float32)
    # Meta-World actions move a mocap body, not actuators: the raw loop then steps the physics with zero ctrl.
    ctrl = actions if actions.shape[1] == model.nu else np.zeros((steps, model.nu))
    ends: list[int] = []
    env_loop(ours, actions, ends)
    loops: dict[str, Callable[[], float]] = {
        "raw": lambda: raw_loop(model, frame_skip, ctrl, set(ends)),
        "base": lambda: env_loop(base, actions),
        "ours": lambda: env_loop(ours, actions),
    }
    best = {k: 0.0 for k in loops}
    for _ in range(rounds):
        for key, loop in loops.items():
            best[key] = max(best[key], loop())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", default=list(FAMILIES), help="default: all MuJoCo families")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    header = ("family", "derives from", "raw/s", "base/s", "ours/s", "ours/base", "ours/raw")
    print("{:24s} {:24s} {:>8s} {:>8s} {:>8s} {:>9s} {:>8s}".format(*header))
    worst = np.inf
    for label in args.families:
        overrides, base_id = FAMILIES[label]
        r = measure(label, overrides, base_id, args.steps, args.rounds)
        ratio = r["ours"] / r["base"]
        worst = min(worst, ratio)
        origin = base_id or f"metaworld {overrides['env_name']}"
        print(f"{label:24s} {origin:24s} {r['raw']:8.0f} {r['base']:8.0f} {r['ours']:8.0f} {ratio:9.2f} "
              f"{r['ours'] / r['raw']:8.2f}")
    print(f"worst ours/base ratio: {worst:.2f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
