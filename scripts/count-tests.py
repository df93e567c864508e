#!/usr/bin/env python3
"""Adds up the TAP lines of every test binary in a meson test log and prints
'N passed, N failed'. A binary that failed without a 'not ok' line (a crash, a
sanitizer report, a timeout) counts as one failure, so nothing is lost."""
import json
import re
import sys

passed = failed = skipped = 0
problems = []
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
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
            problems.append(f"{t.get('name')}: {t.get('result')} with no failing test line")
        if ok + bad + skip == 0 and t.get("result") == "OK":
            passed += 1  # a plain exit-code test
for p in problems:
    print(p)
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed else 0)
