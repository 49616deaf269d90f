"""No two modules of the package import each other, however indirectly (the layer contracts
in pyproject.toml keep packages in order; this keeps modules inside a package acyclic too)."""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    found, done, stack = [], set(), []

    def visit(m: str) -> None:
        stack.append(m)
        for n in sorted(graph.find_modules_directly_imported_by(m) & modules):
            if n in stack:
                found.append([*stack[stack.index(n) :], n])
            elif n not in done:
                visit(n)
        stack.pop()
        done.add(m)

    for m in sorted(modules):
        if m not in done:
            visit(m)
    return found


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("migrator")
    modules = {m for m in graph.modules if m.startswith("migrator.")}
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, {"p.a", "p.b", "p.c"}) == [["p.a", "p.b", "p.c", "p.a"]]
