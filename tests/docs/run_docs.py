#!/usr/bin/env python3
"""The documentation is tested: every `retclip ...` command (and `python3 scripts/...`
helper) in the fenced code blocks of README.md and docs/*.md runs, in document order, in
one scratch directory holding a small synthetic set, so what one command writes the next
one reads.

    python3 tests/docs/run_docs.py --retclip build/src/cli/retclip --work /tmp/docs [--list]

Extraction: fenced blocks without an info string or marked sh / bash / shell / console
(```text, ```python, ```yaml blocks are output, listings or other languages); a leading
`$ ` is dropped, backslash continuations are joined, optional `[...]` groups of a synopsis
are dropped. Sizes, steps and file names are adapted through tests/docs/overrides.tsv
(never by editing the docs); a command the table marks `skip` is an exception with its
reason (it needs a GPU, several hosts or the user's own download). A command that already
ran verbatim earlier (another page repeating it) is not run twice.

Besides its exit status, each command's output is checked for progress lines that count
past their total ("embed: 32/6 patients (533%)").
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import time

# README first, then the pages in the order a user follows them; pages not named here
# run after these, sorted, so a new page is never silently untested.
ORDER = ["README.md", "docs/SYNTH.md", "docs/TOKENIZERS.md", "docs/SHARDS.md", "docs/CONFIG.md",
         "docs/DATA.md", "docs/EVALUATION.md", "docs/FINETUNE.md", "docs/WEIGHTS.md",
         "docs/PERFORMANCE.md", "docs/CHECKPOINTS.md", "docs/DISTRIBUTED.md"]
RUN_FENCES = {"", "sh", "bash", "shell", "console"}
COMMAND = re.compile(r"^(retclip|python3 scripts/)\S*\s")
PROGRESS = re.compile(r"(\w[\w-]*): (\d+)/(\d+) (\w+) \((\d+)%\)")


def doc_pages(root):
    pages = [p for p in ORDER if os.path.exists(os.path.join(root, p))]
    extra = sorted("docs/" + f for f in os.listdir(os.path.join(root, "docs"))
                   if f.endswith(".md") and "docs/" + f not in pages)
    return pages + extra


def drop_optional(cmd):
    """Removes `[...]` groups (nested too) outside quotes: a synopsis's optional parts."""
    out, depth, quote = [], 0, None
    for ch in cmd:
        if quote:
            if ch == quote:
                quote = None
            if depth == 0:
                out.append(ch)
            continue
        if ch in "\"'" and depth == 0:
            quote = ch
            out.append(ch)
        elif ch == "[":
            depth += 1
        elif ch == "]" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def strip_comment(cmd):
    """Drops a trailing ` # comment` (prose beside the command) outside quotes."""
    for m in re.finditer(r"\s#\s", cmd):
        before = cmd[:m.start()]
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            return before.rstrip()
    return cmd


def extract(root, page):
    """(line, command) pairs of one page."""
    lines = open(os.path.join(root, page), encoding="utf-8").read().split("\n")
    cmds, fence, i = [], None, 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("```"):
            fence = s[3:].strip().lower() if fence is None else None
            i += 1
            continue
        if fence is not None and fence in RUN_FENCES:
            start = i
            text = s[2:] if s.startswith("$ ") else s
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            if COMMAND.match(text + " "):
                text = strip_comment(text)
                cmds.append((start + 1, drop_optional(text)))
        i += 1
    return cmds


def load_overrides(path):
    """Rows of the overrides table: (kind, where-regex, fields...)."""
    rules = []
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        f = raw.rstrip("\n").split("\t")
        kind = f[0]
        want = {"setup": 3, "sub": 5, "args": 4, "before": 4, "skip": 3}
        if kind not in want or len(f) != want[kind]:
            sys.exit(f"{path}:{n}: expected {want.get(kind, '?')} tab-separated fields for "
                     f"'{kind}' (kinds: {', '.join(want)}), got {len(f)}")
        rules.append((n, kind, f[1:]))
    return rules


def run_shell(cmd, cwd, env, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
               else (e.stdout or "")) + f"\n(timed out after {timeout} s)"
    return rc, out, time.time() - t0


