"""Random valid blueprints with their expected trace, for differential testing (hypothesis).

A case is generated as a *structured program*: fragments with one entry node and one exit node
(task, sequence, fan-out with an `all`/`any` join, branch on actions or context conditions, loop
with one or two back edges and an optional side exit, wait, fallback chain, subflow), nested.
Each fragment is emitted as nodes and edges, and simulated by a small sequential oracle that
knows nothing of the engine: it follows SPEC §3 (edge choice §3.2, joins §3.5, loops §3.8,
failure and fallback §3.9) over the fragment tree, and predicts the run's status and, per
node, how many executions it has and how many attempts each one takes.

Every node that does work is `uses: "diff-behave"`, whose params carry a SPEC §10 behaviour
(`b`) and the case name (`case`), so workers need no per-case registration: the behaviour
travels with the blueprint.

Rules that keep a case deterministic (so two runners must agree exactly):
- context keys read by conditions (flags `f<k>`, loop counters `c_<loop>`) are written only on
  the *spine*: never inside a fan-out branch or a branch arm, which may run concurrently;
- fan-outs and branches joined with `any` hold plain tasks only (their late branches keep
  running after the join fired);
- a run may fail (a node with no fallback left) only in cases drawn with `fatal` allowed,
  which have no `any` join, and only on the spine, where nothing else is in flight;
- waits only on the spine, so at most one node awaits at a time (resume without a node id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import strategies as st

BEHAVE = "diff-behave"
Outcome = Literal["ok", "dead", "failed"]


# -- fragments ---------------------------------------------------------------------------------


@dataclass
class Task:
    """A `diff-behave` node: sets a key, increments a counter, or returns a constant (optionally with an action),
    after `fail` failing attempts (-1: every attempt fails) out of `retries` allowed."""

    id: str
    write: tuple[str, Any] | None = None
    action: str | None = None
    incr: str | None = None
    fail: int = 0
    retries: int = 1
    fallback: str | None = None

    def behaviour(self) -> dict[str, Any]:
        """The SPEC §10 behaviour spec of this node."""
        core: dict[str, Any]
        if self.write is not None:
            core = {"kind": "set", "key": self.write[0], "value": self.write[1]}
        elif self.incr is not None:
            core = {"kind": "incr", "key": self.incr}
        else:
            core = {"kind": "const", "output": self.id}
            if self.action is not None:
                core["action"] = self.action
        if self.fail:
            return {"kind": "fail", "times": self.fail, "then": core}
        return core

    def node(self, case: str) -> dict[str, Any]:
        """The node definition."""
        out: dict[str, Any] = {"id": self.id, "uses": BEHAVE, "params": {"case": case, "b": self.behaviour()}}
        config: dict[str, Any] = {}
        if self.retries != 1:
            config["maxRetries"] = self.retries
        if self.fallback:
            config["fallback"] = self.fallback
        if config:
            out["config"] = config
        return out

    @property
    def attempts(self) -> int:
        """Attempts of one execution."""
        return self.retries if self.fail == -1 or self.fail >= self.retries else self.fail + 1

    @property
    def fails(self) -> bool:
        """Whether every attempt fails."""
        return self.fail == -1 or self.fail >= self.retries


@dataclass
class Seq:
    parts: list[Frag]


@dataclass
class Fork:
    """Fan-out: `fork` → each branch → `join` (joinStrategy `strategy`)."""

    fork: Task
    branches: list[Frag]
    join: Task
    strategy: str


@dataclass
class Arm:
    """One edge out of a branch's decider: its gate, and the fragment it leads to (None: straight to the merge)."""

    body: Frag | None
    action: str | None = None
    condition: str | None = None


@dataclass
class Branch:
    """`decider` → arms (gated by action or condition) → `merge` (joinStrategy `strategy`)."""

    decider: Task
    arms: list[Arm]
    merge: Task
    strategy: str


@dataclass
class Loop:
    """`reset` (counter := 0) → `ctl` (loop-controller `counter < passes`) -continue→ body (first
    node increments the counter) → back edge(s) → `ctl`; `ctl` -break→ `merge`. With two back
    edges the body's exit goes back through `tails[0]` on odd counts, `tails[1]` on even ones;
    with a side exit it leaves to `exit_task` → `merge` when the counter equals `exit_at`."""

    reset: Task
    ctl: str
    counter: str
    passes: int
    body: Seq
    tails: list[Task]
    merge: Task
    strategy: str
    exit_at: int | None = None
    exit_task: Task | None = None


