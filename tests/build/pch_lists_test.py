#!/usr/bin/env python3
"""Checks that each translation unit uses the precompiled LibTorch header exactly when it
includes LibTorch (docs/BUILD.md, "Compile time"): loading the header costs ~6 s per file,
which a file without tensors pays for nothing, and a file with tensors compiled without
it parses LibTorch's headers itself (~15 s).

    python3 tests/build/pch_lists_test.py build/compile_commands.json [--source DIR]

Whether a file includes LibTorch is read from the sources, not from a compiler: the
closure of its `#include "..."` lines over retclip's own headers, looking for an
`<ATen/...>`, `<c10/...>` or `<torch/...>` include. A mismatch names the file and the
`retclip_no_pch(...)` list in its CMakeLists.txt to change.
"""
import argparse
import json
import os
import re
import sys

TORCH = re.compile(r'^\s*#\s*include\s*<(ATen|c10|torch)/([^>]+)>', re.M)
LOCAL = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
UNITY = re.compile(r'^\s*#\s*include\s*"(/[^"]+)"', re.M)

# Compiled with their own include directories and definitions (Gloo's and NCCL's
# headers), which the shared precompiled header was not built with.
OWN_FLAGS = {"src/dist/gloo.cpp", "src/dist/nccl.cpp"}


def torch_include(path, roots, seen):
    """The first LibTorch include reached from `path` (as 'file: <header>'), or None."""
    if path in seen:
        return None
    seen.add(path)
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return None
    m = TORCH.search(text)
    if m:
        return f"{path}: <{m.group(1)}/{m.group(2)}>"
    for inc in LOCAL.findall(text):
        for root in [os.path.dirname(path)] + roots:
            cand = os.path.normpath(os.path.join(root, inc))
            if os.path.isfile(cand):
                found = torch_include(cand, roots, seen)
                if found:
                    return found
                break
    return None


def check(rel, uses_pch, found):
    """The mismatch between how `rel` is compiled and what it includes, or None."""
    where = os.path.join(os.path.dirname(rel), "CMakeLists.txt")
    if uses_pch and not found:
        return (f"{rel} includes no LibTorch header but is compiled with the precompiled "
                f"one. HINT: add it to retclip_no_pch(...) in {where}")
    if not uses_pch and found:
        return (f"{rel} includes LibTorch ({found}) but is compiled without the precompiled "
                f"header. HINT: remove it from retclip_no_pch(...) in {where}, or keep "
                f"LibTorch out of the headers it includes")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("compile_commands")
    ap.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    a = ap.parse_args()
    source = os.path.abspath(a.source)
    roots = [os.path.join(source, "include")]
    entries = json.load(open(a.compile_commands))
    problems, checked = [], 0
    for e in entries:
        f = os.path.abspath(os.path.join(e["directory"], e["file"]))
        command = e.get("command") or " ".join(e.get("arguments", []))
        uses_pch = "cmake_pch.hxx" in command
        # A unity batch (RETCLIP_UNITY) is one entry that includes its sources.
        sources = UNITY.findall(open(f).read()) if "/Unity/unity_" in f else [f]
        for src in sources:
            rel = os.path.relpath(src, source)
            if (rel.startswith("..") or rel in OWN_FLAGS or "/CMakeFiles/" in rel
                    or os.path.basename(rel) in ("pch.cpp", "fmt_compiled.cpp")):
                continue
            checked += 1
            problem = check(rel, uses_pch, torch_include(src, roots, set()))
            if problem:
                problems.append(problem)
    for p in problems:
        print("FAIL", p)
    print(f"{checked} translation units checked, {len(problems)} mismatches")
    if checked == 0:
        print("FAIL no retclip translation unit found in", a.compile_commands)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
