"""`ollabench history`: every commit and DVC experiment on one time line, with the points
where a metric changed level found and explained.

`timeline` lists the revisions and reads each one's per-run values and provenance through
DVC's API (as `compare` does); `series` groups them into series that compare like with like
(one host, backend and model each, unless hosts are merged); `changepoints` finds the change
points (ruptures' PELT, then a significance test on per-run data and the practical
threshold); `output` writes the CSVs, figures and Markdown; `build` ties them together.
docs/experiments.md shows the command, docs/statistics.md the method.

This package file imports nothing, so that `changepoints` can be used on numbers alone
without loading DVC, pandas' frames or matplotlib: import from the modules.
"""