@dataclass
class Wait:
    id: str


@dataclass
class Chain:
    """A task with a fallback chain: `tasks[0]` with fallback `tasks[1]`, which falls back to `tasks[2]`..."""

    tasks: list[Task]


@dataclass
class Subflow:
    """A `subflow` node running child blueprint `child_id` (a sequence of tasks)."""

    id: str
    child_id: str
    child: list[Task]
    retries: int = 1
    fallback: Task | None = None


Frag = Task | Seq | Fork | Branch | Loop | Wait | Chain | Subflow


# -- emission ----------------------------------------------------------------------------------


@dataclass
class Emitter:
    """Collects nodes and edges of one blueprint (and child blueprints of its subflows)."""

    case: str
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    children: dict[str, dict[str, Any]] = field(default_factory=dict)

    def edge(self, source: str, target: str, action: str | None = None, condition: str | None = None) -> None:
        edge: dict[str, Any] = {"source": source, "target": target}
        if action is not None:
            edge["action"] = action
        if condition is not None:
            edge["condition"] = condition
        self.edges.append(edge)

    def task(self, task: Task, strategy: str | None = None) -> str:
        node = task.node(self.case)
        if strategy is not None:
            node.setdefault("config", {})["joinStrategy"] = strategy
        self.nodes.append(node)
        return task.id

    def emit(self, frag: Frag) -> tuple[str, str]:
        """Emit a fragment; returns its (entry, exit) node ids."""
        if isinstance(frag, Task):
            node_id = self.task(frag)
            return node_id, node_id
        if isinstance(frag, Seq):
            first, last = self.emit(frag.parts[0])
            for part in frag.parts[1:]:
                entry, exit_ = self.emit(part)
                self.edge(last, entry)
                last = exit_
            return first, last
        if isinstance(frag, Fork):
            self.task(frag.fork)
            self.task(frag.join, frag.strategy)
            for branch in frag.branches:
                entry, exit_ = self.emit(branch)
                self.edge(frag.fork.id, entry)
                self.edge(exit_, frag.join.id)
            return frag.fork.id, frag.join.id
        if isinstance(frag, Branch):
            self.task(frag.decider)
            self.task(frag.merge, frag.strategy)
            for arm in frag.arms:
                if arm.body is None:
                    self.edge(frag.decider.id, frag.merge.id, arm.action, arm.condition)
                else:
                    entry, exit_ = self.emit(arm.body)
                    self.edge(frag.decider.id, entry, arm.action, arm.condition)
                    self.edge(exit_, frag.merge.id)
            return frag.decider.id, frag.merge.id
        if isinstance(frag, Loop):
            self.task(frag.reset)
            self.nodes.append({"id": frag.ctl, "uses": "loop-controller",
                               "params": {"condition": f"{frag.counter} < {frag.passes}"},
                               "config": {"joinStrategy": "any"}})
            self.edge(frag.reset.id, frag.ctl)
            entry, exit_ = self.emit(frag.body)
            self.edge(frag.ctl, entry, action="continue")
            stay = None if frag.exit_at is None else f"{frag.counter} !== {frag.exit_at}"
            if len(frag.tails) == 1:
                self.task(frag.tails[0])
                self.edge(exit_, frag.tails[0].id, condition=stay)
                self.edge(frag.tails[0].id, frag.ctl)
            else:
                for tail, parity in zip(frag.tails, (1, 0), strict=True):
                    self.task(tail)
                    cond = f"{frag.counter} % 2 === {parity}"
                    self.edge(exit_, tail.id, condition=cond if stay is None else f"{cond} && {stay}")
                    self.edge(tail.id, frag.ctl)
            self.task(frag.merge, frag.strategy)
            self.edge(frag.ctl, frag.merge.id, action="break")
            if frag.exit_task is not None:
                self.task(frag.exit_task)
                self.edge(exit_, frag.exit_task.id, condition=f"{frag.counter} === {frag.exit_at}")
                self.edge(frag.exit_task.id, frag.merge.id)
            return frag.reset.id, frag.merge.id
        if isinstance(frag, Wait):
            self.nodes.append({"id": frag.id, "uses": "wait"})
            return frag.id, frag.id
        if isinstance(frag, Chain):
            for task in frag.tasks:
                self.task(task)
            return frag.tasks[0].id, frag.tasks[0].id
        if isinstance(frag, Subflow):
            node: dict[str, Any] = {"id": frag.id, "uses": "subflow", "params": {"blueprintId": frag.child_id}}
            config: dict[str, Any] = {}
            if frag.retries != 1:
                config["maxRetries"] = frag.retries
            if frag.fallback is not None:
                config["fallback"] = frag.fallback.id
                self.task(frag.fallback)
            if config:
                node["config"] = config
            self.nodes.append(node)
            child = Emitter(self.case)
            child.emit(Seq(list(frag.child)))
            self.children[frag.child_id] = {"id": frag.child_id, "nodes": child.nodes, "edges": child.edges}
            return frag.id, frag.id
        raise TypeError(frag)


