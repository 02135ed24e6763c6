"""Safety in federated instruction tuning: malicious clients with automatically generated
attack data (`safety:` in a run config, any engine), robust reducers (`fedloom.reducers`),
and the post-hoc defense — measured end to end by the `safety` pipeline
(``fedloom pipeline configs/safety.yaml``; docs/safety.md)."""

from fedloom.safety import stages  # noqa: F401  (registers the `safety` pipeline)
