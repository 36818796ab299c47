"""Embedded llama.cpp (llama-cpp-python): the same engine Ollama runs, in process, no server.

It behaves like an Ollama server where that matters to a benchmark: Ollama option names and
defaults, a reload (new `Llama`) when a load-time option changes, the load time reported in
`load_ms`, a too-long prompt truncated (head and tail kept) rather than a crash. Under
run.interleave call it keeps one engine per set of load-time options instead (each a `Llama`
over the same mmapped GGUF), so the arms can alternate call by call without a reload. Being in
process, it knows exactly what ran: the cached and evaluated prompt tokens, the context and
batch sizes, and when it reloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from ollabench.backends.base import (
    COLD,
    UNARRANGED,
    WARM,
    Backend,
    CachePlan,
    Message,
    OutputFormat,
    Tools,
    record_token_gaps,
)
from ollabench.backends.gguf import check_loadable
from ollabench.backends.llamacpp_contexts import Context, ContextPool
from ollabench.backends.llamacpp_options import (
    LOAD_OPTIONS,
    SAMPLING_OPTIONS,
    SUPPORTED_OPTIONS,
    llama_params,
    ollama_defaults,
    with_defaults,
)
from ollabench.backends.tool_wire import (
    call_schema,
    embedded_messages,
    format_schema,
    with_tool_prompt,
)
from ollabench.bench.interleave import CALL
from ollabench.config.schema import ModelConfig, RunConfig
from ollabench.errors import BackendUnavailable, ConfigError
from ollabench.files import sha256_file
from ollabench.records.schema import (
    ENGINE_CLOCK,
    ENGINE_COUNT,
    ENGINE_ERROR,
    OK,
    QUEUE_ENGINE_WAIT,
    CallMeasurement,
)


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence llama.cpp's log: what the C library writes to file descriptor 2, and what
    llama-cpp-python's log callback prints to sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull, contextlib.redirect_stderr(io.StringIO()):
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_vocab(path: Path) -> Any:
    """A vocabulary-only Llama: the metadata and tokenizer, no weights (a fraction of a
    second); llama.cpp's warning about the context such a load sets up is silenced."""
    from llama_cpp import Llama

    with _quiet_stderr():
        return Llama(model_path=str(path), vocab_only=True, verbose=False)