# -- the oracle --------------------------------------------------------------------------------


@dataclass
class Oracle:
    """Runs a fragment tree sequentially, as SPEC §3 says the engine must (§3.2 edge choice
    against the context at the decider's completion, §3.5 dead-path elimination, §3.8 loops,
    §3.9 retries and fallbacks), recording per `blueprint/node` the attempts of each execution."""

    blueprint: str
    env: dict[str, Any] = field(default_factory=dict)
    executions: dict[str, list[int]] = field(default_factory=dict)
    waits: int = 0

    def ran(self, node_id: str, attempts: int, blueprint: str | None = None) -> None:
        self.executions.setdefault(f"{blueprint or self.blueprint}/{node_id}", []).append(attempts)

    def task(self, task: Task) -> Outcome:
        self.ran(task.id, task.attempts)
        if task.fails:
            return "failed"
        if task.write is not None:
            self.env[task.write[0]] = task.write[1]
        if task.incr is not None:
            self.env[task.incr] = (self.env.get(task.incr) or 0) + 1
        return "ok"

    def run(self, frag: Frag) -> Outcome:
        if isinstance(frag, Task):
            return self.task(frag)
        if isinstance(frag, Seq):
            for part in frag.parts:
                outcome = self.run(part)
                if outcome != "ok":
                    return outcome
            return "ok"
        if isinstance(frag, Fork):
            if (outcome := self.task(frag.fork)) != "ok":
                return outcome
            results = [self.run(b) for b in frag.branches]
            if "failed" in results:
                return "failed"
            return self.task(frag.join) if "ok" in results else "dead"
        if isinstance(frag, Branch):
            if (outcome := self.task(frag.decider)) != "ok":
                return outcome
            taken = [a for a in frag.arms if frag.decider.action is not None and a.action == frag.decider.action
                     and self.holds(a.condition)]
            if not taken:
                taken = [a for a in frag.arms if a.action is None and self.holds(a.condition)]
            results = [self.run(a.body) if a.body is not None else "ok" for a in taken]
            if "failed" in results:
                return "failed"
            return self.task(frag.merge) if "ok" in results else "dead"
        if isinstance(frag, Loop):
            return self.loop(frag)
        if isinstance(frag, Wait):
            self.waits += 1
            return "ok"
        if isinstance(frag, Chain):
            for task in frag.tasks:
                if self.task(task) == "ok":
                    return "ok"
            return "failed"
        if isinstance(frag, Subflow):
            for _ in range(frag.retries):
                if self.child(frag) == "ok":
                    return "ok"
            return self.task(frag.fallback) if frag.fallback is not None else "failed"
        raise TypeError(frag)

    def loop(self, frag: Loop) -> Outcome:
        if (outcome := self.task(frag.reset)) != "ok":
            return outcome
        while self.env[frag.counter] < frag.passes:
            outcome = self.run(frag.body)
            if outcome != "ok":
                return outcome  # dead: no back edge arrives and no exit is taken, the loop is left
            count = self.env[frag.counter]
            if frag.exit_at is not None and count == frag.exit_at:
                assert frag.exit_task is not None
                if (outcome := self.task(frag.exit_task)) != "ok":
                    return outcome
                return self.task(frag.merge)
            tail = frag.tails[0] if len(frag.tails) == 1 or count % 2 == 1 else frag.tails[1]
            if (outcome := self.task(tail)) != "ok":
                return outcome
        return self.task(frag.merge)

    def child(self, frag: Subflow) -> Outcome:
        for task in frag.child:
            self.ran(task.id, task.attempts, frag.child_id)
            if task.fails:
                return "failed"
        return "ok"

    def holds(self, condition: str | None) -> bool:
        """A generated condition against the current context (the forms `gen_condition` makes)."""
        if condition is None:
            return True
        key, op, value = condition.split(" ")
        current = self.env.get(key)
        expected = json.loads(value)
        if op == "===":
            return bool(current == expected and type(current) is type(expected))
        if op == "!==":
            return not (current == expected and type(current) is type(expected))
        if op == ">=":
            return isinstance(current, int) and current >= expected
        raise ValueError(condition)


