#!/usr/bin/env python3
"""Adds up everything scripts/test ran and prints 'N passed, N failed'.

  count-tests.py [--builds RESULTS] TESTLOG.json...

RESULTS has one line per build, "NAME ok|failed DIR": each build counts as one test. Each
TESTLOG.json is a meson test log; the TAP lines of every test binary in it are counted. A
binary that failed without a 'not ok' line (a crash, a sanitizer report, a timeout) counts
as one failure, so nothing is lost."""
import json
import re
import sys

passed = failed = skipped = 0
problems = []
args = sys.argv[1:]
builds = None
if len(args) >= 2 and args[0] == "--builds":
    builds = args[1]
    args = args[2:]

if builds:
    with open(builds, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            if parts[1] == "ok":
                passed += 1
            else:
                failed += 1
                problems.append(f"build {parts[0]} ({parts[2] if len(parts) > 2 else '?'}): failed")

for path in args:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        failed += 1
        problems.append(f"{path}: no test log ({e.strerror})")
        continue
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            out = t.get("stdout") or ""
            skip = len(re.findall(r"^(?:not )?ok \d+.*#\s*SKIP", out, re.M | re.I))
            ok = len(re.findall(r"^ok \d+", out, re.M)) - len(
                re.findall(r"^ok \d+.*#\s*SKIP", out, re.M | re.I))
            bad = len(re.findall(r"^not ok \d+", out, re.M)) - len(
                re.findall(r"^not ok \d+.*#\s*SKIP", out, re.M | re.I))
            passed += ok
            failed += bad
            skipped += skip
            if t.get("result") not in ("OK", "EXPECTEDFAIL", "SKIP") and bad == 0:
                failed += 1
                problems.append(f"{path}: {t.get('name')}: {t.get('result')} with no failing test line")
            if ok + bad + skip == 0 and t.get("result") == "OK":
                passed += 1  # a plain exit-code test
for p in problems:
    print(p)
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed else 0)
