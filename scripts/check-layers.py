#!/usr/bin/env python3
"""Checks the module graphs of the library and of the command line: no
import cycle, nothing reaches up.

Three crates are checked, each on its own: the library (every file under
src/, the binaries under src/bin/ excepted; LAYERS), the `vertex-batch`
command line (every file under src/bin/vertex-batch/; CLI_LAYERS) and the
`vertex-batch-emulator` binary (src/bin/vertex-batch-emulator.rs). In
each, every file is a node. An edge A -> B is any path in A's code (a
`use`, or an inline `crate::…` / `super::…` path; test modules included)
that resolves to an item of B, within the same crate: in the command line
`crate::…` is the binary's own crate, and `vertex_batch::…` (the library)
is no edge. Paths are resolved to the deepest module file they name, so a
path through a re-export (`crate::Error`, `crate::format::Prompt`) is an
edge to the file that re-exports it: inside a crate, items are named by
the module that defines them, and this check holds the code to that.

Each node belongs to one layer (lowest first; docs/ARCHITECTURE.md
describes them, the one copy the crate docs point to). The check fails
when

* a graph has a cycle (printed), or
* an edge goes from a lower layer to a higher one.

The crate root (`lib.rs`, `main.rs`) and the `mod.rs` files that only
declare and re-export sit on top of their own subtree and may name
anything below them.

Usage: scripts/check-layers.py [--graph]   (run by .ci/run)
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Lowest first. A module may use modules in its own layer or below; within
# a layer the graph must still be acyclic.
LAYERS = [
    ("generated protos", ["proto"]),
    ("names, URIs and time", ["names", "family", "uri", "time", "validation", "testing"]),
    ("service statuses and job values", ["error::service", "job"]),
    ("error", ["error"]),
    ("spec and formats", ["spec", "tokens", "format", "format::*", "cost"]),
    ("policies", ["policy", "policy::*"]),
    ("transport", ["transport", "transport::*"]),
    ("client operations", ["client", "client::*"]),
    ("Cloud Storage", ["storage", "storage::*"]),
    ("BigQuery", ["bigquery", "bigquery::*"]),
    ("the batch trip", ["batch", "batch::*"]),
    ("emulator", ["emulator", "emulator::*"]),
    ("crate root", ["lib"]),
]

# The command line (src/bin/vertex-batch/), lowest first: the shared
# helpers, then one module a subcommand, then the argument parsing and the
# dispatch on top. A subcommand uses the helpers, never another subcommand
# (they share a layer, so the cycle check holds them apart).
CLI_LAYERS = [
    ("flags, exit codes and test hooks", ["args", "exit", "pause", "progress"]),
    ("errors", ["fail"]),
    ("shared helpers", ["term", "interrupt", "connect", "prompts", "output", "cost", "start"]),
    ("subcommands", ["commands::*"]),
    ("arguments and dispatch", ["commands", "main"]),
]

# (name, directory, root file, layers, subdirectories left out).
CRATES = [
    ("library", SRC, "lib", LAYERS, ["bin"]),
    ("command line", os.path.join(SRC, "bin", "vertex-batch"), "main", CLI_LAYERS, []),
    # The emulator's binary is one file: checked so that a module added
    # beside it would have to be placed in a layer.
    ("emulator binary", os.path.join(SRC, "bin"), "vertex-batch-emulator",
     [("binary", ["vertex-batch-emulator"])], ["vertex-batch"]),
]


def module_files(root, root_name, skip):
    """Module name -> file, for the crate whose root file is
    `root/ROOT_NAME.rs`; directories in `skip` (at the top) are left out."""
    mods = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in skip:
            dirnames[:] = []
            continue
        for f in filenames:
            if not f.endswith(".rs"):
                continue
            parts = [] if rel == "." else rel.split(os.sep)
            stem = f[:-3]
            if stem == root_name and not parts:
                name = root_name
            elif stem == "mod":
                name = "::".join(parts)
            else:
                name = "::".join(parts + [stem])
            mods[name] = os.path.join(dirpath, f)
    return mods


def strip_comments(src):
    """Removes comments, and the contents of string and char literals."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := re.match(r'b?r(#*)"', src[i:i + 40])) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            close = '"' + m.group(1)
            j = src.find(close, i + m.end())
            out.append('""')
            i = n if j < 0 else j + len(close)
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:i + 12])):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """Expands `a::{b, c::{d, e}}` into full paths."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def rec(prefix, s):
        depth, start, items = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(s[start:i])
                start = i + 1
        items.append(s[start:])
        for item in items:
            if not item:
                continue
            m = re.match(r"^([^{]*?)(::)?\{(.*)\}$", item)
            if m:
                rec(prefix + [p for p in m.group(1).split("::") if p], m.group(3))
            else:
                item = item.split(" as ")[0]
                out.append(prefix + [p for p in item.split("::") if p])

    rec([], tree)
    return out


def inline_mod_spans(src):
    """(start, end) of every inline `mod name { … }` block."""
    spans = []
    for m in re.finditer(r"\bmod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{", src):
        depth, i = 1, m.end()
        while i < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[i], 0)
            i += 1
        spans.append((m.start(), i))
    return spans


def paths_in(src, children):
    """Paths a file names, each with the number of inline modules around it;
    `children` are the file's child modules, which a `use` may name without
    `self::`."""
    src = strip_comments(src)
    spans = inline_mod_spans(src)

    def depth(pos):
        return sum(1 for a, b in spans if a <= pos < b)

    paths = []
    for m in re.finditer(r"\buse\s+([A-Za-z_][^;]*);", src, flags=re.S):
        d = depth(m.start())
        for p in expand_use(m.group(1)):
            if p and p[0] in children and d == 0:
                p = ["self"] + p
            paths.append((p, d))
    body = re.sub(r"\buse\s+[A-Za-z_][^;]*;", lambda m: " " * len(m.group(0)), src, flags=re.S)
    for m in re.finditer(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", body):
        paths.append((m.group(1).split("::"), depth(m.start())))
    return paths


def resolve(mod, path, mods, root_name, inline=0):
    """The deepest module file a path names, as seen from `mod` (from inside
    `inline` nested inline modules); `root_name` is the crate root's."""
    if mod == root_name:
        here = []
    else:
        here = mod.split("::")
    is_dir_mod = mods.get(mod, "").endswith("mod.rs") or mod == root_name
    segs = list(path)
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        # A file's `self` is its own module; `super` its parent.
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super" and inline > 0:
                inline -= 1
            elif segs[0] == "super":
                base = base[:-1] if (base or is_dir_mod) else base
                is_dir_mod = True
            segs = segs[1:]
    else:
        return None
    best = "::".join(base) if base else root_name
    cur = list(base)
    for s in segs:
        cur.append(s)
        name = "::".join(cur)
        if name in mods:
            best = name
        else:
            break
    return best


