"""Run a notebook's code cells as Jupyter does; print each cell's Out[n], what it printed and
the arrays it bound (per cell, and at the end), as JSON.

    python notebook_runner.py NOTEBOOK.py [fastgpt]

NOTEBOOK.py holds the cells, each starting with a ``# In[n]:`` line. Its imports name
``transformers`` (or ``pytorch_transformers``, the old package: read as transformers); with
``fastgpt`` they name ``fastgpt.compat.transformers`` and nothing else changes. A cell that
raises records ``{"error": ExceptionType}`` as its output and the next cell runs, as in
Jupyter with "run all" ignoring errors; printed lines are recorded per cell too. Python's
``random`` and torch are seeded first, so that sampling cells draw the same numbers in both
runs. Run in a subprocess, so that each run imports what the
notebook imports and reads the Hugging Face cache the environment names.
"""

import ast
import contextlib
import io
import json
import random
import re
import sys


def cells(source: str) -> list[tuple[int, str]]:
    parts = re.split(r"^# In\[(\d+)\]:\n", source, flags=re.M)
    return [(int(n), code) for n, code in zip(parts[1::2], parts[2::2])]


def plain(value):
    """Out[n] as JSON: arrays and tensors as lists, shapes as lists, the rest as is."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def run(source: str) -> dict:
    random.seed(0)
    import torch

    torch.manual_seed(0)
    namespace = {"__name__": "__main__"}
    outputs, printed, bound = {}, {}, {}
    for n, code in cells(source):
        before = {k: id(v) for k, v in namespace.items()}
        tree = ast.parse(code)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        stdout = io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout):
                exec(compile(tree, f"<In[{n}]>", "exec"), namespace)
                if last is not None:
                    outputs[n] = plain(eval(compile(ast.Expression(last.value), f"<In[{n}]>", "eval"), namespace))
        except Exception as e:
            outputs[n] = {"error": type(e).__name__}
        printed[n] = stdout.getvalue().splitlines()
        bound[n] = {k: plain(v) for k, v in namespace.items()
                    if before.get(k) != id(v) and (hasattr(v, "tolist") or isinstance(v, list))}
    variables = {k: plain(v) for k, v in namespace.items() if hasattr(v, "tolist") or isinstance(v, list)}
    return {"out": outputs, "printed": printed, "vars": variables, "bound": bound}


if __name__ == "__main__":
    text = open(sys.argv[1], encoding="utf-8").read()
    package = "fastgpt.compat.transformers" if sys.argv[2:] == ["fastgpt"] else "transformers"
    text = re.sub(r"^from (pytorch_)?transformers import", f"from {package} import", text, flags=re.M)
    print(json.dumps(run(text)))
