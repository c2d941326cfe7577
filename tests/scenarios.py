"""The reliability scenarios: one home for their ids and titles.

A test proves a scenario by carrying `@pytest.mark.scenario("<id>")`; `make reliability` runs every such test and
writes the table of results into the README (tools/reliability_report.py). `tests/unit/test_scenarios.py` fails when
a scenario has no test or a test names an unknown scenario.
"""

from __future__ import annotations

SCENARIOS: dict[str, str] = {
    "resume_sigkill": "Resume after SIGKILL at 3 random points, one mid-checkpoint-write: weights and losses equal",
    "full_disk": "Full disk during a checkpoint write: the previous checkpoint stays intact and resumable",
    "checkpoint_limit": "save_total_limit keeps the best checkpoint across resumes",
    "corrupt_checkpoint": "A truncated newest checkpoint: resume falls back to the one before, with a warning",
    "sigterm_training": "SIGTERM during training saves a checkpoint and prints the resume command",
    "no_pickle": "A malicious pickle in every load path: a canary proves no code ran",
    "remote_code": "trust_remote_code is never on unless the command line asks",
    "offline_default": "A typo in a local path is an error naming it, never a hub download",
    "concurrent_load": "200 concurrent requests with client timeouts, then a fresh request served within 5 s",
    "hostile_requests": "Malformed, huge and hostile requests get a 4xx in OpenAI's shape; the server stays alive",
    "sigterm_serving": "SIGTERM drains in-flight streams before the server exits",
    "api_key_routes": "The API key guards every route of the app (the test enumerates them)",
    "judge_key": "A judge API key goes only to an endpoint named on the command line or its own variable",
    "data_faults": "5% injected faults of every kind in data: every bad row named, counts add up",
    "nonfinite_stop": "A NaN/inf loss or gradient stops training with the step number",
    "accumulation": "Gradient accumulation equals one big batch",
    "determinism": "The same config twice with train.deterministic: losses equal bit for bit",
    "export_refusals": "export never deletes what it did not write: source, parents and non-exports refused",
    "merge_preserves": "Export/merge preserves the outputs of every mergeable adapter",
}
