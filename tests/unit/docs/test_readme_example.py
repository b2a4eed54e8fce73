"""The README's Python example runs as shown (in its own process, so its `@node("score")` does not
meet the guide's node of that name)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUNNER = '''
import json, sys
from flowcraft_celery import NodeContext, node
from flowcraft_celery.local.runner import LocalRunner

exec(sys.stdin.read())


@node("notify")
def notify(ctx: NodeContext) -> str:
    return f"notified {ctx.node_id}"


results = {}
for amount in (12, 3):
    result = LocalRunner().run(flow.build(), {"amount": amount})
    results[amount] = {"status": result.status, "context": result.context}
print(json.dumps(results))
'''


def readme_python() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M) if "@node(" in b]
    return block


def test_the_readme_flow_routes_by_the_action_its_node_returns() -> None:
    done = subprocess.run([sys.executable, "-c", RUNNER], input=readme_python(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    results = json.loads(done.stdout)
    for amount, taken, skipped in ((12, "big", "small"), (3, "small", "big")):
        result = results[str(amount)]
        assert result["status"] == "completed", result
        context = result["context"]
        assert context["score"] == amount * 2 and context["seen"] is True
        assert context[taken] == f"notified {taken}" and skipped not in context
