"""What an Ollama server does with the options it is sent, by server version.

A benchmark must record what ran, not what was asked, and refuse an option the server would
silently drop, or a "faster" verdict may be the effect of nothing. These rules follow Ollama's
source (`file:function@tag`, read at v0.12.6, v0.24.0 and v0.33.0-rc2); docs/metrics.md has
the table per server generation. A rule the client cannot settle answers None (unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ollabench.config.options import ENGINE_OPTIONS
from ollabench.errors import ConfigError

Version = tuple[int, int, int]

TRUNCATE_FIELD = (0, 12, 6)  # api/types.go ChatRequest.Truncate/Shift first tagged here
PS_AFTER_TRAIN_CAP = (0, 15, 5)  # before: server/routes.go:PsHandler reports the uncapped ctx
THINK_MAX = (0, 22, 0)  # api ThinkValue accepts "max" from v0.21.3-rc0; first final release
THINK_LEVELS_ANY_MODEL = (0, 13, 0)  # 0.12.x ChatHandler: a level needs a harmony model
LLAMA_SERVER = (0, 30, 0)  # llm/llama_server.go replaces the Go runners
HARMONY_ARCHS = frozenset({"gptoss", "gpt-oss"})
DEFAULT_NUM_BATCH = 512  # api/types.go:DefaultOptions
DEFAULT_NUM_CTX_0_12 = 4096  # envconfig ContextLength before the VRAM tiers of 0.15.5
VISION_MIN_CTX = 2048  # server/sched.go:GetRunner (all generations)

# api/types.go:Options.FromMap logs "invalid option provided" and drops keys that are no
# longer options. The version each key went in (all long before 0.12).
DROPPED_IN: dict[str, Version] = {
    "mirostat": (0, 7, 0), "mirostat_tau": (0, 7, 0), "mirostat_eta": (0, 7, 0),
    "low_vram": (0, 7, 0), "use_mlock": (0, 7, 0), "tfs_z": (0, 5, 2),
    "penalize_newline": (0, 5, 5), "numa": (0, 4, 0),
}
# runner/ollamarunner/runner.go:completion builds its sampler from temperature, top_k, top_p,
# min_p and seed only (0.12-0.29): these options do nothing on the Go engine.
GO_ENGINE_IGNORED = ("repeat_penalty", "repeat_last_n", "presence_penalty",
                     "frequency_penalty", "typical_p")
# fs/ggml:KV.OllamaEngineRequired: architectures that run on the Go engine (a trailing "*"
# matches a prefix). Known at two tags; versions in between may have any list in between.
GO_ENGINE_ARCHS_0_12 = ("gemma3", "gemma3n", "mistral3", "qwen3", "qwen3moe", "llama4",
                        "mllama", "qwen25vl", "gptoss", "gpt-oss")
GO_ENGINE_ARCHS_0_24 = (*GO_ENGINE_ARCHS_0_12, "bert", "deepseek2", "deepseekocr", "gemma4",
                        "laguna", "nemotron_h*", "nomic-bert", "olmo3", "qwen35*", "qwen3next",
                        "qwen3vl*", "glm4moelite", "glmocr", "lfm2", "lfm2moe")
# server/sched.go:needsReload compares these (api.Runner); 0.30+ also draft_num_predict and
# the `shift` setting, which ollabench never sends.
RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")


def parse_version(text: str | None) -> Version | None:
    """"0.33.0-rc2" -> (0, 33, 0); None when the text is no version."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", (text or "").strip())
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def dotted(version: Version) -> str:
    return ".".join(map(str, version))


