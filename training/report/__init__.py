"""The paper report (`aimc report`): the paper's four claims measured on real data with the shipped models.

One module per claim (`robustness`, `tile_mapping`, `uncertainty`, `pipelining`) computes its numbers;
`jobs` holds the slow measurements, kept in `OUT/measurements/` as they finish so that an interrupted
run, or a later session, resumes where it stopped and every table can be recomputed from them;
`figures` and `markdown` present the numbers; `build.write_report` puts it together. The slow
measurements run through `engine.executor` (a local Dask cluster by default, or an existing one), one
unit per model, settings and programming. Models that are not shipped yet
are reported as missing, never invented.
"""
