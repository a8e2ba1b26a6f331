#!/usr/bin/env python3
"""Lists the `crate::` paths each top-level module of src/ uses outside `#[cfg(test)]`, and
fails on any cycle between top-level modules (tools/check-layers.sh runs it; so does CI).

A module's uses are every `crate::NAME` in its code (in `use` statements, grouped ones
included, and in paths written inline), comments and string literals left out. Code under
`#[cfg(test)]` (an item, a `mod tests { ... }` block, or a whole file declared
`#[cfg(test)] mod name;`) is skipped: tests may reach anywhere.

    tools/check-layers.py [--list] [SRC_DIR]
"""
import os
import re
import sys


def strip_comments_and_strings(text):
    """The code of a Rust file with comments and the contents of string and char literals
    blanked out (newlines kept, so that line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a): only the former is blanked.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def skip_item(code, start):
    """The end of the item starting at `start`: after its matching `}` or its `;`."""
    depth, i = 0, start
    while i < len(code):
        c = code[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    return i


CFG_TEST = re.compile(r"#\[cfg\(test\)\]")


def without_tests(code):
    """`code` without the items under `#[cfg(test)]`, and the names of the modules declared
    `#[cfg(test)] mod name;` (their files are test code)."""
    test_mods, kept, at = [], [], 0
    for m in CFG_TEST.finditer(code):
        if m.start() < at:
            continue
        kept.append(code[at:m.start()])
        rest = code[m.end():]
        decl = re.match(r"\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", rest)
        if decl:
            test_mods.append(decl.group(1))
        at = skip_item(code, m.end())
        kept.append("\n" * code.count("\n", m.start(), at))
    kept.append(code[at:])
    return "".join(kept), test_mods


def crate_uses(code):
    """The top-level modules named after `crate::` in `code`, with the line of each."""
    found = []
    for m in re.finditer(r"\bcrate\s*::\s*(\{)?", code):
        line = code.count("\n", 0, m.start()) + 1
        if m.group(1):
            # use crate::{a::b, c, d::{e, f}}: the first segment of each top-level item.
            depth, i, item = 1, m.end(), ""
            while i < len(code) and depth:
                c = code[i]
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                if depth == 1 and c == ",":
                    name = re.match(r"\s*(\w+)", item)
                    if name:
                        found.append((name.group(1), line))
                    item = ""
                elif depth >= 1:
                    item += c
                i += 1
            name = re.match(r"\s*(\w+)", item)
            if name:
                found.append((name.group(1), line))
        else:
            name = re.match(r"\w+", code[m.end():])
            if name:
                found.append((name.group(0), line))
    return found


def module_files(src):
    """{path: (top-level module, code without tests)} for the library's .rs files under src,
    leaving out main.rs, lib.rs and the files of modules declared `#[cfg(test)]`."""
    uses, test_files = {}, set()
    for root, _, names in os.walk(src):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            if not name.endswith(".rs") or rel == "main.rs":
                continue
            if rel == "lib.rs":
                with open(path, encoding="utf-8") as f:
                    _, test_mods = without_tests(strip_comments_and_strings(f.read()))
                for t in test_mods:
                    test_files.add(os.path.join(src, t + ".rs"))
                    test_files.add(os.path.join(src, t, ""))
                continue
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            with open(path, encoding="utf-8") as f:
                code, test_mods = without_tests(strip_comments_and_strings(f.read()))
            # Where the module's own submodules live: beside mod.rs, or in a folder of its name.
            here = os.path.dirname(path) if name == "mod.rs" else os.path.splitext(path)[0]
            for t in test_mods:
                test_files.add(os.path.join(here, t + ".rs"))
                test_files.add(os.path.join(here, t, ""))
            uses[path] = (top, code)
    return {p: v for p, v in uses.items() if not any(p == t or (t.endswith(os.sep) and p.startswith(t))
                                                     for t in test_files)}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    listing = "--list" in sys.argv
    src = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    src = os.path.normpath(src)
    modules = {}
    for path, (top, code) in sorted(module_files(src).items()):
        modules.setdefault(top, {})
        for name, line in crate_uses(code):
            if name != top:
                modules[top].setdefault(name, []).append(f"{os.path.relpath(path, src)}:{line}")
    tops = set(modules)
    graph = {m: sorted(d for d in deps if d in tops) for m, deps in modules.items()}
    if listing:
        for m in sorted(graph):
            print(f"{m} -> {', '.join(graph[m]) or '(nothing)'}")
            for d in graph[m]:
                print(f"    {d}: {' '.join(modules[m][d][:6])}{' ...' if len(modules[m][d]) > 6 else ''}")
    # Strongly connected components (Tarjan): any with two or more modules is a cycle.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = [c for c in sccs if len(c) > 1]
    if not cycles:
        order = []
        seen = set()

        def topo(v):
            if v in seen:
                return
            seen.add(v)
            for w in graph[v]:
                topo(w)
            order.append(v)

        for v in sorted(graph):
            topo(v)
        print(f"check-layers: no cycle between the {len(graph)} top-level modules of {src}; "
              f"bottom to top: {' < '.join(order)}")
        return 0
    for comp in cycles:
        print(f"check-layers: cycle between {', '.join(comp)}:", file=sys.stderr)
        members = set(comp)
        for m in comp:
            for d in graph[m]:
                if d in members:
                    print(f"    {m} -> {d}: {' '.join(modules[m][d][:4])}{' ...' if len(modules[m][d]) > 4 else ''}",
                          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
