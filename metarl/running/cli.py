"""The ``metarl`` command line.

    metarl list [--json]                               every registered task family
    metarl config [AGENT] [--markdown]                 the fields of a run config (or an agent's): defaults, ranges
    metarl rollout [NAME ...] [--episodes N]           random-policy rollouts on train and test tasks
    metarl train CONFIG.yaml [key=value ...]           train (--run-dir DIR; --resume RUN_DIR continues)
    metarl train CONFIG.yaml [key=value ...] --seeds 0 1 2 [--parallel N]
                                                       one independent run per seed (<run-dir>-seed<k>)
    metarl train CONFIG.yaml [key=value ...] --sweep KEY=V1,V2 [--sweep KEY=...] [--seeds ...] [--parallel N]
                                                       one run per grid point and seed (<run-dir>/KEY=V,...-seed<k>)
    metarl train CONFIG.yaml ... --ray-address ADDR    sample on a Ray cluster (with --seeds, --sweep: each run a Ray task)
    metarl eval RUN_DIR [key=value ...] [--tasks N] [--steps S] [--name NAME]
                                                       adaptation on held-out tasks: eval.json, eval.png
    metarl eval RUN_DIR --video [--video-tasks N] [--video-format gif|mp4]
                                                       and videos/task<k>.gif: before | after adaptation
    metarl eval RUN_DIR --tune-step-size V1 V2 ... [--tune-tasks N]  |  --step-size V
                                                       the adaptation's step size chosen on training tasks, or given
    metarl eval RUN_DIR --protocol metaworld [--goals 40] [--meta-batch 20] [--evals 10] [--steps 1]
                    [--adapt-episodes 10] [--eval-episodes 3]
                                                       Meta-World's own evaluator: eval_metaworld.json
    metarl adapt RUN_DIR --task JSON [--steps S | --episodes N] [--video]
                                                       adapt a meta-RL agent to a task: its returns as it adapts
    metarl plot RUN_DIR ... --out FILE.png             the runs' adaptation curves on one figure
    metarl references RUN_DIR                          classic bandit / MDP strategies on the run's held-out tasks
    metarl report RUN_DIR|SWEEP_DIR ... [--out DIR] [--format html|md]
                                                       multi-seed report: IQM/mean with bootstrap CIs, curves, table

The command line reaches the task families through their registry and builds its runs with
:mod:`metarl.running.run`, as ``metarl.load`` does. Every error a user can cause (a bad config, checkpoint or run
directory, a run that diverged: a :class:`~metarl.errors.MetaRLError`) and what the machine lacks (a file, an
optional package) ends the command with exit code 2 and one line on stderr naming the problem; any other
exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from metarl.contract import Capability, require, with_step_size
from metarl.errors import CheckpointError, ConfigError, MetaRLError
from metarl.running.checkpoint import (
    checkpoint_iteration,
    latest_checkpoint,
    load_checkpoint,
    restore_agent,
    run_checkpoints,
)
from metarl.running.config import BACKENDS, RunConfig, SamplerConfig, config_reference, load_config, parse_overrides
from metarl.running.evaluation import EVAL_ITER, SCORE_KEYS, read_report, write_report
from metarl.running.run import (
    agent_classes,
    agent_names,
    build_run,
    load,
    make_family,
    metaworld_protocol,
    reference_curves,
    saved_config,
)
from metarl.running.rundir import atomic_write, remove_temp_files, run_lock
from metarl.running.trainer import RESUME_OVERRIDABLE, SPLITS, TUNE_TASKS, TUNING_RULE, Trainer
from metarl.seeding import eval_seed, video_seed
from metarl.task import EnvironmentFamily, as_task, provides


def _families() -> Any:
    import metarl.envs

    return metarl.envs


def _environment_families() -> list[str]:
    """The registered families that build environments, without making them: those registered as gymnasium ids
    (few-shot episode sources are not)."""
    import gymnasium as gym

    envs = _families()
    return [name for name in envs.registered() if f"{envs.registry.GYM_NAMESPACE}/{name}" in gym.registry]


def cmd_list(args: argparse.Namespace) -> int:
    envs = _families()
    rows = []
    for name in envs.registered():
        try:
            rows.append(envs.make(name).describe())
        except (FileNotFoundError, ImportError) as err:  # a data set or an optional package not on this machine
            rows.append({"name": name, "unavailable": " ".join(str(err).split())})
        except (ValueError, TypeError) as err:  # a family that cannot be made: a bug to fix
            rows.append({"name": name, "broken": f"{type(err).__name__}: {' '.join(str(err).split())}"})
    broken = [row["name"] for row in rows if "broken" in row]
    if broken:
        print(f"metarl list: error: {len(broken)} famil{'y' if len(broken) == 1 else 'ies'} cannot be made: "
              f"{', '.join(broken)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if broken else 0
    for row in rows:
        if "unavailable" in row or "broken" in row:
            state = "unavailable" if "unavailable" in row else "BROKEN"
            print(f"{row['name']}  ({state}: {row.get('unavailable') or row['broken']})")
            continue
        if "kind" in row:  # a few-shot task source
            print(f"{row['name']}  ({row['kind']}, examples {row['example_shape']})")
            print(f"    {row['description']}\n    train: {row['train']}\n    test: {row['test']}")
            continue
        print(f"{row['name']}  (horizon {row['horizon']}, obs {row['observation']}, action {row['action']}, "
              f"{row['train_tasks']} train / {row['test_tasks']} test tasks)")
        print(f"    {row['description']}")
        for key, dist in row["parameters"].items():
            print(f"    {key}: {dist}")
    return 1 if broken else 0


def rollout_returns(env: Any, episodes: int, seed: int) -> tuple[list[float], int]:
    """Returns of ``episodes`` random-policy episodes and the number of steps taken."""
    env.action_space.seed(seed)
    returns, steps = [], 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        returns.append(total)
    return returns, steps


def cmd_rollout(args: argparse.Namespace) -> int:
    names = args.names or _environment_families()
    print(f"{'family':26s} {'split':5s} {'task':44s} {'return':>10s} {'steps':>6s} {'steps/s':>9s}")
    for name in names:
        family = make_family(name)
        if not provides(family, EnvironmentFamily):
            raise ConfigError(f"{name!r} is a few-shot task source: it has no environment to roll out")
        for split, task in (("train", family.train_tasks[0]), ("test", family.test_tasks[0])):
            env = family.make_env(task)
            start = time.perf_counter()
            returns, steps = rollout_returns(env, args.episodes, args.seed)
            rate = steps / (time.perf_counter() - start)
            env.close()
            shown = repr(task).removeprefix(f"Task({name}: ").removesuffix(")")
            print(f"{name:26s} {split:5s} {shown[:44]:44s} {np.mean(returns):10.2f} {steps:6d} {rate:9.0f}")
    return 0


def _build(config: RunConfig, distributed: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """:func:`metarl.running.run.build_run` with the config's torch threads (a command owns its process); ``distributed``:
    sample as the config's ``sampler`` section says (training), else in this process."""
    import torch

    torch.set_num_threads(config.torch_threads)
    return build_run(config, distributed=distributed)


