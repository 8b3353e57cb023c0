"""Typed run configuration from YAML, with ``key=value`` overrides from the command line.

    family: HalfCheetahVel-v0          # a registered task family
    family_overrides: {horizon: 100}   # keyword overrides of the family
    agent: maml_trpo                   # an agent name (metarl.agents.AGENTS)
    agent_config: {inner_lr: 0.1}      # fields of that agent's config dataclass
    seed: 0
    iterations: 500
    checkpoint_every: 10

Numbers parse in the forms people write (``3e-4`` is a float, as in YAML 1.2). Unknown fields, missing
required fields, wrong types, duplicate keys, NaN and infinities, integers beyond ``2**31 - 1`` and values
outside a field's range (:data:`RANGES`, by field name: a name means the same in every agent's config) are
refused with a one-line message naming the file, field and value.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metarl.errors import ConfigError

__all__ = ["BACKENDS", "RANGES", "ConfigError", "Range", "RunConfig", "SamplerConfig", "build_dataclass", "check_ranges",
           "config_reference", "load_config", "parse_overrides"]

MAX_INT = 2**31 - 1


@dataclass(frozen=True)
class Range:
    """An interval of accepted values, each end closed unless marked open."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return "any finite number" if self.low == -math.inf else f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


ANY, POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(), Range(0, low_open=True), Range(0), Range(1)
UNIT, UNIT_OPEN_LOW = Range(0, 1), Range(0, 1, low_open=True)
WIDTH = Range(1, 2**16)  # a layer's units or channels (list fields: each element)

RANGES: dict[str, Range] = {
    # the run
    "seed": NON_NEGATIVE, "iterations": AT_LEAST_1, "checkpoint_every": AT_LEAST_1, "keep_checkpoints": NON_NEGATIVE,
    "eval_tasks": AT_LEAST_1,
    "eval_steps": NON_NEGATIVE, "eval_every": NON_NEGATIVE, "torch_threads": Range(1, 1024),
    # the sampler section (SamplerConfig)
    "workers": AT_LEAST_1, "env_workers": AT_LEAST_1, "cpus_per_worker": POSITIVE, "max_failures": NON_NEGATIVE,
    # batch sizes and counts
    "meta_batch_size": AT_LEAST_1, "episodes_per_task": AT_LEAST_1, "episodes_per_trial": AT_LEAST_1,
    "trials_per_task": AT_LEAST_1, "eval_chunk": AT_LEAST_1, "inner_steps": NON_NEGATIVE, "promp_steps": AT_LEAST_1,
    "fce_steps": AT_LEAST_1, "ppo_epochs": AT_LEAST_1, "n_epochs": AT_LEAST_1, "minibatches": AT_LEAST_1,
    "sac_batch_size": AT_LEAST_1, "buffer_size": AT_LEAST_1, "learning_starts": NON_NEGATIVE,
    "gradient_steps": Range(-1), "ceiling_budgets": NON_NEGATIVE, "ceiling_tasks": AT_LEAST_1,
    "anneal_iterations": NON_NEGATIVE, "lr_halve_every": NON_NEGATIVE,
    # networks
    "hidden_sizes": WIDTH, "key_sizes": WIDTH, "value_sizes": WIDTH, "hidden_size": WIDTH, "channels": WIDTH,
    "tc_filters": WIDTH, "relation_hidden": WIDTH, "init_std": POSITIVE, "log_std_init": ANY,
    # step sizes and the trust region
    "lr": POSITIVE, "learning_rate": POSITIVE, "finetune_learning_rate": POSITIVE, "inner_lr": POSITIVE,
    "max_kl": POSITIVE, "cg_iters": AT_LEAST_1, "cg_damping": NON_NEGATIVE, "ls_max_steps": AT_LEAST_1,
    "ls_backtrack_ratio": Range(0, 1, True, True),
    "metric_subsample": UNIT_OPEN_LOW, "grad_clip": NON_NEGATIVE, "max_grad_norm": POSITIVE, "tau": UNIT_OPEN_LOW,
    # returns and losses
    "gamma": UNIT_OPEN_LOW, "gae_lambda": UNIT, "clip_eps": POSITIVE, "clip_range": POSITIVE,
    "value_coef": NON_NEGATIVE, "vf_coef": NON_NEGATIVE, "entropy_coef": NON_NEGATIVE, "ent_coef": NON_NEGATIVE,
    "init_inner_kl_penalty": NON_NEGATIVE, "target_inner_kl": POSITIVE, "cosine_scale": POSITIVE,
    "margin": POSITIVE, "preprocess_p": POSITIVE,
    # PEARL (agents/pearl.py)
    "latent_size": AT_LEAST_1, "encoder_hidden_sizes": WIDTH, "kl_lambda": NON_NEGATIVE, "reward_scale": POSITIVE,
    "policy_lr": POSITIVE, "qf_lr": POSITIVE, "vf_lr": POSITIVE, "context_lr": POSITIVE,
    "policy_mean_reg": NON_NEGATIVE, "policy_std_reg": NON_NEGATIVE, "batch_size": AT_LEAST_1,
    "embedding_batch_size": AT_LEAST_1, "num_train_steps_per_itr": AT_LEAST_1, "num_initial_steps": NON_NEGATIVE,
    "num_tasks_sample": AT_LEAST_1, "num_steps_prior": NON_NEGATIVE, "num_steps_posterior": NON_NEGATIVE,
    "num_extra_rl_steps_posterior": NON_NEGATIVE, "update_post_train": AT_LEAST_1, "replay_buffer_size": AT_LEAST_1,
    "num_exp_traj_eval": NON_NEGATIVE,
}