def _chat_formatter(llm: Any) -> Any:
    """The model's own chat template (from the GGUF), as Ollama applies it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return "" if token < 0 else llm.detokenize([token], special=True).decode("utf-8",
                                                                                  "replace")

    return Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"],
                               eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))


# How the engine serves agents at once (env.json, the report): llamacpp_contexts.py.
CONCURRENT_AGENTS = "one llama.cpp context per agent, weights shared (mmapped GGUF)"


class LlamaCppBackend(Backend):
    name = "llamacpp"
    switch_free = True

    def __init__(self, model: ModelConfig, run: RunConfig) -> None:
        self.model_path = model.gguf_path()
        self.prompt_cache = run.prompt_cache
        self.engine_version = metadata.version("llama-cpp-python")
        # One context per concurrent agent (llamacpp_contexts.py), in one pool that a change
        # of load-time options reloads, or under run.interleave call one pool per set of them.
        self.engine_per_load = run.interleave == CALL
        self._pools: dict[tuple[Any, ...], ContextPool] = \
            {} if self.engine_per_load else {(): ContextPool()}
        self.loads = 0  # model instances loaded so far (snapshot)
        self._loads_lock = threading.Lock()
        self._grammars: dict[str, Any] = {}  # call schema (JSON text) -> its LlamaGrammar
        self.option_notes: dict[str, str] = {}  # {option: why it cannot act here}

    def preflight(self) -> None:
        """The file is there, is a GGUF, and llama.cpp reads its metadata and tensor table."""
        if not self.model_path.is_file():
            raise BackendUnavailable(f"model file not found: {self.model_path}")
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "llama-cpp-python is not installed: pip install llama-cpp-python") from exc
        check_loadable(self.model_path, lambda path: _load_vocab(path).close())

    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unsupported = sorted(set(options) - SUPPORTED_OPTIONS)
        if unsupported:
            raise ConfigError(
                f"options.{unsupported[0]}: not supported by the llamacpp backend; "
                f"supported: {', '.join(sorted(SUPPORTED_OPTIONS))}")
        filled = with_defaults(options)
        if filled["kv_cache_type"] != "f16" and not filled["flash_attention"]:
            raise ConfigError(f"options.kv_cache_type: {filled['kv_cache_type']} needs "
                              "flash_attention: true (llama.cpp quantizes the cache only with "
                              "flash attention)")
        return filled

    def validate_options(self, options: dict[str, Any], where: str) -> None:
        """As the base class, and note an option this build cannot act on: GPU layers in a
        llama.cpp built without GPU offload run on the CPU whatever `num_gpu` says."""
        super().validate_options(options, where)
        import llama_cpp

        if options.get("num_gpu") not in (None, 0) and not llama_cpp.llama_supports_gpu_offload():
            self.option_notes["num_gpu"] = (
                "cannot act here: this llama.cpp build has no GPU offload "
                "(llama_supports_gpu_offload() is false), every layer runs on the CPU")

    def context_length(self, options: dict[str, Any]) -> int | None:
        return int(self.effective_options(options)["num_ctx"])

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Exact, with the model's tokenizer and chat template (a vocabulary-only load: no
        weights, so the first call still pays the real load)."""
        vocab = _load_vocab(self.model_path)
        try:
            formatted = _chat_formatter(vocab)(messages=embedded_messages(messages))
            return len(vocab.tokenize(formatted.prompt.encode("utf-8"), add_bos=True,
                                      special=True))
        finally:
            vocab.close()

    def expects_reload(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return self._load_options(old) != self._load_options(new)

    def refusal(self, tools: Tools | None,
                output_format: OutputFormat | None) -> tuple[str, str] | None:
        """One grammar holds the output: to a tool call or to a format, not both."""
        if tools and output_format is not None:
            return "format", ("the embedded engine holds the output to one grammar: a "
                              "structured-output format together with tools cannot be honoured")
        return None

    def chat(self, messages: list[Message], options: dict[str, Any],
             cache: CachePlan = UNARRANGED, tools: Tools | None = None,
             output_format: OutputFormat | None = None) -> CallMeasurement:
        """One call on a free context (llamacpp_contexts.py): a wait for one counts in the
        call's TTFT and end-to-end time, as a server's slot wait does, and is its queue_ms.
        With tools, the prompt lists them and a grammar holds the output to a call or an
        answer (backends/tool_wire.py); with an output format, a grammar holds it to the
        format's schema."""
        opts = self.effective_options(options)
        messages = embedded_messages(messages)
        constrained: dict[str, Any] = {}
        if tools:  # the grammar is built before the clock starts (once per schema; two
            # agents may both build the first one: harmless)
            messages = with_tool_prompt(messages, tools)
            constrained["grammar"] = self._grammar(call_schema(tools))
        elif output_format is not None:
            constrained["grammar"] = self._grammar(format_schema(output_format))
        pool = self._pool(opts)
        start_ns = time.perf_counter_ns()
        context = pool.acquire()
        try:
            return self._chat(context, messages, opts, cache, constrained, start_ns)
        finally:
            pool.release(context)

    def _pool(self, opts: dict[str, Any]) -> ContextPool:
        """The contexts these options run on: the one pool, or under run.interleave call the
        pool of their load-time options (created, unloaded, on first use)."""
        if not self.engine_per_load:
            return self._pools[()]
        return self._pools.setdefault(self._load_options(opts), ContextPool())

    def serve(self, agents: int, options: dict[str, Any]) -> None:
        """A context per agent, each loaded with these options before the block's clocks
        start (the first context is the warm-up calls' to load, as with one agent)."""
        opts = self.effective_options(options)
        pool = self._pool(opts)
        pool.grow(agents)
        for context in pool.contexts[1:agents]:
            self._ensure_loaded(context, opts)

    def _chat(self, context: Context, messages: list[Message], opts: dict[str, Any],
              cache: CachePlan, constrained: dict[str, Any], start_ns: int) -> CallMeasurement:
        """The call once the engine is ours. Without the prompt cache the engine's cache is
        cleared first, which needs no nonce: the call is cold by construction."""
        import llama_cpp

        queue_ms = (time.perf_counter_ns() - start_ns) / 1e6
        load_start_ns = time.perf_counter_ns()
        reload_expected = self._load_options(opts) != context.load_key
        reloaded = self._ensure_loaded(context, opts)
        llm = context.llm
        load_ms = (time.perf_counter_ns() - load_start_ns) / 1e6
        if not self.prompt_cache:
            llm.reset()
        max_tokens = int(opts["num_predict"])
        formatted = context.chat_format(messages=messages)
        tokens, prompt_tokens, truncated = _prompt_tokens(llm, formatted.prompt, opts,
                                                          max_tokens)
        sampling = {SAMPLING_OPTIONS[k]: v for k, v in opts.items()
                    if k in SAMPLING_OPTIONS and k != "stop"}
        sampling["stop"] = [*_as_list(formatted.stop), *opts.get("stop", [])]
        llama_cpp.llama_perf_context_reset(llm.ctx)
        # The prompt is cut to leave room for the whole output cap: no context shift.
        measurement = CallMeasurement(
            load_ms=load_ms, reloaded=reloaded, reload_expected=reload_expected,
            truncated=truncated, context_shift=False, prompt_tokens=prompt_tokens,
            num_ctx=int(opts["num_ctx"]), num_batch=int(llm.n_batch), num_batch_basis="engine",
            engine_version=self.engine_version, outcome=OK, queue_ms=queue_ms,
            queue_ms_source=QUEUE_ENGINE_WAIT)
        pieces: list[str] = []
        token_times_ns: list[int] = []
        try:
            for chunk in llm.create_completion(prompt=tokens, stream=True, **sampling,
                                               **constrained):
                choice = chunk["choices"][0]
                if choice["text"]:
                    token_times_ns.append(time.perf_counter_ns())
                    pieces.append(choice["text"])
                if choice.get("finish_reason"):
                    measurement.done_reason = choice["finish_reason"]
        except (RuntimeError, ValueError) as exc:
            measurement.error, measurement.outcome = f"llama.cpp: {exc}", ENGINE_ERROR
        measurement.e2e_ms = (time.perf_counter_ns() - start_ns) / 1e6
        if token_times_ns:
            measurement.ttft_ms = (token_times_ns[0] - start_ns) / 1e6
        record_token_gaps(measurement, token_times_ns)
        # In process, the engine's whole time is the client's end-to-end time.
        measurement.total_ms = measurement.e2e_ms
        measurement.output = "".join(pieces)
        self._copy_engine_timings(measurement, llama_cpp.llama_perf_context(llm.ctx))
        self._set_cache_state(measurement, cache)
        return measurement

    def _grammar(self, schema_object: dict[str, Any]) -> Any:
        """The grammar of a JSON schema (a turn's tool call or answer, a format), built
        once per schema."""
        from llama_cpp import LlamaGrammar

        schema = json.dumps(schema_object, sort_keys=True)
        if schema not in self._grammars:
            with _quiet_stderr():
                self._grammars[schema] = LlamaGrammar.from_json_schema(schema, verbose=False)
        return self._grammars[schema]

    def _set_cache_state(self, measurement: CallMeasurement, cache: CachePlan) -> None:
        """Cold when the cache was cleared; else as the bench arranged it; else as the exact
        counts show it (observed, not controlled)."""
        if not self.prompt_cache:
            measurement.cache_state, measurement.cache_controlled = COLD, True
        elif cache.state is not None:
            measurement.cache_state, measurement.cache_controlled = cache.state, True
        elif measurement.prompt_cached_tokens is not None:
            measurement.cache_state = WARM if measurement.prompt_cached_tokens else COLD
            measurement.cache_controlled = False

    def _load_options(self, opts: dict[str, Any]) -> tuple[Any, ...]:
        filled = with_defaults(opts)
        return tuple(filled[k] for k in LOAD_OPTIONS)

    def _ensure_loaded(self, context: Context, opts: dict[str, Any]) -> bool:
        """Load a new model instance when a load-time option changed; True if it did."""
        key = self._load_options(opts)
        if context.llm is not None and key == context.load_key:
            return False
        from llama_cpp import Llama

        context.close()
        load = dict(zip(LOAD_OPTIONS, key, strict=True))
        try:
            context.llm = Llama(model_path=str(self.model_path), verbose=False,
                                **llama_params(load))
        except ValueError:  # the file passed preflight: the options are at fault
            raise BackendUnavailable(
                f"llama.cpp could not load {self.model_path} with {json.dumps(load)}: not "
                "enough memory for this context and batch? Lower num_ctx or num_batch"
            ) from None
        context.load_key = key
        context.chat_format = _chat_formatter(context.llm)
        with self._loads_lock:
            self.loads += 1
        return True

    def _copy_engine_timings(self, measurement: CallMeasurement, perf: Any) -> None:
        """llama.cpp's own counters (it reports a count of 0 as 1: a zero time means zero).

        The engine decodes every output token but the last one of a length-capped reply (it is
        sampled, then the loop stops), so that one is added to the decoded count.
        """
        decoded = int(perf.n_eval) if perf.t_eval_ms > 0 else 0
        prompt_evaluated = int(perf.n_p_eval) if perf.t_p_eval_ms > 0 else 0
        measurement.prompt_eval_ms = float(perf.t_p_eval_ms)
        measurement.eval_ms = float(perf.t_eval_ms)
        measurement.output_tokens = decoded + (1 if measurement.done_reason == "length" else 0)
        measurement.token_count_source, measurement.timing_source = ENGINE_COUNT, ENGINE_CLOCK
        if measurement.prompt_tokens is not None:
            measurement.prompt_eval_tokens = min(prompt_evaluated, measurement.prompt_tokens)
            measurement.prompt_cached_tokens = measurement.prompt_tokens - \
                measurement.prompt_eval_tokens

    def provenance(self) -> dict[str, Any]:
        return {
            "engine": "llama.cpp (llama-cpp-python)",
            "engine_version": self.engine_version,
            "model_file": str(self.model_path),
            "model_sha256": sha256_file(self.model_path),
            "model_bytes": self.model_path.stat().st_size,
            "assumed_ollama_defaults": ollama_defaults(),
            "concurrent_agents": CONCURRENT_AGENTS,
            "option_notes": dict(self.option_notes),
        }

    def snapshot(self) -> dict[str, Any]:
        """The first context's load (the one a lone agent uses), how many contexts are
        loaded, the distinct load-time options loaded side by side (`engines`: more than one
        only under run.interleave call) and the model loads so far (`loads`)."""
        contexts = [c for pool in self._pools.values() for c in pool.contexts]
        key = contexts[0].load_key if contexts else None
        loaded = {"contexts": sum(c.llm is not None for c in contexts),
                  "engines": len({c.load_key for c in contexts if c.llm is not None}),
                  "loads": self.loads}
        if key is None:
            return {"loaded": False, "load_options": None, **loaded}
        return {"loaded": True, "load_options": dict(zip(LOAD_OPTIONS, key, strict=True)),
                **loaded}

    def unload(self) -> None:
        self.close()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


def _prompt_tokens(llm: Any, text: str, opts: dict[str, Any],
                   max_tokens: int) -> tuple[list[int], int, bool]:
    """Apply the model's chat template; cut the middle if prompt + output cap exceed num_ctx.

    Ollama keeps the first num_keep tokens and the tail when a prompt overflows; we do the
    same, but leave room for the whole output cap so both arms get the same cap.
    """
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    budget = max(int(opts["num_ctx"]) - max_tokens, 1)
    if len(tokens) <= budget:
        return tokens, len(tokens), False
    keep = min(max(int(opts["num_keep"]), 0), budget - 1)
    return tokens[:keep] + tokens[len(tokens) - (budget - keep):], budget, True