def cmd_train(args: argparse.Namespace) -> int:
    if args.seeds is not None or args.sweep:
        return train_grid(args)
    if args.parallel is not None:
        raise ConfigError("--parallel runs several runs side by side: pass --seeds too, or --sweep")
    if args.resume:
        run_dir = Path(args.resume)
        if args.config is not None:
            args.overrides.insert(0, args.config)  # with --resume, every positional is an override
        bad = [o for o in args.overrides if not {o.split("=", 1)[0], o.split(".", 1)[0]} & RESUME_OVERRIDABLE]
        if bad:
            raise ConfigError(f"on resume only {', '.join(sorted(RESUME_OVERRIDABLE))} may change; got {bad}")
        if (run_dir / SWEEP_FILE).is_file() and not (run_dir / "config.yaml").exists():
            return resume_sweep(args)
        config = saved_config(run_dir, args.overrides)
    else:
        if args.config is None:
            raise ConfigError("metarl train needs a CONFIG.yaml (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir or Path("runs") / f"{Path(args.config).stem}-seed{config.seed}")
    if args.ray_address is not None:  # the sampler's workers on the cluster
        config = dataclasses.replace(config, sampler={**config.sampler, "backend": "ray", "address": args.ray_address})
    family, agent, resolved = _build(config, distributed=True)  # a bad config is refused before the directory is made
    trainer = Trainer(config, family, agent, run_dir, resolved)
    try:
        with run_lock(run_dir):  # checked and trained by one process
            if not args.resume and (run_dir / "config.yaml").exists():
                raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; pass --resume {run_dir} "
                                  "to continue it or --run-dir for a new one")
            # A run killed before its first checkpoint starts again from iteration 0.
            trainer.train(resume=bool(args.resume) and latest_checkpoint(run_dir) is not None,
                          progress=not args.no_progress)
    finally:
        _close_sampler(agent)
    print(f"run directory: {run_dir}")
    if config.evaluate:
        _print_eval(run_dir)
    return 0


SWEEP_FILE = "sweep.json"  # in a sweep's directory: its grid points, seeds and run directories
SWEEP_VALUE = re.compile(r"[A-Za-z0-9._+-]+")  # what a swept value may be written as: it goes in a directory's name


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One run of ``--seeds`` / ``--sweep``: the label its messages use, its overrides and its directory."""

    label: str
    overrides: list[str]
    run_dir: Path
    resume: bool = False  # continue the run its directory holds (``metarl train --resume RUN_DIR OVERRIDES``)


def _overlap(a: str, b: str) -> bool:
    """Whether two override keys set the same field (one is the other or lies inside it)."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def parse_sweep(specs: Sequence[str], overrides: Sequence[str]) -> dict[str, list[str]]:
    """``--sweep KEY=V1,V2[,...]`` options: each key's values, as written. Refused by name: a malformed option,
    ``seed`` (``--seeds`` gives the seeds), a key swept twice or also given as a plain override, a value repeated
    (as parsed: ``0.1`` and ``0.10`` are one) or one that cannot go in a run directory's name."""
    sweep: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        texts = raw.split(",")
        if not sep or not key or not all(texts):
            raise ConfigError(f"--sweep {spec!r} is not of the form KEY=V1,V2[,...] "
                              "(e.g. agent_config.inner_lr=0.05,0.1)")
        if key == "seed":
            raise ConfigError("give the seeds with --seeds, not --sweep seed=...")
        clash = next((k for k in sweep if _overlap(k, key)), None)
        if clash is not None:
            raise ConfigError(f"--sweep {key} sets what --sweep {clash} sets: sweep each key once")
        clash = next((o for o in overrides if _overlap(o.split("=", 1)[0], key)), None)
        if clash is not None:
            raise ConfigError(f"--sweep {key} sets what the override {clash!r} sets: give the key one way")
        bad = next((t for t in texts if not SWEEP_VALUE.fullmatch(t)), None)
        if bad is not None:
            raise ConfigError(f"--sweep {key} value {bad!r} cannot go in a run directory's name: write each value "
                              "with letters, digits and . _ + - only")
        parsed: list[Any] = []
        for text in texts:
            value = sweep_value(text)
            if value in parsed:
                raise ConfigError(f"--sweep {key} repeats a value: {text!r} (values {raw})")
            parsed.append(value)
        sweep[key] = texts
    return sweep


def sweep_value(text: str) -> Any:
    """A swept value as the config reads it (as an override's value: ``1e-2`` is a float)."""
    return parse_overrides([f"value={text}"])["value"]


def point_name(point: dict[str, str]) -> str:
    """A grid point's part of its run directories' names: ``key=value`` of each swept key, joined by commas; a key
    goes by its last part (``inner_lr``), or whole where two swept keys share that part."""
    last = [key.rsplit(".", 1)[-1] for key in point]
    names = [short if last.count(short) == 1 else key for short, key in zip(last, point, strict=True)]
    return ",".join(f"{name}={value}" for name, value in zip(names, point.values(), strict=True))