BACKENDS = ("local", "ray")


@dataclass
class SamplerConfig:
    """The ``sampler`` section of a run config: how the episodes are sampled, never what they are (every backend
    gives the same episodes, bit for bit; :mod:`metarl.rl.distributed`)."""

    backend: str = "local"  # "local": in the training process; "ray": on worker actors of a Ray cluster
    workers: int | None = None  # ray: worker actors (default: one per CPU of the cluster)
    address: str | None = None  # ray: the cluster to join ("auto": the one on this machine; none: start a local one)
    cpus_per_worker: float = 0.5  # ray: CPUs each worker reserves (a fraction: workers idle while the learner updates)
    max_failures: int = 3  # ray: workers one sampling call may lose (their tasks sampled again) before the run stops
    env_workers: int = 1  # local: processes stepping the environments (1: this one; Meta-World's Python steps gain)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


@dataclass
class RunConfig:
    family: str  # a registered task family (metarl list)
    agent: str  # an agent name (metarl config lists them)
    family_overrides: dict[str, Any] = field(default_factory=dict)  # keyword overrides of the family
    agent_config: dict[str, Any] = field(default_factory=dict)  # fields of the agent's config (metarl config AGENT)
    seed: int = 0  # every random draw of the run derives from it
    iterations: int = 100  # meta-iterations
    checkpoint_every: int = 10  # write checkpoints/iter_<k>.pt every this many iterations (and at the end)
    keep_checkpoints: int = 0  # keep only the newest this many checkpoints (0: keep them all)
    eval_tasks: int = 40  # held-out tasks scored by `metarl eval` (and at the end of training)
    eval_steps: int = 3  # inner steps of the adaptation curve
    evaluate: bool = True  # run the evaluation when training ends
    eval_every: int = 0  # also score the held-out tasks every this many iterations: eval_iter_<k>.json (0: never)
    torch_threads: int = 1  # intra-op threads: small ops gain nothing from more, and spin against other jobs
    sampler: dict[str, Any] = field(default_factory=dict)  # how episodes are sampled: {backend: ray, workers: N, ...}

    def __post_init__(self) -> None:
        check_ranges(self, "run config")
        self.sampler_config()

    def sampler_config(self) -> SamplerConfig:
        """The ``sampler`` section, checked (an unknown field or a bad value is a :class:`ConfigError`)."""
        return build_dataclass(SamplerConfig, self.sampler, "sampler")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELD_COMMENT = re.compile(r"^    (\w+)\s*:[^#]*#\s*(.*)$")


