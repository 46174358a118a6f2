"""The longest functions of a source tree, for the style rule "no function over ~60 lines without a reason".

python scripts/longest_functions.py [ROOT=runner] [N=10]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def functions(root: Path):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield node.end_lineno - node.lineno + 1, f"{path.as_posix()}:{node.lineno}", node.name


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runner")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    for lines, where, name in sorted(functions(root), reverse=True)[:n]:
        print(f"{lines:5d}  {name:32s} {where}")