def layer_of(mod, layers):
    for i, (_, members) in enumerate(layers):
        for m in members:
            if m == mod or (m.endswith("::*") and mod.startswith(m[:-1])):
                return i
    return None


def check(title, root, root_name, layers, skip):
    """The problems of one crate's graph, and a line that sums it up."""
    mods = module_files(root, root_name, skip)
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            src = f.read()
        prefix = "" if mod == root_name else mod + "::"
        children = {
            m[len(prefix):] for m in mods
            if m != root_name and m.startswith(prefix) and "::" not in m[len(prefix):]
        } if mod == root_name or mods[mod].endswith("mod.rs") else set()
        for p, inline in paths_in(src, children):
            if not p:
                continue
            target = resolve(mod, p, mods, root_name, inline)
            if target and target != mod and target in mods:
                edges[mod].add(target)

    problems = []
    for m in sorted(mods):
        if layer_of(m, layers) is None:
            problems.append(f"{title}: {m}: not in any layer (add it to the layers in {__file__})")
    # Parents (lib.rs and mod.rs files) declare their children; a child naming
    # its parent is reaching up only if the parent is above it, which the
    # layer rule below decides like for any other edge.
    for a in sorted(edges):
        la = layer_of(a, layers)
        for b in sorted(edges[a]):
            lb = layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                problems.append(
                    f"{title}: {a} ({layers[la][0]}) reaches up to {b} ({layers[lb][0]})"
                )

    # Cycles: Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    for comp in sccs:
        inner = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        problems.append(f"{title}: import cycle among " + ", ".join(comp) + ": " + "; ".join(inner))

    if "--graph" in sys.argv:
        print(f"{title}:")
        for i, (name, _) in enumerate(layers):
            members = sorted(m for m in mods if layer_of(m, layers) == i)
            print(f"{i}. {name}")
            for m in members:
                print(f"   {m} -> {', '.join(sorted(edges[m])) or '-'}")
    n_edges = sum(len(e) for e in edges.values())
    return problems, f"{title}: {len(mods)} modules, {n_edges} edges"


def main():
    problems, sums = [], []
    for crate in CRATES:
        p, summary = check(*crate)
        problems += p
        sums.append(summary)
    if problems:
        for p in problems:
            print("check-layers:", p, file=sys.stderr)
        sys.exit(1)
    print(f"check-layers: {'; '.join(sums)}; no cycle, nothing reaches up")


if __name__ == "__main__":
    main()
