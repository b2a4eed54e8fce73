"""The expression language of edge conditions, transforms and loop conditions (SPEC §5).

Layer: the lowest; imports nothing of flowcraft_celery. `tokens` → `syntax` (the parser) →
`evaluator` (compile and evaluate over JSON data, never Python `eval`); `values` holds the
JavaScript value semantics the evaluator uses.
"""