def _close_sampler(agent: Any) -> None:
    """Close an agent's environments, worker processes or Ray workers (metarl.contract.LearnsFromEnvironments)."""
    if agent.learns_from is EnvironmentFamily:
        agent.sampler.close()


def _write_sweep(sweep_dir: Path, sweep: dict[str, Any]) -> None:
    """``sweep.json`` in the sweep's directory, atomically; one that describes another sweep is refused."""
    path = sweep_dir / SWEEP_FILE
    if (sweep_dir / "config.yaml").exists():
        raise ConfigError(f"{str(sweep_dir)!r} holds a run: a sweep's directory holds its runs; choose another --run-dir")
    if path.is_file():
        held, run_dirs = read_sweep(sweep_dir)
        if held != sweep:
            raise ConfigError(f"{str(sweep_dir)!r} holds another sweep ({SWEEP_FILE}); choose another --run-dir")
        if any((run_dir / "config.yaml").exists() for run_dir in run_dirs):
            raise ConfigError(f"{str(sweep_dir)!r} holds this sweep, started: continue it with metarl train --resume "
                              f"{sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(sweep, indent=2) + "\n")


def read_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[Path]]:
    """A sweep directory's ``sweep.json`` and its run directories, grid point by grid point."""
    path = sweep_dir / SWEEP_FILE
    try:
        sweep = json.loads(path.read_text())
        return sweep, [sweep_dir / run["run_dir"] for point in sweep["points"] for run in point["runs"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{str(path)!r} is not a sweep's file ({type(err).__name__}: {err})") from None


def train_grid(args: argparse.Namespace) -> int:
    """``metarl train CONFIG --seeds ... | --sweep KEY=V1,V2 ...``: one independent run per seed and grid point
    (every combination of the swept values), each trained as ``metarl train CONFIG OVERRIDES KEY=V seed=K`` alone
    would train it. With ``--seeds`` only, the runs are ``<run-dir>-seed<k>`` (default ``runs/<config
    stem>-seed<k>``); a sweep's are ``<run-dir>/<key=value,...>-seed<k>``, with ``sweep.json`` beside them (its
    seeds: ``--seeds``, else the config's seed). Every grid point's config is built, and refused by name, before any
    run starts. Every run is resumable on its own with ``--resume``, and a sweep as a whole with ``--resume
    SWEEP_DIR`` (:func:`resume_sweep`). A run that fails is reported with its exit code, and
    the command then exits 1."""
    if args.resume:
        raise ConfigError("--seeds and --sweep start new runs; continue a run with --resume RUN_DIR, a whole sweep "
                          "with --resume SWEEP_DIR")
    if args.ray_address is not None and args.parallel is not None:
        raise ConfigError("--parallel runs the runs in local subprocesses; with --ray-address the cluster runs them, "
                          "as many at once as it has room for")
    if args.config is None:
        raise ConfigError("metarl train --seeds / --sweep needs a CONFIG.yaml")
    if args.seeds is not None and any(o.split("=", 1)[0] == "seed" for o in args.overrides):
        raise ConfigError("give the seeds with --seeds only, not also as a seed= override")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds repeats a seed: {args.seeds}")
    if args.parallel is not None and args.parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {args.parallel}")
    sweep = parse_sweep(args.sweep or [], args.overrides)
    seeds = args.seeds if args.seeds is not None else [load_config(args.config, args.overrides).seed]
    base = args.run_dir or str(Path("runs") / Path(args.config).stem)
    points = [dict(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())]
    runs: list[GridRun] = []
    configs: dict[str, RunConfig] = {}
    for point in points:  # with no sweep, one point: the config as given
        name = point_name(point)
        overrides = [*args.overrides, *(f"{key}={value}" for key, value in point.items())]
        point_runs = [GridRun(f"{name} seed {seed}" if point else f"seed {seed}", [*overrides, f"seed={seed}"],
                              Path(base) / f"{name}-seed{seed}" if point else Path(f"{base}-seed{seed}"))
                      for seed in seeds]
        try:  # a bad value fails before any run
            configs.update({run.label: load_config(args.config, run.overrides) for run in point_runs})
            _close_sampler(build_run(configs[point_runs[0].label])[1])  # what the family or the agent refuses
        except ConfigError as err:
            raise ConfigError(f"--sweep point {name}: {err}" if point else str(err)) from None
        runs.extend(point_runs)
    if sweep:
        _write_sweep(Path(base), {
            "config": args.config, "overrides": args.overrides,
            "sweep": {key: [sweep_value(text) for text in texts] for key, texts in sweep.items()}, "seeds": seeds,
            "points": [{"name": point_name(point), "overrides": {k: sweep_value(v) for k, v in point.items()},
                        "runs": [{"seed": seed, "run_dir": f"{point_name(point)}-seed{seed}"} for seed in seeds]}
                       for point in points]})
        print(f"sweep of {len(points)} grid points x {len(seeds)} seeds: {Path(base) / SWEEP_FILE}", flush=True)
    return _launch_and_report(args, runs, configs, "runs" if sweep else "seeds")


def _finished(run_dir: Path, config: RunConfig) -> bool:
    """Whether a run has trained all its iterations (and written its evaluation, if it evaluates)."""
    last = latest_checkpoint(run_dir)
    trained = last is not None and checkpoint_iteration(last) >= config.iterations
    return trained and (not config.evaluate or (run_dir / "eval.json").is_file())


def resume_sweep(args: argparse.Namespace) -> int:
    """``metarl train --resume SWEEP_DIR [OVERRIDES]``: continue every run of a sweep that has not finished, as
    ``metarl train --resume RUN_DIR OVERRIDES`` would, and start those that never started (from the config file and
    overrides in ``sweep.json``); finished runs are left alone. ``--parallel`` and ``--ray-address`` as for
    ``--sweep``."""
    sweep_dir = Path(args.resume)
    sweep, _ = read_sweep(sweep_dir)
    args.config = sweep["config"]
    runs: list[GridRun] = []
    configs: dict[str, RunConfig] = {}
    for point in sweep["points"]:
        for entry in point["runs"]:
            label, run_dir = f"{point['name']} seed {entry['seed']}", sweep_dir / entry["run_dir"]
            if (run_dir / "config.yaml").exists():
                config = saved_config(run_dir, args.overrides)
                if _finished(run_dir, config):
                    print(f"  {label}: finished  {run_dir}")
                    continue
                run = GridRun(label, list(args.overrides), run_dir, resume=True)
            else:
                if not Path(args.config).is_file():
                    raise ConfigError(f"run {label} never started and the sweep's config {args.config!r} is gone")
                point_overrides = [f"{key}={json.dumps(value)}" for key, value in point["overrides"].items()]
                run = GridRun(label, [*sweep["overrides"], *point_overrides, f"seed={entry['seed']}", *args.overrides],
                              run_dir)
                config = load_config(args.config, run.overrides)
            runs.append(run)
            configs[label] = config
    if not runs:
        print(f"every run of the sweep {str(sweep_dir)!r} has finished")
        return 0
    return _launch_and_report(args, runs, configs, "runs")


def _launch_and_report(args: argparse.Namespace, runs: list[GridRun], configs: dict[str, RunConfig],
                       noun: str) -> int:
    """Train ``runs`` (:func:`_launch`) and report each one's outcome; 1 if any failed."""
    codes = _launch(args, runs, configs, noun)
    for run in runs:
        state = "ok" if codes[run.label] == 0 else f"FAILED with exit code {codes[run.label]}"
        print(f"  {run.label}: {state}  {run.run_dir}")
    failed = [run for run in runs if codes[run.label] != 0]
    if failed:
        named = "; ".join(f"{run.label} (exit code {codes[run.label]}, {run.run_dir})" for run in failed)
        print(f"metarl train: error: {len(failed)} of {len(runs)} {noun} failed: {named}", file=sys.stderr)
        return 1
    return 0


def _launch(args: argparse.Namespace, runs: list[GridRun], configs: dict[str, RunConfig], noun: str) -> dict[str, int]:
    """Train ``runs`` one after another in this process, or in up to ``--parallel`` subprocesses (each writing its
    output to ``<run dir>/train.log``), or with ``--ray-address`` as tasks on a Ray cluster
    (:func:`metarl.running.cluster.train_on_cluster`; the same run directories, on a filesystem the nodes share);
    each run's exit code by label."""

    def argv(run: GridRun) -> list[str]:
        if run.resume:
            return ["train", "--resume", str(run.run_dir), *run.overrides]
        return ["train", args.config, *run.overrides, "--run-dir", str(run.run_dir)]

    codes: dict[str, int] = {}
    if args.ray_address is not None:
        from metarl.running.cluster import train_on_cluster

        print(f"{len(runs)} {noun} on the Ray cluster; each run's output goes to <run dir>/train.log", flush=True)
        codes = train_on_cluster([(run.label, run.run_dir, configs[run.label].to_dict(), run.resume) for run in runs],
                                 args.ray_address, main)
        for run in runs:
            if codes[run.label] != 0:
                _print_log_tail(run.run_dir)
    elif args.parallel is None or args.parallel == 1:
        for run in runs:
            print(f"{run.label}: {run.run_dir}", flush=True)
            try:
                codes[run.label] = main(argv(run) + (["--no-progress"] if args.no_progress else []))
            except Exception:  # one run's crash must not stop the others
                traceback.print_exc()
                codes[run.label] = 1
    else:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        def launch(run: GridRun) -> int:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            with open(run.run_dir / "train.log", "a") as log:
                command = [sys.executable, "-m", "metarl.running.cli", *argv(run), "--no-progress"]
                return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode

        print(f"{len(runs)} {noun}, up to {args.parallel} at a time; each run's output goes to <run dir>/train.log",
              flush=True)
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            futures = {pool.submit(launch, run): run for run in runs}
            for future in as_completed(futures):
                run = futures[future]
                codes[run.label] = future.result()
                print(f"{run.label} finished with exit code {codes[run.label]}: {run.run_dir}", flush=True)
                if codes[run.label] != 0:
                    _print_log_tail(run.run_dir)
    return codes


def _print_log_tail(run_dir: Path) -> None:
    """The last lines of a run's ``train.log`` (a failed seed's error), on stderr."""
    log = run_dir / "train.log"
    tail = log.read_text().strip().splitlines()[-5:] if log.is_file() else []
    print("\n".join(f"    {line}" for line in tail), file=sys.stderr)


EVAL_OVERRIDABLE = ("family_overrides.test_ways", "family_overrides.test_shots", "family_overrides.test_queries",
                    "family_overrides.num_test_tasks", "family_overrides.test_episodes", "eval_tasks", "eval_steps",
                    "agent_config.device", "sampler.env_workers")


def _checkpoint_to_evaluate(run_dir: Path, checkpoint: str | None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint an evaluation scores (``--checkpoint``, or the run's latest) and its state."""
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoint to evaluate")
    return path, load_checkpoint(path)


def cmd_eval(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    bad = [o for o in args.overrides if o.split("=", 1)[0] not in EVAL_OVERRIDABLE]
    if bad:
        raise ConfigError(f"metarl eval accepts only the overrides {', '.join(EVAL_OVERRIDABLE)}; got {bad}")
    config = saved_config(run_dir, args.overrides)
    if args.protocol == "metaworld":
        return eval_metaworld(args, run_dir, config)
    args.name = args.name or ("eval" if args.split == "test" else "eval_train")
    if args.tasks is not None and args.tasks < 1:
        raise ConfigError(f"--tasks must be >= 1, got {args.tasks}")
    if args.steps is not None and args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    if args.video and args.video_tasks < 1:
        raise ConfigError(f"--video-tasks must be >= 1, got {args.video_tasks}")
    if args.step_size is not None and args.tune_step_size is not None:
        raise ConfigError("give a step size (--step-size) or values to tune it among (--tune-step-size), not both")
    if args.tune_tasks is not None and args.tune_step_size is None:
        raise ConfigError("--tune-tasks is the number of training tasks of --tune-step-size; pass --tune-step-size too")
    if args.every_checkpoint:
        return eval_checkpoints(args, run_dir, config)
    with run_lock(run_dir):  # the evaluation writes into the run directory: not while a training does
        remove_temp_files(run_dir)
        path, state = _checkpoint_to_evaluate(run_dir, args.checkpoint)
        family, agent, resolved = _build(config)
        if args.step_size is not None or args.tune_step_size is not None:  # refused before the evaluation
            require(agent, Capability.STEP_SIZE, "set or tune the step size of its adaptation (--step-size, "
                    "--tune-step-size)")
        if args.video:  # an agent or a family that cannot make videos is refused before the evaluation
            from metarl.rl.video import check_renderable

            require(agent, Capability.VIDEOS, "make videos")
            check_renderable(family, family.test_tasks[0])
        restore_agent(agent, state, path, config.agent)
        report = Trainer(config, family, agent, run_dir, resolved).evaluate(
            args.tasks, args.steps, args.name, args.step_size, args.tune_step_size,
            TUNE_TASKS if args.tune_tasks is None else args.tune_tasks, at=_position(state), split=args.split)
        _print_eval(run_dir, args.name)
        if args.video:
            from metarl.rl.video import write_videos

            held_out = family.test_tasks if args.split == "test" else family.train_tasks
            tasks = [held_out[i % len(held_out)] for i in range(args.video_tasks)]
            steps = config.eval_steps if args.steps is None else args.steps
            chosen = report.get("step_size")  # the videos adapt with the step size the evaluation used
            with nullcontext() if chosen is None else with_step_size(agent, chosen["value"]):
                paths = write_videos(agent, family, tasks, steps, video_seed(config.seed),
                                     run_dir / "videos", args.video_format)
            print(f"  videos (left: before adaptation, right: after): {', '.join(map(str, paths))}")
    return 0


def _position(state: dict[str, Any]) -> dict[str, int]:
    """The iteration and the meta-training env steps of a checkpoint's agent."""
    return {"iteration": int(state["iteration"]), "total_env_steps": int(state["env_steps"])}


def eval_checkpoints(args: argparse.Namespace, run_dir: Path, config: RunConfig) -> int:
    """``metarl eval RUN --every-checkpoint``: each checkpoint's agent scored on the held-out tasks as
    ``eval_iter_<k>.json``, as ``eval_every`` does during training; those already written are kept."""
    clashing = [flag for flag, given in (("--checkpoint", args.checkpoint), ("--name", args.name != "eval"),
                                         ("--split train", args.split != "test"),
                                         ("--tune-step-size", args.tune_step_size), ("--video", args.video)) if given]
    if clashing:
        raise ConfigError(f"--every-checkpoint scores every checkpoint as {EVAL_ITER}<k>.json; it takes no "
                          f"{', '.join(clashing)}")
    with run_lock(run_dir):
        remove_temp_files(run_dir)
        paths = run_checkpoints(run_dir)
        if not paths:
            raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoint to evaluate")
        for path in paths:
            name = f"{EVAL_ITER}{checkpoint_iteration(path):06d}"
            if (run_dir / f"{name}.json").is_file():
                continue
            state = load_checkpoint(path)
            family, agent, resolved = _build(config)  # afresh: what an agent keeps (PEARL's buffers) grows
            if args.step_size is not None:
                require(agent, Capability.STEP_SIZE, "set the step size of its adaptation (--step-size)")
            restore_agent(agent, state, path, config.agent)
            try:
                report = Trainer(config, family, agent, run_dir, resolved).evaluate(
                    args.tasks, args.steps, name, args.step_size, plot=False, at=_position(state))
            finally:
                _close_sampler(agent)
            score = report["steps"][-1][SCORE_KEYS[report["metric"]][0]]
            print(f"  {path.name}: {report['metric']} {score:.2f} at the last point, after "
                  f"{report['total_env_steps']} env steps of meta-training: {name}.json", flush=True)
    return 0


def eval_metaworld(args: argparse.Namespace, run_dir: Path, config: RunConfig) -> int:
    """``metarl eval --protocol metaworld``: Meta-World's own evaluator scores the run's agent (eval_metaworld.json)."""
    ours = [flag for flag, given in (("--tasks", args.tasks is not None), ("--step-size", args.step_size is not None),
                                     ("--tune-step-size", args.tune_step_size is not None), ("--video", args.video))
            if given]
    if ours:
        raise ConfigError(f"{', '.join(ours)} belong to --protocol metarl; Meta-World's evaluator takes --goals, "
                          "--meta-batch, --evals, --steps, --adapt-episodes and --eval-episodes")
    rounds = {"num_evals": args.evals, "adaptation_steps": 1 if args.steps is None else args.steps,
              "adaptation_episodes": args.adapt_episodes, "evaluation_episodes": args.eval_episodes}
    name = args.name or ("eval_metaworld" if args.split == "test" else "eval_metaworld_train")
    with run_lock(run_dir):
        remove_temp_files(run_dir)
        path, state = _checkpoint_to_evaluate(run_dir, args.checkpoint)
        family, agent, _ = _build(config)
        restore_agent(agent, state, path, config.agent)
        report = metaworld_protocol(agent, family, eval_seed(config.seed), args.goals, args.meta_batch, args.split,
                                    **rounds)
        report.update(label=run_dir.name, family=config.family, family_overrides=config.family_overrides,
                      agent=config.agent, checkpoint=str(path), split=args.split)
        write_report(report, run_dir / f"{name}.json")
    per_class = ", ".join(f"{k} {v:.2f}" for k, v in report["per_class_success"].items())
    print(f"{run_dir.name}: Meta-World's evaluator on {report['benchmark']} ({report['protocol']})")
    print(f"  success rate {report['success_rate']:.3f} (per class: {per_class}); mean return {report['mean_return']:.1f}")
    print(f"  {report['num_evals']} rounds on {report['meta_batch_size']} environments ({report['goals_per_class']} goals "
          f"per class): {report['adaptation_steps']} x {report['adaptation_episodes']} adaptation episodes, then the "
          f"first {report['evaluation_episodes']} evaluation episodes to end in each class counted; "
          f"{report['env_steps']} env steps, {report['seconds']:.0f} s")
    print(f"  written: {run_dir / f'{name}.json'}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    for name in ("steps", "episodes"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(args, name)}")
    try:
        params = json.loads(args.task)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise ConfigError(f"--task must be a JSON mapping of the task's parameters, e.g. '{{\"goal\": [0.3, -0.2]}}'; "
                          f"got {args.task!r}")
    agent = load(run_dir, args.checkpoint)
    in_context = Capability.ADAPT_IN_CONTEXT in agent.capabilities  # RL²: adapts through the episodes of a trial
    if not in_context:
        require(agent, Capability.ADAPT, "adapt to a task you give (metarl adapt takes maml_trpo, promp, rl2)")
    given, wanted = ("--steps", "--episodes") if in_context else ("--episodes", "--steps")
    if getattr(args, given.removeprefix("--")) is not None:
        raise ConfigError(f"{type(agent).__name__} adapts {'in context' if in_context else 'by inner steps'}: "
                          f"give {wanted}, not {given}")
    try:
        task = as_task(agent.family, params)
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"--task {args.task}: {err}") from None
    if args.video:
        require(agent, Capability.VIDEOS, "make videos")
    if in_context:
        episodes = agent.config.episodes_per_trial if args.episodes is None else args.episodes
        returns = agent.adapt(task, episodes, seed=args.seed).returns
        print(f"{task!r}: return of each episode of the trial")
        labels = [f"episode {k + 1}" for k in range(len(returns))]
    else:
        returns = agent.adapt(task, steps=args.steps, seed=args.seed).returns
        print(f"{task!r}: mean return of {agent.config.episodes_per_task} episodes")
        labels = ["before adaptation", *(f"after inner step {k}" for k in range(1, len(returns)))]
    for label, value in zip(labels, returns, strict=True):
        print(f"  {label:24s} {value:10.2f}")
    if args.video:
        from metarl.rl.video import write_videos

        with run_lock(run_dir):
            paths = write_videos(agent, agent.family, [task], len(returns) - 1, args.seed, run_dir / "adapt",
                                 args.video_format)
        print(f"  video (left: before adaptation, right: after): {paths[0]}")
    return 0


def _interval(half_width: float | None) -> str:
    """A 95% interval's half-width as printed; ``n/a`` where it is undefined (one task: ``null`` in the JSON)."""
    return "n/a" if half_width is None else f"{half_width:.2f}"


def _print_eval(run_dir: Path, name: str = "eval") -> None:
    report = read_report(run_dir / f"{name}.json")
    print(f"{report['label']}: {report['num_tasks']} held-out tasks")
    print(f"  {report['x_label']}:")
    mean_key = SCORE_KEYS[report["metric"]][0]
    few_shot = report["metric"] != "return"  # the points are inner steps, not episodes
    tuning = report.get("step_size_tuning")
    if tuning:
        print(f"  step size {tuning['field']} tuned on {tuning['tasks']} training tasks (score: mean {report['metric']} "
              f"at points 1..{tuning['steps']}):")
        for row in tuning["table"]:
            score = "diverged" if row["score"] is None else f"{row['score']:10.2f} +- {_interval(row['ci95'])}"
            print(f"    {row['value']:<12g} {score}{'   <- chosen' if row['value'] == tuning['chosen'] else ''}")
    step_size = report.get("step_size")
    if step_size:
        print(f"  held-out tasks adapted with {step_size['field']}={step_size['value']:g} ({step_size['chosen_by']})")
    for step in report["steps"]:
        where = "" if few_shot else f" ({step['episodes_of_experience']:4d} episodes of experience)"
        print(f"  {step['index']:3d}{where}: {step[mean_key]:10.2f} +- {_interval(step['ci95'])}   gain over "
              f"point 0: {step['gain']:+.2f} +- {_interval(step['gain_ci95'])}")
    success = report.get("success")
    if success:
        print("  success rate (info['success'] at any step of an episode), mean over tasks; reached: the same for the "
              "episode slots (trials, sequences) that succeeded at this point or before:")
        for point in success["steps"]:
            classes = point.get("per_class", {})
            rates = ", ".join(f"{k} {v['success_rate']:.2f}" for k, v in classes.items())
            by_class = f"   per class: {rates}" if len(classes) > 1 else ""
            reached = f"   reached {point['reached_rate']:.2f} +- {_interval(point['reached_ci95'])}" \
                if "reached_rate" in point else ""  # (reports written before it was measured have none)
            print(f"  {point['index']:3d}: {point['success_rate']:6.2f} +- {_interval(point['ci95'])}{reached}{by_class}")
    ceiling = report.get("reference_ceiling")
    if ceiling:
        print(f"  reference after {ceiling['budgets']} budgets ({ceiling['env_steps_per_task']} env steps) on the first "
              f"{ceiling['tasks']} tasks: {ceiling['mean_return']:.2f} +- {_interval(ceiling['ci95'])} (last point on them: "
              f"{ceiling['last_point_on_these_tasks']:.2f})")
    print(f"  written: {run_dir / f'{name}.json'}, {run_dir / f'{name}.png'}")


def cmd_plot(args: argparse.Namespace) -> int:
    from metarl.running.evaluation import plot_adaptation

    reports = []
    for run_dir in args.run_dirs:
        path = Path(run_dir) / "eval.json"
        if not path.is_file():
            raise ConfigError(f"{str(path)!r} does not exist: run `metarl eval {run_dir}` first")
        reports.append(read_report(path))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_adaptation(reports, args.out, title=args.title or reports[0].get("family", ""))
    print(f"{'run':40s} " + " ".join(f"{f'point {s}':>16s}" for s in range(len(reports[0]["steps"]))))
    for r in reports:
        cells = " ".join(f"{s[SCORE_KEYS[r['metric']][0]]:8.2f} +-{s['ci95']:6.2f}" for s in r["steps"])
        print(f"{r['label']:40s} {cells}")
    print(f"written: {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from metarl.running.report import build_report

    out = args.out or str(Path("reports") / time.strftime("%Y%m%d-%H%M%S"))
    command = shlex.join(["metarl", "report", *args.run_dirs, "--out", out, "--format", args.format,
                          *(["--eval", args.eval] if args.eval != "eval" else [])])
    run_dirs = []  # a sweep's directory stands for its runs
    for given in map(Path, args.run_dirs):
        is_sweep = (given / SWEEP_FILE).is_file() and not (given / "config.yaml").exists()
        run_dirs.extend(read_sweep(given)[1] if is_sweep else [given])
    page = build_report(run_dirs, out, args.format, command, evaluation=args.eval)
    print(f"written: {page} (figures and summary.json beside it)")
    return 0


def cmd_references(args: argparse.Namespace) -> int:
    from metarl.running.evaluation import adaptation_report, mean_ci, write_report

    run_dir = Path(args.run_dir)
    config = saved_config(run_dir)
    family = make_family(config.family, config.family_overrides)
    episodes = int(config.agent_config.get("episodes_per_trial", 1))
    tasks = family.test_tasks[: config.eval_tasks]
    results = reference_curves(family, tasks, episodes, seed=config.seed)
    reports = [adaptation_report(curve, name, "episode of the trial", list(range(episodes)))
               for name, curve in results.items()]
    with run_lock(run_dir):
        write_report(reports, run_dir / "references.json")
    rows = [(r["label"], np.asarray(r["per_task_returns"]).sum(0)) for r in reports]
    evaluated = run_dir / "eval.json"
    if evaluated.is_file():
        curve = np.asarray(read_report(evaluated)["per_task_returns"])
        rows.insert(0, (f"{config.agent} (this run)", curve.sum(0)))
    print(f"{config.family} {config.family_overrides}: total reward over a trial of {episodes} episode(s), "
          f"{len(tasks)} held-out tasks")
    for name, totals in rows:
        mean, ci = mean_ci(totals)
        print(f"  {name:22s} {mean:9.2f} +- {ci:.2f}")
    print(f"written: {run_dir / 'references.json'}")
    return 0


SAMPLER_ACCEPTED = {"backend": ", ".join(map(repr, BACKENDS)),  # the sampler section's string fields
                    "address": "'auto', 'local', HOST:PORT, ray://HOST:PORT"}


def _print_fields(title: str, rows: list[dict[str, str]], markdown: bool) -> None:
    """A config reference (:func:`metarl.running.config.config_reference`) as text or as a Markdown table."""
    if markdown:
        print(f"{title}\n\n| field | type | default | accepted | description |\n|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(f"`{row[k]}`" if k in ("field", "default") else row[k].replace("|", "\\|")
                                   for k in ("field", "type", "default", "accepted", "description")) + " |")
        return
    print(f"{title}:")
    for row in rows:
        accepted = f", accepted {row['accepted']}" if row["accepted"] else ""
        print(f"  {row['field']:22s} {row['type']:16s} default {row['default']}{accepted}")
        if row["description"]:
            print(f"  {'':22s} {row['description']}")


def cmd_config(args: argparse.Namespace) -> int:
    if args.agent is not None:
        _print_fields(f"agent_config of {args.agent}", config_reference(agent_classes(args.agent)[1]), args.markdown)
        return 0
    _print_fields("run config (the top level of a YAML config)", config_reference(RunConfig), args.markdown)
    sampler = [{**row, "accepted": SAMPLER_ACCEPTED.get(row["field"], row["accepted"])}
               for row in config_reference(SamplerConfig)]
    print()
    _print_fields("sampler (the run config's sampler section, e.g. sampler: {backend: ray, workers: 8})", sampler,
                  args.markdown)
    print(f"\nagents (metarl config AGENT for their fields): {', '.join(agent_names())}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from metarl.envs.omniglot import OMNIGLOT_SHA256, pack_omniglot

    try:
        digest = pack_omniglot(args.background, args.evaluation, args.out)
    except ValueError as err:  # not the official zips: what the user gave, named in the message
        raise ConfigError(str(err)) from None
    print(f"written: {args.out}, sha256 {digest}")
    if digest == OMNIGLOT_SHA256:
        print("  the file metarl ships; Omniglot-v0 reads it as omniglot.npz in the folder given as data_dir")
    else:
        print("  not the file metarl ships (other drawings): Omniglot-v0 refuses it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Meta-reinforcement learning for robotics.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the registered task families")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_list)
    p = sub.add_parser("config", help="the fields of a run config, or of an agent's config: types, defaults, ranges")
    p.add_argument("agent", nargs="?", help="an agent name (default: the run config's own fields)")
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.set_defaults(run=cmd_config)
    p = sub.add_parser("data", help="build a data set's file from its official downloads")
    p.add_argument("dataset", choices=["omniglot"], help="omniglot: omniglot.npz from the official zips")
    p.add_argument("--background", required=True, metavar="ZIP", help="the official images_background.zip")
    p.add_argument("--evaluation", required=True, metavar="ZIP", help="the official images_evaluation.zip")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (omniglot.npz)")
    p.set_defaults(run=cmd_data)
    p = sub.add_parser("rollout", help="random-policy rollouts of task families (all by default)")
    p.add_argument("names", nargs="*", help="family names (default: every registered family)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per task (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_rollout)
    p = sub.add_parser("train", help="train an agent from a YAML config")
    p.add_argument("config", nargs="?", help="YAML run config (see experiments/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. agent_config.inner_lr=0.05")
    p.add_argument("--run-dir", help="run directory (default runs/<config>-seed<seed>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seeds", type=int, nargs="+", metavar="K",
                   help="one run per seed, in <run-dir>-seed<K> (default runs/<config>-seed<K>; with --sweep, "
                        "<run-dir>/KEY=V,...-seed<K>); overrides go before")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                   help="one run per combination of the values of every --sweep (times --seeds, default the config's "
                        "seed), in <run-dir>/KEY=V,...-seed<K> (each key by its last part: --sweep "
                        "agent_config.inner_lr=0.05,0.1 gives inner_lr=0.05-seed0 and inner_lr=0.1-seed0; default "
                        "run-dir runs/<config>), listed in <run-dir>/sweep.json")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="with --seeds or --sweep: up to N runs at once, in subprocesses")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="sample on the Ray cluster at ADDR ('auto': the one running on this machine; 'local': start "
                        "one here), as sampler: {backend: ray, address: ADDR} does; with --seeds or --sweep, run each "
                        "run as a Ray task on the cluster (run directories on a filesystem the nodes share)")
    p.set_defaults(run=cmd_train)
    p = sub.add_parser("eval", help="evaluate a run's adaptation on held-out tasks")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="few-shot settings, e.g. family_overrides.test_ways=20")
    p.add_argument("--name", help="stem of the written files (default eval: eval.json, eval.png; with --protocol "
                                  "metaworld, eval_metaworld.json; with --split train, eval_train and "
                                  "eval_metaworld_train)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="the tasks scored: test (default), the held-out ones; train, the training ones in their order "
                        "(the meta-train score; with --protocol metaworld, Meta-World's training classes and goals)")
    p.add_argument("--tasks", type=int, help="number of held-out tasks (default: the config's eval_tasks)")
    p.add_argument("--steps", type=int, help="inner steps (default: the config's eval_steps; with --protocol metaworld, "
                                             "its adaptation steps, default 1)")
    p.add_argument("--protocol", choices=("metarl", "metaworld"), default="metarl",
                   help="metarl (default): our adaptation curve on held-out tasks; metaworld: Meta-World's own "
                        "evaluator (metaworld.evaluation.metalearning_evaluation) on the test environments it builds, "
                        "for the Meta-World families, with its defaults unless the flags below change them")
    p.add_argument("--goals", type=int, default=40, metavar="N", help="metaworld: goals per test class (default 40)")
    p.add_argument("--meta-batch", type=int, default=20, metavar="N",
                   help="metaworld: environments, spread evenly over the test classes (default 20)")
    p.add_argument("--evals", type=int, default=10, metavar="N", help="metaworld: rounds, a new goal each (default 10)")
    p.add_argument("--adapt-episodes", type=int, default=10, metavar="N",
                   help="metaworld: episodes per environment and adaptation step (default 10)")
    p.add_argument("--eval-episodes", type=int, default=3, metavar="N",
                   help="metaworld: evaluation episodes counted per class and round (default 3)")
    p.add_argument("--checkpoint", help="a checkpoint file (default: the run's latest)")
    p.add_argument("--every-checkpoint", action="store_true",
                   help=f"score each checkpoint of the run on the held-out tasks as {EVAL_ITER}<k>.json (the held-out "
                        "score along meta-training, as the config's eval_every does while training; those already "
                        "written are kept)")
    p.add_argument("--step-size", type=float, metavar="V",
                   help="adapt with this step size (the agent's declared field, e.g. inner_lr of maml_trpo and "
                        "promp, finetune_learning_rate of sb3_pretrained), recorded in eval.json; the run's config "
                        "is unchanged")
    p.add_argument("--tune-step-size", type=float, nargs="+", metavar="V",
                   help="first choose the step size among these values on --tune-tasks tasks drawn from the TRAINING "
                        f"distribution (never held-out ones), then evaluate the held-out tasks with it: {TUNING_RULE}. "
                        "eval.json records the table and the choice")
    p.add_argument("--tune-tasks", type=int, metavar="N",
                   help=f"training tasks on which --tune-step-size scores each value (default {TUNE_TASKS})")
    p.add_argument("--video", action="store_true",
                   help="also render the policy before (left) and after (right) adaptation: RUN_DIR/videos/task<k>.gif")
    p.add_argument("--video-tasks", type=int, default=3, metavar="N", help="held-out tasks to render (default 3)")
    p.add_argument("--video-format", choices=("gif", "mp4"), default="gif",
                   help="gif (default), or mp4 where imageio's ffmpeg plugin or PyAV is installed")
    p.set_defaults(run=cmd_eval)
    p = sub.add_parser("adapt", help="adapt a run's meta-RL agent to a task you give and report its returns")
    p.add_argument("run_dir")
    p.add_argument("--task", required=True, metavar="JSON", help="the task's parameters, e.g. '{\"goal\": [0.3, -0.2]}'")
    p.add_argument("--steps", type=int, help="inner steps of maml_trpo, promp (default: those of meta-training)")
    p.add_argument("--episodes", type=int, help="episodes of an rl2 trial (default: those of meta-training)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled episodes (default 0)")
    p.add_argument("--checkpoint", help="a checkpoint file (default: the run's latest)")
    p.add_argument("--video", action="store_true", help="also render before | after: RUN_DIR/adapt/task0.gif")
    p.add_argument("--video-format", choices=("gif", "mp4"), default="gif")
    p.set_defaults(run=cmd_adapt)
    p = sub.add_parser("plot", help="plot the adaptation curves of several evaluated runs on one figure")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--title")
    p.set_defaults(run=cmd_plot)
    p = sub.add_parser("references", help="classic bandit/MDP strategies on a run's held-out tasks")
    p.add_argument("run_dir")
    p.set_defaults(run=cmd_references)
    p = sub.add_parser("report", help="a report over runs and seeds: adaptation and learning curves, final table")
    p.add_argument("run_dirs", nargs="+", help="run directories, or sweep directories (their runs); runs differing "
                                                 "only in seed form one method (a sweep: one per grid point)")
    p.add_argument("--out", help="output folder (default reports/<timestamp>)")
    p.add_argument("--format", choices=("html", "md"), default="html",
                   help="one self-contained HTML file (default) or Markdown linking the PNG figures")
    p.add_argument("--eval", default="eval", metavar="NAME",
                   help="score each run by its NAME.json where it has one (e.g. eval_tuned, from metarl eval "
                        "--tune-step-size --name eval_tuned), else by eval.json (default: eval)")
    p.set_defaults(run=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a positional list at the first option: key=value overrides placed after an option
    # (``metarl eval RUN --tasks 300 family_overrides.test_ways=20``) arrive here and join the others.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except (MetaRLError, ImportError, OSError) as err:  # anything else is a bug: its traceback shows
        message = f"{err.strerror}: {err.filename!r}" if isinstance(err, OSError) and err.filename else str(err)
        print(f"metarl {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