# -- the case ----------------------------------------------------------------------------------


@dataclass
class Case:
    """A generated case: its blueprints (the first is started) and what the oracle expects."""

    name: str
    blueprints: dict[str, dict[str, Any]]
    start: str
    status: str
    executions: dict[str, list[int]]
    waits: int
    features: list[str]
    volatile: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "blueprints": self.blueprints,
                "expect": {"status": self.status, "executions": self.executions, "waits": self.waits},
                "features": self.features, "volatile": self.volatile}

    def renamed(self, name: str) -> Case:
        """The same case under another name (blueprint ids, child ids and trace keys follow)."""
        old = self.name

        def rename(text: str) -> str:
            return name + text[len(old):] if text == old or text.startswith(old + "-") else text

        blueprints: dict[str, dict[str, Any]] = {}
        for blueprint_id, document in self.blueprints.items():
            copy = json.loads(json.dumps(document))
            copy["id"] = rename(copy["id"])
            for node in copy["nodes"]:
                params = node.get("params") or {}
                if "case" in params:
                    params["case"] = name
                if node["uses"] == "subflow":
                    params["blueprintId"] = rename(params["blueprintId"])
            blueprints[rename(blueprint_id)] = copy
        executions = {rename(k.split("/")[0]) + "/" + k.split("/", 1)[1]: list(v) for k, v in self.executions.items()}
        return Case(name, blueprints, rename(self.start), self.status, executions, self.waits, list(self.features),
                    list(self.volatile))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        expect = data["expect"]
        return cls(data["name"], data["blueprints"], data["start"], expect["status"], expect["executions"],
                   expect["waits"], list(data.get("features") or []), list(data.get("volatile") or []))


def build_case(name: str, program: Seq, features: set[str]) -> Case:
    """Emit and simulate a program into a case."""
    emitter = Emitter(name)
    emitter.emit(program)
    oracle = Oracle(name)
    outcome = oracle.run(program)
    status = "failed" if outcome == "failed" else "completed"
    blueprints = {name: {"id": name, "nodes": emitter.nodes, "edges": emitter.edges}, **emitter.children}
    volatile = [f"_inputs.{n['id']}" for n in emitter.nodes
                if (n.get("config") or {}).get("joinStrategy") == "any" and n["uses"] != "loop-controller"]
    return Case(name, blueprints, name, status, oracle.executions, oracle.waits, sorted(features), volatile)


# -- the strategy ------------------------------------------------------------------------------


