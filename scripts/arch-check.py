#!/usr/bin/env python3
"""The shape checks of docs/architecture.md, over src/ (no build needed).

1. Import cycles: module A uses a path in module B and B uses a path in A. A module and its own
   submodule (`flows` and `flows::sign_in`) do not count; test code (`tests.rs`, `#[cfg(test)]`
   blocks) is left out. Reported per file module and per top-level module.
2. The longest handler functions in src/web/ (an `async fn` taking an axum extractor).
3. Leftovers of rules that have one owner: constant-time comparison outside `secret::ct_eq`,
   RFC 3339 formatting outside `clock`, the `"{idp}:{subject}"` binding string outside
   `identity::BoundSubject`.
4. Error style: `anyhow` only at the CLI and start-up edge (`ANYHOW_EDGE`); the core returns
   typed errors (thiserror) that callers can match on.

Usage: scripts/arch-check.py [--max-handler N]   (exit 1 when a file-module cycle, a pair of
top-level modules using each other, a handler over N lines (60), a leftover or an `anyhow` outside
the edge is found that the allow-lists below do not name). `make test` runs it before the tests.

An allow-list entry is a known debt with its reason, not a way around the check: remove it in
the change that fixes it (an entry that no longer matches anything is reported as stale).
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# File-module cycles not fixed yet: (module, module) in sorted order -> why it is allowed.
ALLOWED_CYCLES = {}

# Top-level modules using each other, not fixed yet: (module, module) in sorted order -> why.
ALLOWED_MUTUAL = {}

# Handlers over the limit not thinned yet: "src/web/file.rs::name" -> why it is allowed.
ALLOWED_LONG_HANDLERS = {}

# Where `anyhow` belongs: the CLI and start-up, which only report an error and exit. Paths
# relative to src/; a directory covers its files.
ANYHOW_EDGE = {
    "main.rs": "the CLI: prints the error chain and sets the exit code",
    "app.rs": "the composition root: builds the gateway from the configuration at start",
    "server.rs": "start-up: opens the audit log, binds and serves",
    "telemetry.rs": "start-up: starts the OTLP exporter",
    "demo/": "`storegate demo`: a CLI command with its own peers",
}

# Core files still using `anyhow`, not converted yet: "src/path.rs" -> why it is allowed.
ALLOWED_ANYHOW = {}


def module_of(path: Path) -> tuple:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)]` items (a module block or a single item) and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        k = j + len("#[cfg(test)]")
        # The item ends at its first `;` (a `mod x;`) or at its matching closing brace.
        semi, brace = text.find(";", k), text.find("{", k)
        if brace < 0 or (0 <= semi < brace):
            i = semi + 1
            continue
        depth, m = 0, brace
        while m < len(text):
            if text[m] == "{":
                depth += 1
            elif text[m] == "}":
                depth -= 1
                if depth == 0:
                    break
            m += 1
        i = m + 1
    return "".join(out)


def expand_use(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [p for it in items if it for p in expand_use(prefix + it)]


def referenced_paths(text: str, me: tuple) -> set:
    """Absolute module paths (tuples) this file's code names through `crate::` or `super::`."""
    found = set()
    for stmt in re.findall(r"\buse\s+([^;]+);", text):
        for p in expand_use(stmt):
            found.add(p)
    for p in re.findall(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
        found.add(p)
    out = set()
    for p in found:
        segs = p.split("::")
        if segs[0] == "crate":
            out.add(tuple(segs[1:]))
        elif segs[0] == "super":
            # `super` is the parent of this module (`src/a/mod.rs` is module `a`).
            here = list(me)
            while segs and segs[0] == "super":
                segs = segs[1:]
                here = here[:-1] if here else here
            out.add(tuple(here + segs))
    return out


def resolve(path: tuple, modules: set):
    """The deepest module that `path` starts with."""
    for n in range(len(path), 0, -1):
        if path[:n] in modules:
            return path[:n]
    return None


def main() -> int:
    max_handler = 60
    if "--max-handler" in sys.argv:
        max_handler = int(sys.argv[sys.argv.index("--max-handler") + 1])
    files = [p for p in SRC.rglob("*.rs") if p.name != "tests.rs" and "tests" not in p.parts]
    modules = {module_of(p) for p in files}
    texts = {module_of(p): strip_tests(p.read_text()) for p in files}
    edges = {}
    for p in files:
        me = module_of(p)
        targets = set()
        for path in referenced_paths(texts[me], me):
            t = resolve(path, modules)
            if t and t != me:
                targets.add(t)
        edges[me] = targets

    def related(a, b):
        return a[: len(b)] == b or b[: len(a)] == a

    status = 0
    print("## Import cycles (file modules)")
    cycles = sorted(
        {tuple(sorted((a, b))) for a, ts in edges.items() for b in ts if a in edges.get(b, ()) and not related(a, b)}
    )
    named = {("::".join(a), "::".join(b)) for a, b in cycles}
    for a, b in sorted(named):
        reason = ALLOWED_CYCLES.get((a, b))
        print(f"{'allowed' if reason else 'CYCLE'} {a} <-> {b}" + (f"  ({reason})" if reason else ""))
    new_cycles = [c for c in named if c not in ALLOWED_CYCLES]
    print(f"{len(named)} cycle(s), {len(new_cycles)} not allowed")
    for stale in sorted(set(ALLOWED_CYCLES) - named):
        print(f"stale allow-list entry (no such cycle now; remove it): {stale[0]} <-> {stale[1]}")
    status |= bool(new_cycles)

    print("\n## Import cycles (top-level modules)")
    top, via = {}, {}
    for a, ts in edges.items():
        for b in ts:
            if a and b and a[0] != b[0]:
                top.setdefault(a[0], set()).add(b[0])
                via.setdefault((a[0], b[0]), []).append(f"{'::'.join(a)} -> {'::'.join(b)}")
    top_cycles = sorted({tuple(sorted((a, b))) for a, ts in top.items() for b in ts if a in top.get(b, ())})
    for a, b in top_cycles:
        reason = ALLOWED_MUTUAL.get((a, b))
        print(f"{'allowed' if reason else 'MUTUAL'} {a} <-> {b}" + (f"  ({reason})" if reason else ""))
        for x, y in ((a, b), (b, a)):
            print(f"    {'; '.join(sorted(via[(x, y)])[:4])}")
    new_mutual = [c for c in top_cycles if c not in ALLOWED_MUTUAL]
    print(f"{len(top_cycles)} mutual pair(s), {len(new_mutual)} not allowed")
    for stale in sorted(set(ALLOWED_MUTUAL) - set(top_cycles)):
        print(f"stale allow-list entry (no such pair now; remove it): {stale[0]} <-> {stale[1]}")
    status |= bool(new_mutual)

    print(f"\n## Longest handlers in src/web (over {max_handler} lines flagged)")
    handlers = []
    for p in (SRC / "web").rglob("*.rs"):
        lines = p.read_text().split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"\s*pub(?:\(crate\))? async fn (\w+)", line)
            if not m:
                continue
            sig = "\n".join(lines[i : i + 12])
            if not re.search(r"State\(|RequestId|Session|HeaderMap|Form\(|Query\(|Path\(|Json\(|Bytes", sig):
                continue
            indent = len(line) - len(line.lstrip())
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].startswith(" " * indent + "}") and len(lines[j]) - len(lines[j].lstrip()) == indent),
                i,
            )
            handlers.append((end - i + 1, f"{p.relative_to(SRC.parent)}::{m.group(1)}"))
    handlers.sort(reverse=True)
    too_long = {name for n, name in handlers if n > max_handler}
    for rank, (n, name) in enumerate(handlers):
        # Every handler over the limit, and the ten longest.
        if n <= max_handler and rank >= 10:
            continue
        flag = ""
        if n > max_handler:
            reason = ALLOWED_LONG_HANDLERS.get(name)
            flag = f"  allowed ({reason})" if reason else "  TOO LONG"
        print(f"{n:4} {name}{flag}")
    not_allowed = sorted(too_long - set(ALLOWED_LONG_HANDLERS))
    print(f"{len(too_long)} handler(s) over {max_handler} lines, {len(not_allowed)} not allowed")
    for stale in sorted(set(ALLOWED_LONG_HANDLERS) - too_long):
        print(f"stale allow-list entry (no longer over {max_handler} lines; remove it): {stale}")
    status |= bool(not_allowed)

    print("\n## Leftovers of single-owner rules")
    rules = [
        ("constant-time comparison", r"fn ct_eq|fn constant_time_eq|\.ct_eq\(", "secret.rs"),
        ("RFC 3339 formatting", r"to_rfc3339|well_known::Rfc3339\)|format\(&Rfc3339", "clock.rs"),
        ("the \"{idp}:{subject}\" binding string", r'format!\("\{[a-z_.]*\}:\{[a-z_.]*(sub|subject)[a-z_.]*\}"', "identity.rs"),
    ]
    for what, pattern, owner in rules:
        hits = []
        for p in files:
            if p.name == owner:
                continue
            for n, line in enumerate(strip_tests(p.read_text()).split("\n"), 1):
                if re.search(pattern, line) and "parse" not in line:
                    hits.append(f"{p.relative_to(SRC.parent)}: {line.strip()}")
        print(f"{what} (owner {owner}): {len(hits)} outside")
        for h in hits:
            print(f"  {h}")
        status |= bool(hits)

    print("\n## Error style: anyhow outside the CLI and start-up edge")
    users = {}
    for p in files:
        rel = p.relative_to(SRC).as_posix()
        if rel in ANYHOW_EDGE or any(rel.startswith(d) for d in ANYHOW_EDGE if d.endswith("/")):
            continue
        n = len(re.findall(r"\banyhow\b", strip_tests(p.read_text())))
        if n:
            users[f"src/{rel}"] = n
    for name, n in sorted(users.items()):
        reason = ALLOWED_ANYHOW.get(name)
        print(f"{'allowed' if reason else 'ANYHOW'} {name}: {n} use(s)" + (f"  ({reason})" if reason else ""))
    not_allowed_anyhow = sorted(set(users) - set(ALLOWED_ANYHOW))
    print(f"{len(users)} core file(s) use anyhow, {len(not_allowed_anyhow)} not allowed")
    for stale in sorted(set(ALLOWED_ANYHOW) - set(users)):
        print(f"stale allow-list entry (no anyhow there now; remove it): {stale}")
    status |= bool(not_allowed_anyhow)
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
