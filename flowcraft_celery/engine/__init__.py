"""The engine: the one place that decides what a workflow does, shared by both runners.

Layer: above `model`, `expressions` and `stores.base` (protocols only, never a concrete store).
`semantics` (pure decisions: successors, conditions, inputs, joins), `dispatch` (routing arrivals
and skips through a coordination store), `invoke` (one attempt of a node implementation),
`registry` (`@node`, class nodes, results), `builtins` (the built-in node types) and `context`
(what node code sees). A fix to workflow behaviour belongs here, never in a runner.
"""
