"""Small hand-built cases, one per behaviour the differential test found wrong (or worth pinning).

Built with the generator's fragments, so the oracle computes their expectation like for any
generated case. `python -m tests.differential.examples FILE` writes them as a failures file that
`make differential REPLAY=FILE` (FLOWCRAFT_DIFF_REPLAY) runs on both runners.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.differential.generator import (
    Arm,
    Branch,
    Case,
    Chain,
    Fork,
    Frag,
    Loop,
    Seq,
    Subflow,
    Task,
    build_case,
)


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def loop(ids: _Ids, passes: int, body: list[Frag], back: int = 1, exit_at: int | None = None,
         strategy: str = "all") -> Loop:
    """A loop-controller loop of `passes` passes (see generator.Loop)."""
    n = ids.next()
    ctl = f"ctl{n}"
    counter = f"c_{ctl}"
    tails = [Task(f"bk{n}a")] if back == 1 else [Task(f"bk{n}a"), Task(f"bk{n}b")]
    return Loop(Task(f"r{n}", write=(counter, 0)), ctl, counter, passes, Seq([Task(f"inc{n}", incr=counter), *body]),
                tails, Task(f"lm{n}"), strategy, exit_at, Task(f"sx{n}") if exit_at is not None else None)


def fail(task_id: str, retries: int = 1, fallback: str | None = None) -> Task:
    """A task whose every attempt fails."""
    return Task(task_id, fail=-1, retries=retries, fallback=fallback)


def minimal_cases() -> list[Case]:
    """The cases, named `min-<what>`."""
    ids = _Ids()
    made: dict[str, list[Frag]] = {
        # SPEC §3.2 decided once: pass 0 skips bk1b (`c % 2 === 0` false), pass 1 takes it.
        "two-back-edges": [loop(ids, 2, [], back=2)],
        # the side exit's condition is false in pass 0, true in pass 1.
        "side-exit": [loop(ids, 2, [], exit_at=2)],
        # an edge skipped because f0 was not set, then a later node sets f0.
        "flag-set-later": [Branch(Task("d"), [Arm(Task("x"), condition="f0 === true"),
                                              Arm(Task("y"), condition="f0 !== true")], Task("m"), "all"),
                           Task("w", write=("f0", True)), Task("after")],
        # A falls back to B, B to C; C succeeds and drives A's edges (SPEC §3.9).
        "fallback-chain-3": [Chain([fail("fa", fallback="fb"), fail("fb", fallback="fc"), Task("fc")]),
                             Task("after")],
        "fallback-chain-3-in-fork": [Fork(Task("fo"), [Chain([fail("ga", fallback="gb"), fail("gb", fallback="gc"),
                                                             Task("gc")]), Task("side")], Task("j"), "all")],
        # a subflow whose child fails: its fallback runs in its place (SPEC §3.9).
        "subflow-fallback": [Subflow("sub", "CASE-sub", [fail("ch")], 1, Task("sfb")), Task("after")],
        # maxRetries 2 on a subflow: two child runs, then the fallback.
        "subflow-retries": [Subflow("sub", "CASE-sub", [fail("ch")], 2, Task("sfb")), Task("after")],
        # nested loops, both with a side exit configured; the outer one is left by its side exit.
        "nested-side-exits": [loop(ids, 1, [loop(ids, 0, [], exit_at=1)], exit_at=1)],
        # a loop whose side exit is never taken, its merge an `any` join, then an `all` join that
        # fails its first attempt: the join must run once (2 attempts), not fire twice.
        "join-after-unused-side-exit": [Fork(Task("e"), [Task("ea"), loop(ids, 1, [], exit_at=2, strategy="any")],
                                             Task("ej", fail=1, retries=2), "all")],
        # nested loops with an all-join in the inner body, two outer passes.
        "nested-join-2nd-outer-pass": [loop(ids, 2, [loop(ids, 1, [Fork(Task("nf"), [Task("na"), Task("nb")],
                                                                        Task("nj"), "all")])])],
        # three deep, joins inside.
        "nested-3-deep": [loop(ids, 2, [loop(ids, 2, [loop(ids, 1, [Fork(Task("tf"), [Task("ta"), Task("tb")],
                                                                             Task("tj"), "all")])])])],
    }
    cases = []
    for what, parts in made.items():
        name = f"min-{what}"
        program = Seq(parts)
        for frag in parts:
            if isinstance(frag, Subflow):
                frag.child_id = f"{name}-sub"
        cases.append(build_case(name, program, {what}))
    return cases


def failures_document(cases: list[Case]) -> dict[str, Any]:
    """The cases in the failures-file form FLOWCRAFT_DIFF_REPLAY reads."""
    return {"seed": None, "examples": len(cases), "failures": [{"case": c.to_json()} for c in cases]}


if __name__ == "__main__":
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(failures_document(minimal_cases()), out, indent=1)