def parse_parameters(text: str) -> dict[str, Any]:
    """/api/show `parameters` ("name value" lines; `stop` repeats) as a dict."""
    parsed: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        value = value.strip().strip('"')
        if key in parsed:
            previous = parsed[key]
            parsed[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            parsed[key] = value
    return parsed


@dataclass(frozen=True)
class ServerModel:
    """The server version and what /api/show says about the model: what the rules need."""

    version_text: str
    version: Version
    architecture: str | None = None
    has_projector: bool = False
    capabilities: frozenset[str] | None = None  # None: the server did not say
    train_ctx: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # the Modelfile's

    @classmethod
    def from_show(cls, version_text: str, version: Version,
                  show: dict[str, Any]) -> ServerModel:
        info = show.get("model_info") or {}
        arch = info.get("general.architecture")
        train = info.get(f"{arch}.context_length") if arch else None
        caps = show.get("capabilities")
        return cls(version_text, version, arch, bool(show.get("projector_info")),
                   frozenset(caps) if isinstance(caps, list) else None,
                   train if isinstance(train, int) else None,
                   parse_parameters(show.get("parameters") or ""))

    @property
    def vision(self) -> bool:
        return self.capabilities is not None and "vision" in self.capabilities

    def modelfile_int(self, name: str) -> int | None:
        value = self.parameters.get(name)
        return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None


def go_engine(server: ServerModel) -> tuple[bool | None, str]:
    """Whether the model runs on the Go engine (llm/server.go:NewLlamaServer, 0.12-0.29):
    (True/False, or None when the client cannot tell; the reason in words)."""
    if server.version >= LLAMA_SERVER:
        return False, "llama-server runs every model"
    arch = server.architecture
    if arch is None:
        return None, "/api/show gives no general.architecture"
    in_0_12, in_0_24 = _listed(arch, GO_ENGINE_ARCHS_0_12), _listed(arch, GO_ENGINE_ARCHS_0_24)
    version = server.version
    if version < (0, 13, 0) or in_0_12:
        engine: bool | None = in_0_12
    elif version < (0, 24, 0):  # lists only grow: between 0.12's and 0.24's
        engine = None if in_0_24 else False
    elif version < (0, 25, 0):
        engine = in_0_24
    else:  # 0.25-0.29: later additions are not known
        engine = True if in_0_24 else None
    if engine and server.has_projector:
        return None, (f"{arch} is a Go-engine architecture, but a separate projector file "
                      "makes the server fall back to its llama.cpp runner")
    if engine:
        return True, f"{arch} models run on its Go engine"
    if engine is None:
        return None, (f"ollabench does not know whether Ollama {server.version_text} runs "
                      f"{arch} models on its Go engine, which ignores this option")
    return False, f"{arch} models run on its llama.cpp runner"


def _listed(arch: str, archs: tuple[str, ...]) -> bool:
    return any(arch.startswith(a[:-1]) if a.endswith("*") else arch == a for a in archs)


def check_options(options: dict[str, Any], server: ServerModel, where: str) -> dict[str, str]:
    """Refuse (ConfigError) an option this server drops or certainly ignores; return notes
    {option: "may be ignored by this server (why)"} for those it may ignore."""
    notes: dict[str, str] = {}
    ollama = f"Ollama {server.version_text}"
    for name in options:
        if name in ENGINE_OPTIONS:
            raise ConfigError(f"{where}.{name}: an Ollama server takes this from its own "
                              f"environment ({ENGINE_OPTIONS[name]}), not from a request; set "
                              "it where the server starts, or measure it on the embedded "
                              "llamacpp backend")
        dropped = DROPPED_IN.get(name)
        if dropped is not None and server.version >= dropped:
            raise ConfigError(f"{where}.{name}: {ollama} ignores this option (dropped in "
                              f"{dotted(dropped)}, it only logs 'invalid option provided'); "
                              "remove it")
        if name in GO_ENGINE_IGNORED:
            engine, why = go_engine(server)
            if engine:
                raise ConfigError(f"{where}.{name}: {ollama} ignores this option: {why}, "
                                  "whose sampler does not use it; remove it")
            if engine is None:
                notes[name] = f"may be ignored by this server ({ollama}: {why})"
    return notes


def check_think(think: bool | str, server: ServerModel, model: str) -> None:
    """Refuse a think value the server would answer with HTTP 400 on every call
    (server/routes.go:ChatHandler, api/types.go ThinkValue)."""
    ollama = f"Ollama {server.version_text}"
    if think is False:
        return
    if server.capabilities is not None and "thinking" not in server.capabilities:
        raise ConfigError(f"model.think: '{model}' does not support thinking (capabilities: "
                          f"{', '.join(sorted(server.capabilities))}); set it to false or null")
    if think == "max" and server.version < THINK_MAX:
        raise ConfigError(f"model.think: 'max' needs Ollama {dotted(THINK_MAX)} or newer; "
                          f"this server is {server.version_text}")
    if (isinstance(think, str) and server.version < THINK_LEVELS_ANY_MODEL
            and server.architecture not in HARMONY_ARCHS):
        raise ConfigError(f"model.think: {ollama} takes a level ({think!r}) only for gpt-oss "
                          f"models, not {server.architecture or 'this model'}; use true")


def runner_values(server: ServerModel, options: dict[str, Any]) -> dict[str, Any]:
    """The api.Runner values the scheduler stores for a request: sent, else the Modelfile's,
    else a built-in default where it is known (None: the server's own choice)."""
    values = {k: options.get(k, server.modelfile_int(k)) for k in RUNNER_OPTIONS}
    if values["num_batch"] is None and server.version < LLAMA_SERVER:
        values["num_batch"] = DEFAULT_NUM_BATCH
    if values["num_ctx"] is None and server.version < PS_AFTER_TRAIN_CAP:
        values["num_ctx"] = DEFAULT_NUM_CTX_0_12
    if values["num_ctx"] is not None and server.vision:
        values["num_ctx"] = max(values["num_ctx"], VISION_MIN_CTX)
    if values["num_ctx"] is not None and server.version >= LLAMA_SERVER and server.train_ctx:
        values["num_ctx"] = min(values["num_ctx"], server.train_ctx)  # sched.go@0.33 caps first
    return values


def needs_reload(server: ServerModel, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """server/sched.go:runnerRef.needsReload for the options of two consecutive requests."""
    before, after = runner_values(server, old), runner_values(server, new)
    for key in RUNNER_OPTIONS:
        if key == "num_gpu" and after[key] is not None and after[key] < 0:
            continue  # a negative num_gpu is never compared
        if key == "use_mmap" and after[key] is None and server.version >= LLAMA_SERVER:
            continue  # 0.30+ keeps the runner's use_mmap when the request sends none
        if before[key] != after[key]:
            return True
    return False


def effective_num_ctx(server: ServerModel, ps_context: int | None) -> int | None:
    """The context the runner has, from /api/ps context_length after the call."""
    if ps_context is None or server.version >= PS_AFTER_TRAIN_CAP or not server.train_ctx:
        return ps_context
    return min(ps_context, server.train_ctx)  # llm/server.go:NewLlamaServer caps the runner


def effective_num_batch(server: ServerModel, options: dict[str, Any],
                        num_ctx: int | None) -> tuple[int | None, str | None]:
    """(num_batch, basis). No endpoint reports it, so it is derived from the server's rule:
    "derived" where the rule is fixed, "assumed" where the server may lower it for memory."""
    sent = options.get("num_batch", server.modelfile_int("num_batch"))
    if server.version < LLAMA_SERVER:  # llm/server.go:NewLlamaServer
        if num_ctx is None:
            return None, None
        return min(sent or DEFAULT_NUM_BATCH, num_ctx), "derived"
    if sent is not None:
        return sent, "derived"
    if num_ctx is None:
        return None, None
    # server/sched.go:automaticGenerationBatch by context (one parallel slot assumed); it
    # steps down toward 512 when the batch would not fit in free VRAM.
    return (512 if num_ctx <= 4096 else 1024 if num_ctx <= 32768 else 2048), "assumed"