def progress_overruns(out):
    return [m.group(0) for m in PROGRESS.finditer(out) if int(m.group(2)) > int(m.group(3))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--retclip", required=True, help="the retclip binary")
    ap.add_argument("--source", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--overrides", default=os.path.join(os.path.dirname(__file__),
                                                        "overrides.tsv"))
    ap.add_argument("--work", required=True, help="scratch directory (emptied first)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per command")
    ap.add_argument("--list", action="store_true", help="print the commands, run nothing")
    a = ap.parse_args()
    root = os.path.abspath(a.source)
    rules = load_overrides(a.overrides)

    plan = []  # (page, line, documented, command to run or None, notes)
    for page in doc_pages(root):
        for line, doc in extract(root, page):
            key, cmd, notes, before = f"{page}: {doc}", doc, [], []
            skip = None
            for n, kind, f in rules:
                if kind == "setup" or not re.search(f[0], key):
                    continue
                if kind == "skip":
                    skip = f"{f[1]} (overrides.tsv:{n})"
                elif kind == "sub":
                    new = re.sub(f[1], f[2], cmd)
                    if new == cmd:
                        sys.exit(f"overrides.tsv:{n}: '{f[1]}' does not occur in {key}")
                    cmd = new
                elif kind == "args":
                    cmd += " " + f[1]
                elif kind == "before":
                    before.append(f[1])
            plan.append((page, line, doc, None if skip else cmd, skip, before))

    if a.list:
        for page, line, doc, cmd, skip, before in plan:
            print(f"{page}:{line}: {doc}")
            for b in before:
                print(f"    before: {b}")
            print(f"    {'SKIP: ' + skip if skip else 'run: ' + cmd}")
        return 0

    work = os.path.abspath(a.work)
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(os.path.join(work, "bin"))
    os.symlink(os.path.abspath(a.retclip), os.path.join(work, "bin", "retclip"))
    env = dict(os.environ)
    env["PATH"] = os.path.join(work, "bin") + os.pathsep + env.get("PATH", "")
    env["RETCLIP_SOURCE"] = root
    env.setdefault("OMP_NUM_THREADS", "2")
    log = open(os.path.join(work, "docs_test.log"), "w")

    failures = []
    for n, kind, f in rules:
        if kind != "setup":
            continue
        rc, out, sec = run_shell(f[0], work, env, a.timeout)
        log.write(f"== setup (overrides.tsv:{n}) {f[0]}\n{out}\n")
        if rc != 0:
            print(f"setup failed (overrides.tsv:{n}, exit {rc}): {f[0]}\n{out[-3000:]}")
            return 1

    seen, ran, skipped, t_all = set(), 0, [], time.time()
    for page, line, doc, cmd, skip, before in plan:
        where = f"{page}:{line}"
        if cmd is None:
            skipped.append((where, doc, skip))
            print(f"SKIP {where}: {doc}\n     {skip}")
            continue
        if cmd in seen:
            print(f"same {where}: {doc} (ran earlier)")
            continue
        seen.add(cmd)
        for b in before:
            rc, out, _ = run_shell(b, work, env, a.timeout)
            log.write(f"== before {where}: {b}\n{out}\n")
            if rc != 0:
                failures.append((where, doc, f"its preparation `{b}` exited {rc}:\n{out[-2000:]}"))
        rc, out, sec = run_shell(cmd, work, env, a.timeout)
        ran += 1
        log.write(f"== {where}: {cmd}\n{out}\n(exit {rc}, {sec:.1f} s)\n")
        log.flush()
        over = progress_overruns(out)
        status = "ok  " if rc == 0 and not over else "FAIL"
        print(f"{status} {where} ({sec:.1f} s): {doc}" + ("" if cmd == doc else f"\n     ran: {cmd}"),
              flush=True)
        if rc != 0:
            failures.append((where, doc, f"exit {rc}:\n{out[-2500:]}"))
        elif over:
            failures.append((where, doc, "progress counts past its total: " + "; ".join(over)))

    print(f"\n{ran} commands run, {len(skipped)} exceptions, {len(failures)} failed, "
          f"{time.time() - t_all:.0f} s (log: {os.path.join(work, 'docs_test.log')})")
    for where, doc, why in failures:
        print(f"\nFAILED {where}: {doc}\n{why}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
