"""What an Ollama server does with one /api/chat request, per server generation.

The fake server (fake_ollama.py) asks this module what to do; it answers from a model of
Ollama's source, read at v0.12.6, v0.24.0 and v0.33.0-rc2, each rule citing the upstream
`file:function` it mirrors. "G24" below is 0.12-0.29 (Go runners), "G33" 0.30+ (llama-server;
only the rendered chat path is modelled). It shares no code with ollabench on purpose: the
backend's rules are checked against an independent reading of the source.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

Version = tuple[int, int, int]

LLAMA_SERVER = (0, 30, 0)
MODEL_SIZE_BYTES = 4_683_087_332
DEFAULT_NUM_KEEP = 4  # api/types.go:DefaultOptions
DEFAULT_RUNNER = {"num_batch": 512, "num_gpu": -1, "main_gpu": 0, "use_mmap": None,
                  "num_thread": 0}  # api/types.go:DefaultOptions (Runner part)
INT_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread",
                         "num_keep", "seed", "num_predict", "top_k", "repeat_last_n"})
FLOAT_OPTIONS = frozenset({"temperature", "top_p", "min_p", "typical_p", "repeat_penalty",
                           "presence_penalty", "frequency_penalty"})
REMOVED_OPTIONS = frozenset({"mirostat", "mirostat_tau", "mirostat_eta", "low_vram",
                             "use_mlock", "tfs_z", "penalize_newline", "numa", "f16_kv",
                             "logits_all", "vocab_only"})
GO_ENGINE_UNUSED = frozenset({"repeat_penalty", "repeat_last_n", "presence_penalty",
                              "frequency_penalty", "typical_p"})
GO_ENGINE_ARCHS = frozenset({"gemma3", "gemma3n", "mistral3", "qwen3", "qwen3moe", "llama4",
                             "mllama", "qwen25vl", "gptoss"})
TOO_LONG_G24 = "the input length exceeds the context length"
TOO_LONG_G33 = ("the prompt is longer than the context length currently available to the "
                "model; shorten the prompt, adjust the context length in settings, or use a "
                "model with a longer context length")
# UNSETTLED in the source notes: llama-server's own text for an uncut oversize prompt.
TOO_LONG_LLAMA_SERVER = "the request exceeds the available context size, try increasing it"
GO_DURATION = re.compile(r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+)")


class Refusal(Exception):
    """An HTTP error status with Ollama's {"error": message}."""

    def __init__(self, status: int, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class ModelSpec:
    """What /api/show reports for a model (general.architecture, <arch>.context_length)."""

    arch: str
    train_ctx: int
    capabilities: tuple[str, ...] = ("completion", "tools")
    projector: bool = False


MODELS = {
    "qwen2.5:7b": ModelSpec("qwen2", 32768),
    "llama3.1:8b": ModelSpec("llama", 131072),
    "gemma3:4b": ModelSpec("gemma3", 131072, ("completion", "vision")),
    "smollm2:135m": ModelSpec("llama", 8192),
    "qwen3:4b": ModelSpec("qwen3", 40960, ("completion", "tools", "thinking")),
    "gpt-oss:20b": ModelSpec("gptoss", 131072, ("completion", "tools", "thinking")),
    "mistral-small3.1:24b": ModelSpec("mistral3", 131072, ("completion", "vision"),
                                      projector=True),
}


def parse_version(text: str) -> Version:
    major, minor, patch = re.match(r"(\d+)\.(\d+)\.(\d+)", text).groups()  # type: ignore[union-attr]
    return int(major), int(minor), int(patch)


def tokens_of(messages: list[dict[str, Any]]) -> list[str]:
    """The fake's tokenizer: a role marker, then the whitespace-split content, per message,
    and the generation prompt (what a chat template renders)."""
    tokens: list[str] = []
    for message in messages:
        tokens += [f"<|{message.get('role')}|>", *str(message.get("content", "")).split()]
    return [*tokens, "<|assistant|>"]


@dataclass
class Runner:
    """A loaded model: the scheduler's stored options and the runner's single cache slot."""

    stored: dict[str, Any]  # what server/sched.go:needsReload compares
    auto_ctx: bool
    ctx: int  # the runner's context (after the training cap)
    ps_ctx: int  # what /api/ps context_length reports
    num_batch: int
    shift: bool
    keep_alive_s: float | None = None
    slot: list[str] = field(default_factory=list)  # tokens whose KV the slot holds


@dataclass
class Plan:
    """What the server does with one request: the fake's per-request log."""

    prompt_tokens: int = 0  # after truncation (what the engine saw)
    full_prompt_tokens: int = 0
    reused_tokens: int = 0
    evaluated_tokens: int = 0
    prompt_eval_count: int = 0  # as the final chunk reports it
    truncated: bool = False
    effective_ctx: int = 0
    num_batch: int = 0
    reloaded: bool = False
    context_shift: bool = False
    output_tokens: int = 0
    done_reason: str = "stop"
    thinking: bool = False
    ignored_options: list[str] = field(default_factory=list)  # logged "invalid option"
    unused_options: list[str] = field(default_factory=list)  # accepted, no effect
    prompt: list[str] = field(default_factory=list)


class Server:
    """The state of one fake server of a given version, and its request rules."""

    def __init__(self, version: str, default_ctx: int = 4096) -> None:
        self.version_text = version
        self.version = parse_version(version)
        self.default_ctx = default_ctx  # OLLAMA_CONTEXT_LENGTH or the VRAM tier
        self.runners: dict[str, Runner] = {}
        self.gpu = True  # False: a server without a GPU (every model in system memory)

    @property
    def g33(self) -> bool:
        return self.version >= LLAMA_SERVER

    # --- request fields ----------------------------------------------------------------------

    def check_fields(self, name: str, spec: ModelSpec, body: dict[str, Any]) -> bool:
        """Refuse what server/routes.go:ChatHandler refuses; return whether it thinks."""
        keep_alive_seconds(body.get("keep_alive"))
        think = body.get("think")
        levels = ["high", "medium", "low"] + (["max"] if self.version >= (0, 21, 3) else [])
        if isinstance(think, str) and think not in levels:  # api/types.go ThinkValue
            allowed = ", ".join(f'"{level}"' for level in levels)
            raise Refusal(400, f'invalid think value: "{think}" (must be {allowed}, true, '
                               'or false)')
        thinks = "thinking" in spec.capabilities
        if think not in (None, False) and not thinks:
            raise Refusal(400, f'"{body.get("model")}" does not support thinking')
        if isinstance(think, str) and self.version < (0, 13, 0) and spec.arch != "gptoss":
            raise Refusal(400, f'think value "{think}" is not supported for this model')
        if body.get("tools") and "tools" not in spec.capabilities:
            # server/routes.go:ChatHandler asks for model.CapabilityTools when tools is not
            # empty; CheckCapabilities fails and handleScheduleError answers 400 "%q %v"
            raise Refusal(400, f'"{body.get("model")}" does not support tools')
        for key, value in (body.get("options") or {}).items():
            check_option_type(key, value)
        return thinks and think is not False  # unset think on a thinking model thinks

    # --- scheduling ----------------------------------------------------------------------------

    def schedule(self, name: str, spec: ModelSpec, body: dict[str, Any], plan: Plan) -> Runner:
        """server/sched.go:GetRunner + needsReload + llm/server.go:NewLlamaServer."""
        opts = body.get("options") or {}
        auto_ctx = "num_ctx" not in opts
        ctx = max(int(opts.get("num_ctx", self.default_ctx)), 4)
        if "vision" in spec.capabilities:
            ctx = max(ctx, 2048)  # sched.go:GetRunner raises vision models
        runner_ctx = min(ctx, spec.train_ctx)  # llm/server.go:NewLlamaServer caps
        shift = body.get("shift", True) is not False if self.version >= (0, 12, 6) else True
        stored = {"num_ctx": runner_ctx if self.g33 else ctx,  # 0.33 caps before storing
                  **{k: opts.get(k, DEFAULT_RUNNER[k]) for k in DEFAULT_RUNNER}}
        if self.g33:  # llm/llama_server.go: --context-shift is a load-time flag
            stored["shift"] = shift
        old = self.runners.get(name)
        if old is None or self._needs_reload(old, stored, auto_ctx, opts):
            plan.reloaded = True
            old = Runner(stored, auto_ctx, runner_ctx,
                         runner_ctx if self.version >= (0, 15, 5) else ctx,  # PsHandler
                         self._num_batch(opts, runner_ctx), shift)
            self.runners[name] = old
        plan.effective_ctx, plan.num_batch = old.ctx, old.num_batch
        return old

    def _needs_reload(self, old: Runner, stored: dict[str, Any], auto_ctx: bool,
                      opts: dict[str, Any]) -> bool:
        """server/sched.go:runnerRef.needsReload (api.Runner DeepEqual; 0.30+ refinements)."""
        for key, value in stored.items():
            if key == "num_gpu" and value < 0:
                continue  # a negative num_gpu never forces a reload
            if self.g33 and key == "num_ctx" and auto_ctx and old.auto_ctx:
                continue
            if self.g33 and key == "num_batch" and "num_batch" not in opts:
                continue  # auto num_batch is not compared among auto requests
            if self.g33 and key == "use_mmap" and "use_mmap" not in opts:
                continue  # auto use_mmap keeps the runner's
            if old.stored.get(key) != value:
                return True
        return False

    def _num_batch(self, opts: dict[str, Any], ctx: int) -> int:
        if not self.g33:  # llm/server.go:NewLlamaServer
            return min(int(opts.get("num_batch", 512)), ctx)
        if "num_batch" in opts:
            return int(opts["num_batch"])
        # server/sched.go:automaticGenerationBatch (no memory pressure in the fake)
        return 512 if ctx <= 4096 else 1024 if ctx <= 32768 else 2048

    # --- prompt --------------------------------------------------------------------------------

    def prompt(self, body: dict[str, Any], runner: Runner, plan: Plan) -> list[str]:
        """Messages dropped, then tokens cut, as each generation does (or a 400)."""
        messages = body.get("messages") or []
        opts = body.get("options") or {}
        truncate = body.get("truncate", True) is not False if self.version >= (0, 12, 6) \
            else True  # api/types.go ChatRequest.Truncate exists from 0.12.6
        plan.full_prompt_tokens = len(tokens_of(messages))
        if truncate:
            # server/prompt.go:chatPrompt checks the request's num_ctx (0.33: the runner's)
            limit = runner.ctx if self.g33 else int(opts.get("num_ctx", self.default_ctx))
            messages = drop_old_messages(messages, limit)
        tokens = tokens_of(messages)
        num_keep = int(opts.get("num_keep", DEFAULT_NUM_KEEP))
        if self.g33:
            tokens = self._cut_g33(tokens, runner, truncate, num_keep)
        elif len(tokens) > runner.ctx:  # runner NewSequence (ollamarunner, llamarunner)
            if not truncate:
                raise Refusal(400, TOO_LONG_G24)
            keep = min(num_keep if num_keep >= 0 else len(tokens), runner.ctx - 1)
            tokens = tokens[:keep] + tokens[len(tokens) - (runner.ctx - keep):]
        plan.truncated = len(tokens) < plan.full_prompt_tokens
        plan.prompt_tokens = len(tokens)
        return tokens

    def _cut_g33(self, tokens: list[str], runner: Runner, truncate: bool,
                 num_keep: int) -> list[str]:
        """llm/llama_server.go:completionPromptForRequest (rendered path, no images)."""
        ctx = runner.ctx
        if len(tokens) <= ctx - 1:
            return tokens
        if not truncate:  # sent uncut; llama-server refuses it
            raise Refusal(400, TOO_LONG_LLAMA_SERVER)
        if not runner.shift:
            if self.version >= (0, 30, 9):
                raise Refusal(400, TOO_LONG_G33)
            raise Refusal(400, TOO_LONG_LLAMA_SERVER)
        keep = min(num_keep, ctx - 1)
        # contextShiftPromptLimit: about half the context from 0.30.11, ctx - 1 before
        limit = ctx - max((ctx - keep) // 2, 1) if self.version >= (0, 30, 11) else ctx - 1
        return tokens[:keep] + tokens[len(tokens) - (limit - keep):]

    def evaluate(self, runner: Runner, tokens: list[str], plan: Plan) -> None:
        """Cache reuse: ollamarunner/cache.go:LoadCacheSlot (longest common prefix with the
        slot; a full match still evaluates one token); 0.33: llama-server's slot, the same
        rule, and prompt_eval_count = cache_n + prompt_n (llamaServerTimings, 0.30.1+)."""
        common = 0
        for mine, theirs in zip(runner.slot, tokens, strict=False):
            if mine != theirs:
                break
            common += 1
        plan.reused_tokens = min(common, len(tokens) - 1)
        plan.evaluated_tokens = len(tokens) - plan.reused_tokens
        if self.version == (0, 30, 0):
            plan.prompt_eval_count = plan.evaluated_tokens  # prompt_n only
        else:
            plan.prompt_eval_count = len(tokens)  # 0.12-0.29: numPromptInputs
        plan.prompt = tokens

    def generate(self, runner: Runner, plan: Plan, wanted: int, num_predict: int | None) -> None:
        """Output length and ending: num_predict capped at 10 x num_ctx (llmServer.Completion),
        a silent context shift past the context, or "length" without shift."""
        cap = num_predict if num_predict is not None and num_predict >= 0 else 10 * runner.ctx
        cap = min(cap, 10 * runner.ctx)
        plan.output_tokens = min(wanted, cap)
        plan.done_reason = "length" if wanted >= cap else "stop"
        room = runner.ctx - plan.prompt_tokens
        if plan.output_tokens > room:
            if runner.shift:  # ollamarunner forwardBatch ShiftCacheSlot; llama-server shift
                plan.context_shift = True
            else:
                plan.output_tokens, plan.done_reason = max(room, 0), "length"

    def options_effect(self, spec: ModelSpec, opts: dict[str, Any], plan: Plan) -> None:
        """api/types.go:Options.FromMap drops removed keys with "invalid option provided";
        ollamarunner's sampler (0.12-0.29) never reads the penalties."""
        plan.ignored_options = sorted(k for k in opts if k in REMOVED_OPTIONS)
        if not self.g33 and spec.arch in GO_ENGINE_ARCHS and not spec.projector:
            plan.unused_options = sorted(k for k in opts if k in GO_ENGINE_UNUSED)


def drop_old_messages(messages: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """server/prompt.go:chatPrompt: the longest suffix that fits, with the system messages
    before it; the last message is always kept."""
    for start in range(len(messages)):
        kept = [m for m in messages[:start] if m.get("role") == "system"] + messages[start:]
        if len(tokens_of(kept)) <= limit or start == len(messages) - 1:
            return kept
    return messages


def check_option_type(key: str, value: Any) -> None:
    """api/types.go:Options.FromMap type errors (500 through handleScheduleError)."""
    if value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key in INT_OPTIONS and not number:
        raise Refusal(500, f'option "{key}" must be of type integer')
    if key in FLOAT_OPTIONS and not number:
        raise Refusal(500, f'option "{key}" must be of type float32')
    if key == "use_mmap" and not isinstance(value, bool):
        raise Refusal(500, f'option "{key}" must be of type boolean')
    if key == "stop" and not isinstance(value, list):
        raise Refusal(500, f'option "{key}" must be of type array')


def keep_alive_seconds(value: Any) -> float | None:
    """api/types.go:Duration.UnmarshalJSON: a number is seconds, a string a Go duration;
    negative means forever (None here: no expiry)."""
    if value is None:
        return 300.0  # OLLAMA_KEEP_ALIVE default
    if isinstance(value, bool):
        raise Refusal(400, "Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        return None if value < 0 else float(value)
    if isinstance(value, str):
        if not GO_DURATION.fullmatch(value):
            if re.fullmatch(r"[-+]?\d+(\.\d*)?", value):
                raise Refusal(400, f'time: missing unit in duration "{value}"')
            raise Refusal(400, f'time: invalid duration "{value}"')
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        seconds = sum(float(n) * units[u] for n, u in
                      re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)", value))
        return None if value.startswith("-") else seconds
    raise Refusal(400, f"Unsupported type: '{type(value).__name__}'")


# --- metadata endpoints ------------------------------------------------------------------------


def tags(models: tuple[str, ...]) -> list[dict[str, Any]]:
    """server/routes.go:ListHandler."""
    return [{"name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z",
             "size": MODEL_SIZE_BYTES, "digest": digest(name), "details": details(name)}
            for name in models]


def ps(server: Server) -> list[dict[str, Any]]:
    """server/routes.go:PsHandler; context_length as the generation reports it. size_vram is
    the runner's VRAM use (llm/server.go VRAMSize), 0 on a server without a GPU."""
    expires = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
    vram = MODEL_SIZE_BYTES if server.gpu else 0
    return [{"name": name, "model": name, "size": MODEL_SIZE_BYTES, "digest": digest(name),
             "details": details(name), "expires_at": expires, "size_vram": vram,
             "context_length": runner.ps_ctx} for name, runner in server.runners.items()]


def show(name: str) -> dict[str, Any]:
    """server/routes.go:GetModelInfo: model_info is the GGUF KV (architecture, context)."""
    spec = MODELS[name]
    shown = {
        "modelfile": f"FROM {name}\n",
        "parameters": 'stop                           "<|im_start|>"\n'
                      'stop                           "<|im_end|>"\n'
                      'temperature                    0.7',
        "template": "{{ .Prompt }}",
        "details": details(name),
        "model_info": {"general.architecture": spec.arch,
                       f"{spec.arch}.context_length": spec.train_ctx,
                       "general.parameter_count": 7_615_616_512},
        "capabilities": list(spec.capabilities),
    }
    if spec.projector:
        shown["projector_info"] = {"clip.has_vision_encoder": True}
    return shown


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def details(name: str) -> dict[str, Any]:
    family = MODELS[name].arch
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}