class Gen:
    """The drawing state of one case: node ids, budget, keys, features."""

    def __init__(self, draw: st.DrawFn, name: str, budget: int, fatal: bool) -> None:
        self.draw = draw
        self.name = name
        self.budget = budget
        self.fatal = fatal
        self.count = 0
        self.flags = [f"f{i}" for i in range(draw(st.integers(1, 3)))]
        self.counters: list[str] = []
        self.features: set[str] = set()

    def new_id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def spend(self, n: int = 1) -> None:
        self.budget -= n

    def retry_profile(self) -> tuple[int, int]:
        """(fail, retries) for a task that succeeds, sometimes after failed attempts."""
        if self.draw(st.integers(0, 4)) == 0:
            retries = self.draw(st.integers(2, 3))
            fail = self.draw(st.integers(1, retries - 1))
            self.features.add("retries")
            return fail, retries
        return 0, 1

    def task(self, prefix: str = "t", write: tuple[str, Any] | None = None, action: str | None = None,
             spend: bool = True) -> Task:
        if spend:
            self.spend()
        fail, retries = self.retry_profile()
        return Task(self.new_id(prefix), write=write, action=action, fail=fail, retries=retries)

    def condition(self, counters: list[str]) -> str:
        """`key op value` over a flag or an enclosing loop's counter (the forms Oracle.holds reads)."""
        if counters and self.draw(st.booleans()):
            key = self.draw(st.sampled_from(counters))
            op = self.draw(st.sampled_from(["===", "!==", ">="]))
            return f"{key} {op} {self.draw(st.integers(1, 3))}"
        key = self.draw(st.sampled_from(self.flags))
        return f"{key} {self.draw(st.sampled_from(['===', '!==']))} true"

    # fragments

    def seq(self, spine: bool, counters: list[str], depth: int, plain: bool = False, size: int | None = None) -> Seq:
        parts: list[Frag] = []
        for _ in range(size if size is not None else self.draw(st.integers(1, 3))):
            if self.budget <= 0 and parts:
                break
            parts.append(self.frag(spine, counters, depth, plain))
        return Seq(parts)

    def frag(self, spine: bool, counters: list[str], depth: int, plain: bool) -> Frag:
        kinds = ["task"]
        if not plain and self.budget > 0:
            if spine:
                kinds += ["write", "write", "wait"]
                if self.fatal:
                    kinds += ["fail"]
            if depth < 3:
                kinds += ["fork", "branch", "branch", "loop", "loop"]
                if counters:
                    kinds += ["loop", "fork"]  # nested loops, joins in loops
            kinds += ["chain", "subflow"]
        kind = self.draw(st.sampled_from(kinds))
        if kind == "task":
            return self.task()
        if kind == "write":
            self.features.add("flag-write")
            key = self.draw(st.sampled_from(self.flags))
            return self.task("w", write=(key, self.draw(st.booleans())))
        if kind == "wait":
            self.features.add("wait" + ("-in-loop" if counters else ""))
            self.spend()
            return Wait(self.new_id("wait"))
        if kind == "fail":
            self.features.add("fatal-failure")
            task = self.task("x")
            task.fail, task.retries = -1, self.draw(st.integers(1, 2))
            return task
        if kind == "fork":
            return self.fork(spine, counters, depth)
        if kind == "branch":
            return self.branch(counters, depth)
        if kind == "loop":
            return self.loop(spine, counters, depth)
        if kind == "chain":
            return self.chain(spine)
        return self.subflow(spine)

    def strategy(self) -> str:
        return "all" if self.fatal else self.draw(st.sampled_from(["all", "any"]))

    def fork(self, spine: bool, counters: list[str], depth: int) -> Fork:
        strategy = self.strategy()
        self.features.add(f"fork-{strategy}" + ("-in-loop" if counters else ""))
        fork = self.task("fo")
        branches = [self.seq(False, counters, depth + 1, plain=strategy == "any", size=self.draw(st.integers(1, 2)))
                    for _ in range(self.draw(st.integers(2, 3)))]
        return Fork(fork, branches, self.task("j"), strategy)

    def branch(self, counters: list[str], depth: int) -> Branch:
        strategy = self.strategy()
        by_action = self.draw(st.booleans())
        self.features.add(f"branch-{'action' if by_action else 'condition'}-{strategy}"
                          + ("-in-loop" if counters else ""))
        action = self.draw(st.sampled_from(["a", "b", "zz", None])) if by_action else None
        decider = self.task("d", action=action)
        arms: list[Arm] = []
        direct = False
        for index in range(self.draw(st.integers(2, 3))):
            body: Frag | None = None
            if direct or self.draw(st.integers(0, 3)) > 0:
                body = self.seq(False, counters, depth + 1, plain=strategy == "any", size=1)
            else:
                direct = True
            if by_action and index < 2:
                arms.append(Arm(body, action="ab"[index]))
            else:
                gated = self.draw(st.booleans())
                arms.append(Arm(body, condition=self.condition(counters) if gated else None))
        return Branch(decider, arms, self.task("m"), strategy)

    def loop(self, spine: bool, counters: list[str], depth: int) -> Loop:
        self.spend()
        ctl = self.new_id("ctl")
        counter = f"c_{ctl}"
        passes = self.draw(st.integers(0, 3))
        back = self.draw(st.integers(1, 2))
        nested = len(counters) + 1
        self.features.add(f"loop-depth{nested}" + ("-2back" if back == 2 else ""))
        reset = self.task("r", write=(counter, 0), spend=False)  # the loop's own nodes cost 2 of the budget
        reset.fail, reset.retries = 0, 1
        bump = Task(self.new_id("inc"), incr=counter)
        inner = [*counters, counter]
        rest = self.seq(spine, inner, depth + 1, size=self.draw(st.sampled_from([1, 2, 0, 1])))
        body = Seq([bump, *rest.parts])
        tails = [self.task("bk", spend=False) for _ in range(back)]
        exit_at: int | None = None
        exit_task: Task | None = None
        if self.draw(st.integers(0, 2)) == 0:
            exit_at = self.draw(st.integers(1, 3))
            exit_task = self.task("sx")
            self.features.add("side-exit")
        merge = self.task("lm", spend=False)
        self.counters.append(counter)
        return Loop(reset, ctl, counter, passes, body, tails, merge,
                    self.strategy() if exit_task is not None else "all", exit_at, exit_task)

    def chain(self, spine: bool) -> Chain:
        length = self.draw(st.integers(1, 3))
        tasks = [self.task("fb") for _ in range(length)]
        may_fail = spine and self.fatal
        for index, task in enumerate(tasks):
            last = index == len(tasks) - 1
            if not last or (may_fail and self.draw(st.booleans())):
                task.fail, task.retries = -1, self.draw(st.integers(1, 2))
            if not last:
                task.fallback = tasks[index + 1].id
        if length == 1 and not tasks[0].fails:
            tasks.append(self.task("fb"))  # a fallback that is not needed
            tasks[0].fallback = tasks[1].id
        self.features.add(f"fallback-chain-{len(tasks)}" + ("-fails" if tasks[-1].fails else ""))
        return Chain(tasks)

    def subflow(self, spine: bool) -> Subflow:
        self.spend()
        node_id = self.new_id("sub")
        child = [self.task("ch") for _ in range(self.draw(st.integers(1, 2)))]
        fails = self.draw(st.booleans())
        if fails:
            child[-1].fail, child[-1].retries = -1, self.draw(st.integers(1, 2))
        retries = self.draw(st.integers(1, 2))
        fallback = self.task("sfb") if fails and not (spine and self.fatal and self.draw(st.booleans())) else None
        self.features.add("subflow-" + ("fails" + ("-fallback" if fallback else "") if fails else "ok")
                          + ("-retried" if retries > 1 else ""))
        return Subflow(node_id, f"{self.name}-{node_id}", child, retries, fallback)


