"""Prepare a scratch copy of a module for mutmut: mutmut 3 does not mutate decorated functions, and
`@torch.no_grad()` decorates several core functions (keys_and_outputs, compute_second_moments, corpus_keys,
context_templates). For each module-level function whose only decorator is `@torch.no_grad()`, this removes the
decorator line and re-applies it after the module's last line (`name = torch.no_grad()(name)`), which is the same
function at run time. Only ever run on the copy that quality/mutation.sh makes, never on the repository.

usage: python quality/undecorate.py FILE.py [FILE.py ...]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

DECORATOR = "torch.no_grad()"


def undecorate(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    names, drop = [], []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and len(node.decorator_list) == 1:
            deco = node.decorator_list[0]
            if ast.unparse(deco) == DECORATOR and deco.lineno == deco.end_lineno:
                names.append(node.name)
                drop.append(deco.lineno - 1)
    if not names:
        return []
    for i in sorted(drop, reverse=True):
        assert lines[i].strip() == "@" + DECORATOR, (path, lines[i])
        del lines[i]
    text = "".join(lines).rstrip("\n") + "\n\n\n# re-applied by quality/undecorate.py (mutmut skips decorated functions)\n"
    text += "".join(f"{n} = torch.no_grad()({n})\n" for n in names)
    ast.parse(text)
    path.write_text(text)
    return names


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        done = undecorate(Path(arg))
        print(f"{arg}: {', '.join(done) if done else 'nothing to undecorate'}")
