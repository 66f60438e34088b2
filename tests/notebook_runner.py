"""Run a notebook's code cells as Jupyter does; print each cell's Out[n] and the arrays it made, as JSON.

    python notebook_runner.py NOTEBOOK.py [fastgpt]

NOTEBOOK.py holds the cells, each starting with a ``# In[n]:`` line. With ``fastgpt``,
``from transformers import`` becomes ``from fastgpt.compat.transformers import`` and
nothing else changes. Python's ``random`` and torch are seeded first, so that sampling cells
draw the same numbers in both runs. Run in a subprocess, so that each run imports what the
notebook imports and reads the Hugging Face cache the environment names.
"""

import ast
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
    outputs = {}
    for n, code in cells(source):
        tree = ast.parse(code)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, f"<In[{n}]>", "exec"), namespace)
        if last is not None:
            outputs[n] = plain(eval(compile(ast.Expression(last.value), f"<In[{n}]>", "eval"), namespace))
    variables = {k: plain(v) for k, v in namespace.items() if hasattr(v, "tolist") or isinstance(v, list)}
    return {"out": outputs, "vars": variables}


if __name__ == "__main__":
    text = open(sys.argv[1], encoding="utf-8").read()
    if sys.argv[2:] == ["fastgpt"]:
        text = text.replace("from transformers import", "from fastgpt.compat.transformers import")
    print(json.dumps(run(text)))
