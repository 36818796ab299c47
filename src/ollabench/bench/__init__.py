"""The measurement loop: schedule, run control, stopping rule, host readings, provenance.

`loop.run_bench` is the bench stage. The modules beside it are its parts: `schedule` (arm
order and warm-ups), `run_control` (retries, journal, resume), `stopping` (when a sequential
experiment ends), `host` (what else the machine was doing), `loads` (the one model-load
rule), `provenance` (host, packages, git state). Nothing is imported here, so a stage that
needs only `stopping` or `loads` (aggregate, report) does not load the loop or a backend.
"""