def config_reference(cls: type) -> list[dict[str, str]]:
    """Every field of a config dataclass: name, type, default, accepted range and the comment beside its
    definition in the source (the nearest class's), so a reference printed from it cannot drift."""
    comments: dict[str, str] = {}
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                match = _FIELD_COMMENT.match(line)
                if match:
                    comments.setdefault(match[1], match[2].strip())
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        accepted = RANGES.get(f.name)
        rows.append({"field": f.name, "type": str(f.type), "default": default,
                     "accepted": "" if accepted is None else str(accepted), "description": comments.get(f.name, "")})
    return rows


def _check_range(owner: str, name: str, value: Any) -> None:
    """Refuse a value outside the field's range in :data:`RANGES` (lists: each element; ``None``, an optional
    field left unset, has no range to keep)."""
    accepted = RANGES.get(name)
    if accepted is None or value is None:
        return
    values = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, int | float) and v in accepted for v in values):
        raise ConfigError(f"{owner} field {name}={value!r} is out of range: accepted {accepted}")


def check_ranges(config: Any, owner: str) -> None:
    """Refuse a field of a config dataclass outside its range in :data:`RANGES` (lists: each element)."""
    for f in dataclasses.fields(config):
        _check_range(owner, f.name, getattr(config, f.name))


class _Loader(yaml.SafeLoader):
    """YAML with the floats of YAML 1.2 (``3e-4``, ``1E6``) and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML: {problem}{at}") from None


def _describe(annotation: Any) -> str:
    if typing.get_args(annotation) or not hasattr(annotation, "__name__"):
        return str(annotation).replace("typing.", "")
    return annotation.__name__


def _check_value(owner: str, name: str, value: Any) -> None:
    """Refuse NaN, infinities and integers beyond ``MAX_INT`` anywhere in a value (nested lists and dicts)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{owner} field {name!r} must be finite, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{owner} field {name!r} is too large: {value} (integers must lie within +-{MAX_INT})")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(owner, f"{name}.{key}", item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_value(owner, name, item)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of a field annotation (int/float/bool/str, list[...] and tuple[..., ...] of them,
    dict, unions); ints pass as floats, bools pass only as bools."""
    origin, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        return any(_matches(value, a) for a in args)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    if origin in (int, float) and isinstance(value, bool):
        return False
    expected = {int: int, float: (int, float), bool: bool, str: str, dict: dict}.get(origin)
    return expected is None or isinstance(value, expected)


def _check_type(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against a field annotation (see :func:`_matches`), floats made floats, sequences lists;
    an integer field takes a float without a fractional part (``iterations: 1e4``)."""
    _check_value(owner, name, value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        value = int(value)
        _check_value(owner, name, value)
    if not _matches(value, annotation):
        raise ConfigError(f"{owner} field {name!r} expects {_describe(annotation)}, got {value!r}")
    if annotation is float:
        return float(value)
    return list(value) if isinstance(value, tuple) else value


def build_dataclass(cls: type, values: dict[str, Any], owner: str) -> Any:
    """Instantiate a config dataclass from a dict, refusing unknown and missing fields, wrong types and values
    out of range by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{owner} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown {owner} field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(fields))}")
    missing = [k for k, f in fields.items() if k not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{owner} lacks the required field(s) {', '.join(map(repr, missing))}")
    checked = {k: _check_type(owner, k, v, hints[k]) for k, v in values.items()}
    for k, v in checked.items():
        _check_range(owner, k, v)
    try:
        return cls(**checked)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{owner}: {' '.join(str(err).split())}") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["agent_config.inner_lr=0.05", "seed=3"]`` -> nested dict; values parse as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. agent_config.inner_lr=0.05)")
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a field inside {'.'.join(parts[:depth + 1])}, which an "
                                  "earlier override set to a value")
        node[parts[-1]] = _yaml(raw, f"override {item!r}")
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """A YAML file's content, refusing a missing file, a directory, non-UTF-8 text and invalid YAML by path."""
    path = Path(path)
    where = f"{what} {str(path)!r}"
    if path.is_dir():
        raise ConfigError(f"{where} is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") \
            from None
    except OSError as err:
        raise ConfigError(f"{where} cannot be read: {err.strerror}") from None
    return _yaml(text, where)


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (or start from ``base``) and apply command-line overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        loaded = read_yaml(path)
        if loaded is None:
            raise ConfigError(f"config file {str(path)!r} is empty")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(overrides or []))
    return build_dataclass(RunConfig, data, "run config")
