"""The report's configuration section: what each arm asked for and what ran.

A profile's options are requests. The server may raise the context (vision models run at
least 2048), cap it at the model's training context, choose `num_batch` from the context, or
ignore an option altogether. So the table shows requested and effective values side by side,
names a change the profile did not ask for (a confounded comparison), and marks an option
this server may ignore or that cannot act here (GPU layers on an engine or server without a
GPU), so that no difference is read as its effect.
"""

from __future__ import annotations

import json
from typing import Any

from mdutils.mdutils import MdUtils

from ollabench.records.schema import ARMS
from ollabench.redaction import redact_url
from ollabench.report.format import md_escape
from ollabench.report.inputs import Inputs
from ollabench.report.markdown import table

EFFECTIVE_OPTIONS = ("num_ctx", "num_batch")  # what the records hold as really used
BASIS_WORDS = {
    "engine": "as the engine reports it",
    "sent": "as sent",
    "derived": "derived from the context",
    "assumed": "assumed: the server's automatic choice, not reported",
}


def configuration(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Configuration of both arms", add_table_of_contents="n")
    config = inputs.config
    if not config:
        md.new_paragraph("The configuration was not recorded (no env.json).")
        return
    requested = requested_options(config)
    notes = option_notes(inputs.env)
    conditions = inputs.quality["conditions"]
    names = sorted(set().union(*requested.values()))
    rows = [["profile", *(f"`{inputs.profiles[arm]}`" for arm in ARMS)]]
    rows += engine_rows(inputs.env, conditions)
    rows += [[_option_name(name, notes), *(_requested(requested[arm], name) for arm in ARMS)]
             for name in names]
    rows += [[f"`{name}` that ran", *(_effective(conditions.get(arm) or {}, name)
                                      for arm in ARMS)]
             for name in EFFECTIVE_OPTIONS if _known(conditions, name)]
    table(md, ["Setting", "Control (reference)", "Treatment (profile)"], rows)
    confounded = confounded_changes(requested, conditions)
    if confounded:
        md.new_list([md_escape(item) for item in confounded])
    if notes:
        md.new_paragraph("Options marked † cannot act on this engine or server, or it may "
                         "ignore them: "
                         + "; ".join(f"`{name}`: {why}" for name, why in sorted(notes.items()))
                         + ". No difference in this report is evidence of their effect.")
    overridden = (inputs.env.get("workload") or {}).get("overridden_fields") or []
    if overridden:
        md.new_paragraph("The trace's own " + ", ".join(f"`{name}`" for name in overridden)
                         + " were not replayed: each arm sent its profile's options and its "
                         "model settings instead (docs/workloads.md, Writing a trace).")
    run = config.get("run") or {}
    if run:
        md.new_paragraph("Run settings, the same for both arms:")
        md.new_list([f"`{key}`: {json.dumps(value)}" for key, value in run.items()])


def engine_rows(env: dict[str, Any], conditions: dict[str, Any]) -> list[list[str]]:
    """Each arm's model, backend, server, model identity, and the sources of its token
    counts and decode times, side by side (the control arm has its own with
    reference_model)."""
    config = env.get("config") or {}
    models = [(config.get("reference_model") or config.get("model") or {}),
              config.get("model") or {}]
    backends = [env.get("reference_backend") or env.get("backend") or {},
                env.get("backend") or {}]
    sides = [conditions.get(arm) or {} for arm in ARMS]
    return [
        ["model", *(f"`{m.get('name', '?')}`" for m in models)],
        ["backend", *(_backend(m, b) for m, b in zip(models, backends, strict=True))],
        ["server", *(md_escape(redact_url(str(b["host"]))) if b.get("host") else "in process"
                     for b in backends)],
        ["model identity", *(_identity(b) for b in backends)],
        ["token counts from", *(_sources(c.get("token_count_source")) for c in sides)],
        ["decode times from", *(_sources(c.get("timing_source")) for c in sides)],
    ]


def _backend(model: dict[str, Any], backend: dict[str, Any]) -> str:
    server = backend.get("server") or backend.get("engine")
    version = backend.get("server_version") or backend.get("engine_version")
    text = str(model.get("backend") or "?")
    text += f" ({server})" if server else ""
    text += f" {version}" if version else ""
    return md_escape(text)


def _identity(backend: dict[str, Any]) -> str:
    """The weights as far as the backend can tell: GGUF hash, Ollama digest, served path."""
    served = backend.get("model") if isinstance(backend.get("model"), dict) else {}
    digest = backend.get("model_sha256") or served.get("digest")
    if digest:
        return f"sha256 {str(digest).removeprefix('sha256:')[:12]}"
    return md_escape(str(served.get("model_path") or served.get("id") or "not reported"))


def _sources(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{k} ({n})" for k, n in counts.items()) if counts else "not recorded"


def requested_options(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each arm's options as its profile sets them (the reference profile is the control)."""
    return {arm: dict((config.get(key) or {}).get("options") or {})
            for arm, key in zip(ARMS, ("reference", "profile"), strict=True)}


def option_notes(env: dict[str, Any]) -> dict[str, str]:
    """{option: why it may be ignored or cannot act}, as the backend found it (before the
    first call; for an Ollama server's GPU, after the calls)."""
    notes = (env.get("backend") or {}).get("option_notes") or {}
    return {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}


def confounded_changes(requested: dict[str, dict[str, Any]],
                       conditions: dict[str, dict[str, Any]]) -> list[str]:
    """Where what ran differs from what the profiles ask: an option the profiles set alike
    (or not at all) but that ran differently in the two arms (the server derived it from
    another option), and an option the profiles set differently that ran alike."""
    found = []
    for name in EFFECTIVE_OPTIONS:
        ran = [conditions.get(arm, {}).get(name) or [] for arm in ARMS]
        if not all(ran):
            continue
        asked = [requested[arm].get(name) for arm in ARMS]
        ran_text = f"control ran {_values(ran[0])}, treatment {_values(ran[1])}"
        if asked[0] == asked[1] and ran[0] != ran[1]:
            found.append(f"Confounded change: the profiles do not change `{name}`, but it "
                         f"differs between the arms ({ran_text}): the server chose it from "
                         "another option. The comparison measures both changes together.")
        elif asked[0] != asked[1] and ran[0] == ran[1]:
            found.append(f"`{name}` was asked to change ({_shown(asked[0])} -> "
                         f"{_shown(asked[1])}) but both arms ran with {_values(ran[0])}: this "
                         f"comparison cannot show an effect of `{name}`.")
    return found


def _option_name(name: str, notes: dict[str, str]) -> str:
    return f"`{name}`" + (" †" if name in notes else "")


def _requested(options: dict[str, Any], name: str) -> str:
    return json.dumps(options[name]) if name in options else "backend default"


def _effective(arm: dict[str, Any], name: str) -> str:
    values = arm.get(name) or []
    text = _values(values) if values else "unknown"
    if name == "num_batch":
        bases = [BASIS_WORDS.get(b, b) for b in arm.get("num_batch_basis") or []]
        text += f" ({', '.join(bases)})" if bases else ""
    return text


def _known(conditions: dict[str, dict[str, Any]], name: str) -> bool:
    return any((conditions.get(arm) or {}).get(name) for arm in ARMS)


def _values(values: list[Any]) -> str:
    """One value, or several when it changed during the run."""
    return " / ".join(map(str, values))


def _shown(value: Any) -> str:
    return "backend default" if value is None else json.dumps(value)
