"""Videos of a policy before and after adaptation on held-out tasks (``metarl eval RUN_DIR --video``).

An agent hands over two :class:`~metarl.contract.EpisodePolicy` objects for a task
(:class:`~metarl.contract.VideoPolicies`): the policy
*before* adaptation and the policy *after* it. Each one acts through one episode on an environment built
with ``render_mode="rgb_array"``; the two episodes start from the same reset seed and are drawn side by side
(left: before, right: after) with a label above each, the step and the return so far.

A video has exactly ``horizon + 1`` frames: the frame after ``reset`` and one after every step. An episode
that ends early (Navigation2D stops at the goal) keeps its last frame for the rest of the video.

An agent that can make videos declares :attr:`~metarl.contract.Capability.VIDEOS` and provides its policies
through ``agent.video_policies(task, steps, seed)`` (:class:`~metarl.contract.MakesVideos`). The agents built on
the core's pieces make them with the adapters here:

* the MAML-RL agents (:meth:`metarl.rl.meta_rl.MAMLRLAgent.video_policies`): ``theta`` against ``theta'`` after
  ``steps`` inner steps on the task, the adapted parameters from ``collect`` on that one task;
* RL² (:func:`recurrent_policies`): episode 1 of a trial against episode ``K`` of a trial (the first ``K - 1``
  episodes run unrendered with the same seeds, so the hidden state carries what they taught it).

Each side is a :class:`metarl.rl.sampler.Controller` over the agent's sampler actor, its actions drawn from a
seeded generator, so a video is the same for a seed.
GIF is written with Pillow; MP4 needs imageio's ffmpeg plugin (``imageio-ffmpeg``) or PyAV.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.contract import Capability, EpisodePolicy, MakesVideos, VideoPolicies, require
from metarl.errors import ConfigError
from metarl.rl.recurrent import RecurrentActor, RecurrentPolicy
from metarl.rl.sampler import Controller
from metarl.seeding import derive_seed
from metarl.task import EnvironmentFamily, Task, provides

__all__ = ["act_seed", "check_renderable", "recurrent_policies", "render_episode", "write_video", "write_videos"]

PANEL_HEIGHT = 256  # each side is scaled to this height
LABEL_HEIGHT = 32  # the strip above the panels (so 256 + 32 = 288, a multiple of 16 as video codecs like)
FORMATS = ("gif", "mp4")


# -- the core agents' policies: both sides act with the same seed ------------------------------------
def act_seed(seed: int) -> int:
    """The seed of the generator both sides of a video draw their actions from."""
    return derive_seed(seed, 2)


def recurrent_policies(policy: RecurrentPolicy, family: EnvironmentFamily, episodes_per_trial: int, task: Task,
                       seed: int) -> VideoPolicies:
    """Episode 1 of a trial against episode ``K``: the after-controller first runs episodes ``1..K-1``
    unrendered (episode 1 from the rendered episodes' reset seed, so it is the before-side's episode)."""
    env = family.make_env(task)
    before, after = (Controller(RecurrentActor(policy), env.action_space, act_seed(seed)) for _ in range(2))
    try:
        for j in range(episodes_per_trial - 1):
            run_episode(env, after, render_seed(seed) if j == 0 else derive_seed(seed, 3, j), render=False)
            after.end_episode()
    finally:
        env.close()
    return VideoPolicies(before, after, "episode 1 of the trial", f"episode {episodes_per_trial} of the trial")


# -- rendering --------------------------------------------------------------------------------
def render_seed(seed: int) -> int:
    """The reset seed both sides of a video start from."""
    return derive_seed(seed, 1)


def run_episode(env: gym.Env, policy: EpisodePolicy, seed: int, render: bool) -> tuple[list[np.ndarray], list[float]]:
    """One episode from ``reset(seed=seed)``, actions clipped to a Box's bounds as the sampler clips them:
    the frames (after reset and after each step, when ``render``) and the rewards."""
    obs, _ = env.reset(seed=seed)
    space = env.action_space
    frames = [env.render()] if render else []
    rewards: list[float] = []
    done = False
    while not done:
        action = policy.act(np.asarray(obs))
        if isinstance(space, gym.spaces.Box):
            action = np.clip(action, space.low, space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        done = bool(terminated or truncated)
        policy.observe(float(reward), done)
        rewards.append(float(reward))
        if render:
            frames.append(env.render())
    return frames, rewards


def rendering_env(family: EnvironmentFamily, task: Task) -> gym.Env:
    """``family.make_env(task, render_mode="rgb_array")``, or an error naming a family that cannot render."""
    if not provides(family, EnvironmentFamily):
        raise ConfigError(f"{family!r} is a few-shot task source: it has no environment to render")
    try:
        return family.make_env(task, render_mode="rgb_array")
    except ValueError as err:
        raise ConfigError(f"{family.name} cannot be rendered ({err}); videos need a family with an rgb_array "
                         "render mode (Navigation2D, the MuJoCo families, Meta-World)") from None


def check_renderable(family: EnvironmentFamily, task: Task) -> float:
    """Raise the error of :func:`rendering_env` for a family that cannot render; else its frames per second."""
    env = rendering_env(family, task)
    try:
        return float(env.metadata.get("render_fps") or 20)
    finally:
        env.close()


def render_episode(family: EnvironmentFamily, task: Task, policy: EpisodePolicy,
                   seed: int) -> tuple[list[np.ndarray], list[float]]:
    env = rendering_env(family, task)
    try:
        return run_episode(env, policy, seed, render=True)
    finally:
        env.close()


def _panel(frame: np.ndarray) -> Any:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    if image.height != PANEL_HEIGHT:
        width = max(1, round(image.width * PANEL_HEIGHT / image.height))
        image = image.resize((width, PANEL_HEIGHT), Image.Resampling.BILINEAR)
    return image


def compose(before: list[np.ndarray], after: list[np.ndarray], before_rewards: list[float],
            after_rewards: list[float], labels: tuple[str, str], length: int) -> list[np.ndarray]:
    """``length`` frames, before on the left and after on the right, each with its label, step and return."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    out = []
    sides = [(before, np.cumsum([0.0, *before_rewards])), (after, np.cumsum([0.0, *after_rewards]))]
    for t in range(length):
        panels = [_panel(frames[min(t, len(frames) - 1)]) for frames, _ in sides]
        width = sum(p.width for p in panels)
        canvas = Image.new("RGB", (width, PANEL_HEIGHT + LABEL_HEIGHT), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        x = 0
        for panel, (frames, returns), label in zip(panels, sides, labels, strict=True):
            shown = min(t, len(frames) - 1)
            ended = " (ended)" if t > shown else ""
            draw.text((x + 6, 2), label, fill=(0, 0, 0), font=font)
            draw.text((x + 6, 17), f"step {shown}/{length - 1}{ended}  return {returns[shown]:.1f}", fill=(60, 60, 60),
                      font=font)
            canvas.paste(panel, (x, LABEL_HEIGHT))
            x += panel.width
        draw.line([(panels[0].width, 0), (panels[0].width, canvas.height)], fill=(0, 0, 0), width=1)
        out.append(np.asarray(canvas))
    return out


def mp4_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None or importlib.util.find_spec("av") is not None


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write ``frames`` as a GIF (Pillow) or, for a ``.mp4`` path, an MP4 (imageio with ffmpeg or PyAV)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        import imageio.v3 as iio

        plugin = "FFMPEG" if importlib.util.find_spec("imageio_ffmpeg") is not None else "pyav"
        kwargs = {"fps": fps} if plugin == "FFMPEG" else {"fps": fps, "codec": "libx264"}
        iio.imwrite(path, np.stack(frames), plugin=plugin, **kwargs)
        return path
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
    return path


def write_videos(agent: MakesVideos, family: EnvironmentFamily, tasks: list[Task], steps: int, seed: int,
                 out_dir: str | Path, fmt: str = "gif") -> list[Path]:
    """``out_dir/task<k>.<fmt>`` for each task: the agent's policy before and after adaptation side by side.
    MP4 without an encoder is refused with a message on stderr, and GIF is written instead."""
    require(agent, Capability.VIDEOS, "make videos")
    if fmt not in FORMATS:
        raise ConfigError(f"video format must be one of {FORMATS}, got {fmt!r}")
    if not tasks:
        raise ConfigError("no tasks to render: ask for at least one video task")
    if fmt == "mp4" and not mp4_available():
        print("metarl: mp4 needs imageio's ffmpeg plugin (pip install imageio-ffmpeg) or PyAV (pip install av), "
              "neither is installed; writing GIF instead", file=sys.stderr)
        fmt = "gif"
    fps = check_renderable(family, tasks[0])  # refuse a family that cannot render before any adaptation
    horizon = int(family.horizon)
    written = []
    for k, task in enumerate(tasks):
        task_seed = derive_seed(seed, k)
        pair = agent.video_policies(task, steps, task_seed)
        reset = render_seed(task_seed)
        before, before_rewards = render_episode(family, task, pair.before, reset)
        after, after_rewards = render_episode(family, task, pair.after, reset)
        frames = compose(before, after, before_rewards, after_rewards, (pair.before_label, pair.after_label),
                         horizon + 1)
        written.append(write_video(frames, Path(out_dir) / f"task{k}.{fmt}", fps))
    return written
