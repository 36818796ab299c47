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
    run = config.get("run") or {}
    if run:
        md.new_paragraph("Run settings, the same for both arms:")
        md.new_list([f"`{key}`: {json.dumps(value)}" for key, value in run.items()])


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