@st.composite
def cases(draw: st.DrawFn, name: str = "diff") -> Case:
    """One random case (≤ ~12 working nodes, loops ≤ 3 passes)."""
    gen = Gen(draw, name, draw(st.integers(3, 12)), fatal=draw(st.integers(0, 3)) == 0)
    program = gen.seq(True, [], 0, size=draw(st.integers(1, 4)))
    return build_case(name, program, gen.features)


def sample_cases(count: int, seed: int, prefix: str = "d") -> list[Case]:
    """`count` distinct cases drawn by hypothesis from `seed` (the same seed gives the same cases),
    named `<prefix><seed>-<index>`. Hypothesis draws a pool (small cases first, then larger); the
    batch takes, greedily, the case that adds the most features not yet covered (ties: the first
    drawn), so even a small batch covers every feature the pool has. No shrinking happens here: a
    failing case is written out whole for replay."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    pool: list[Case] = []
    seen: set[str] = set()

    @settings(max_examples=max(count * 5, 500), database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @with_seed(seed)
    @given(cases())
    def collect(case: Case) -> None:
        key = json.dumps(case.blueprints, sort_keys=True)
        if key not in seen:
            seen.add(key)
            pool.append(case)

    collect()
    chosen: list[Case] = []
    covered: set[str] = set()
    while pool and len(chosen) < count:
        best = max(pool, key=lambda c: len(set(c.features) - covered))  # ties: the first drawn
        pool.remove(best)
        chosen.append(best)
        covered |= set(best.features)
    return [case.renamed(f"{prefix}{seed}-{index}") for index, case in enumerate(chosen)]
