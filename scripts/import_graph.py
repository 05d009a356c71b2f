"""Import edges inside partnernet/, their cycles and the arrows that go against the layers.

Standard library only (``ast``); nothing is imported or run. Usage:

    python3 scripts/import_graph.py            # summary: cycles, upward arrows, lazy imports
    python3 scripts/import_graph.py --edges    # also every module-level edge

An import at the top of a module (also inside ``if``/``try`` there) is *module-level*; one
inside a function or method is *lazy* (it runs when the function does). ``if TYPE_CHECKING:``
imports are left out: they never run. Exit status 1 when a module-level cycle exists.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "partnernet"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / PKG).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: set[str]):
    """Yield (target module, lazy?) for each import of a partnernet module in ``path``."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]

    def resolve(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        mod = node.module or ""
        if node.level:
            anchor = base[: len(base) - (node.level - 1)]
            mod = ".".join(anchor + ([mod] if mod else []))
        # "from pkg import sub" names the submodule when there is one, else pkg itself
        return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]

    def walk(node, lazy):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in resolve(child):
                    while target and target not in known:  # "a.b.attr" -> "a.b"
                        target = target.rpartition(".")[0]
                    if target and target != name and target.split(".")[0] == PKG:
                        yield target, lazy
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text(), str(path)), False)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)

    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        visit(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    visit(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


#: Shared helpers with no layer of their own (pure or settings): anyone may import them.
CORE = {f"{PKG}.{m}" for m in ("extensions", "clock", "money", "ids", "text", "errors", "config", "signing")}
#: Entry points: blueprints, forms, CLI commands, jobs and the processes that run them.
TOP = {"views", "forms", "cli", "tasks", "worker", "runner"}
#: The money path (ARCHITECTURE "Money path, one way"): a package may call the next stages,
#: never an earlier one (e.g. the ledger never flushes the click buffer). Payouts and reports
#: read the ledger by design, so the check stops at the ledger.
MONEY_PATH = ["tracking", "conversions", "ledger"]


def layer(mod: str) -> int:
    """3 views/CLI/jobs, 2 services (and the rest), 1 models, 0 extensions and pure core."""
    last = mod.rsplit(".", 1)[-1]
    if mod in CORE:
        return 0
    if mod.startswith(f"{PKG}.models"):
        return 1
    if (last in TOP and mod != f"{PKG}.schedule.tasks") or last.endswith("_views") or mod == PKG:
        return 3
    return 2


def against_money_path(a: str, b: str) -> bool:
    pa, pb = (m.split(".")[1] if m.count(".") else "" for m in (a, b))
    if pa in MONEY_PATH and pb in MONEY_PATH:
        return MONEY_PATH.index(pb) < MONEY_PATH.index(pa)
    return False


def main() -> int:
    mods = modules()
    known = set(mods)
    eager, lazy = defaultdict(set), defaultdict(set)
    for name, path in mods.items():
        eager.setdefault(name, set())
        for target, is_lazy in imports(name, path, known):
            (lazy if is_lazy else eager)[name].add(target)
    for name in lazy:
        lazy[name] -= eager[name]
    n_eager = sum(map(len, eager.values()))
    n_lazy = sum(map(len, lazy.values()))
    print(f"{len(mods)} modules, {n_eager} module-level edges, {n_lazy} lazy-only edges")
    if "--edges" in sys.argv:
        for a in sorted(eager):
            for b in sorted(eager[a]):
                print(f"  {a} -> {b}")

    found = cycles(eager)
    print(f"\nmodule-level cycles: {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    both = {a: eager[a] | lazy[a] for a in eager}
    print(f"cycles once lazy imports count too: {len(cycles(both))}")
    for comp in cycles(both):
        print("  " + " <-> ".join(comp))

    def pkg(m):
        return ".".join(m.split(".")[:2])

    pgraph = defaultdict(set)
    for a, targets in eager.items():
        for b in targets:
            if pkg(a) != pkg(b):
                pgraph[pkg(a)].add(pkg(b))
    print(f"\npackage-level cycles (module-level imports): {len(cycles(pgraph))}")
    for comp in cycles(pgraph):
        print("  " + " <-> ".join(comp))

    for title, graph in (("module-level", eager), ("lazy", lazy)):
        up = [(a, b) for a in sorted(graph) for b in sorted(graph[a]) if layer(b) > layer(a)]
        print(f"\nupward arrows ({title}; views/cli/jobs > services > models > extensions): {len(up)}")
        for a, b in up:
            print(f"  {a} -> {b}")

    for title, graph in (("module-level", eager), ("lazy", lazy)):
        down = [(a, b) for a in sorted(graph) for b in sorted(graph[a]) if against_money_path(a, b)]
        print(f"\narrows back up the money path {' -> '.join(MONEY_PATH)} ({title}): {len(down)}")
        for a, b in down:
            print(f"  {a} -> {b}")

    print("\nlazy imports per module (function-level, not also imported at module level):")
    for a in sorted(lazy):
        if lazy[a]:
            print(f"  {a} ({len(lazy[a])}): " + ", ".join(sorted(t.removeprefix(PKG + '.') for t in lazy[a])))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
