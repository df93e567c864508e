#!/usr/bin/env python3
"""The manual pages in man/: they render without a warning, and they say what the code and the
docs say.

  check-man.py SOURCE_ROOT                  the test (TAP on stdout)
  check-man.py --keys docs|man FILE         the deployment file's keys a file describes, one
                                            dotted name a line (apps.NAME.issuer,
                                            limits.max_connections), groups included
  check-man.py --leaves docs|man FILE       the same without the groups that have members

docs reads docs/configuration.md's key tables (a table whose header is "key" or "key in
`GROUP`"); man reads the KEYS section of man/scopegate.cfg.5 (each .TP item's key). The
scopegate binary is $SCOPEGATE: its `help` lists the commands scopegate(8) must describe, and
its `config keys`, when it has one, the keys the parser accepts.
"""
import os
import re
import subprocess
import sys
import tempfile

PAGES = ["scopegate.8", "scopegate.cfg.5", "scopegate-policy.5"]
KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|NAME))*$")


# ---- the deployment file's keys, as dotted names -------------------------------------------

def docs_keys(path):
    """Keys of the markdown tables whose first header cell is `key` or "key in `GROUP`"."""
    keys = []
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        head = re.match(r"^\|\s*key(?:\s+in\s+`([^`]+)`)?\s*\|", lines[i])
        if not head or i + 1 >= len(lines) or not re.match(r"^\|\s*-{3}", lines[i + 1]):
            i += 1
            continue
        prefix = head.group(1) + "." if head.group(1) else ""
        i += 2
        while i < len(lines) and lines[i].startswith("|"):
            cell = re.match(r"^\|\s*`([^`]+)`\s*\|", lines[i])
            if cell:
                keys.append(prefix + cell.group(1))
            i += 1
    return keys


def roff_text(s):
    """Font changes and escapes of one roff line dropped: what the reader sees."""
    s = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", s)
    s = s.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\").replace("\\(dq", '"')
    return s


def man_keys(path):
    """The key of each .TP item in the KEYS section (.B KEY on the line after .TP)."""
    keys = []
    in_keys = False
    after_tp = False
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.startswith(".SH"):
            in_keys = line.split(None, 1)[1:] == ["KEYS"]
            continue
        if not in_keys:
            continue
        if line.startswith(".TP"):
            after_tp = True
            continue
        if after_tp and line.startswith(".B "):
            key = roff_text(line[3:]).strip().strip('"')
            if KEY_RE.match(key):
                keys.append(key)
        after_tp = False
    return keys


def parser_key(line):
    """A line of `scopegate config keys` in the same form: a placeholder segment (<app>,
    *, NAME) becomes NAME."""
    parts = line.strip().split(".")
    return ".".join("NAME" if re.match(r"^([<\[{*]|[A-Z][A-Z_]*$)", p) else p for p in parts)


def leaves(keys):
    """The keys that are not a group with members listed: apps goes when apps.NAME.issuer is
    there, whichever way a source lists groups."""
    ks = set(keys)
    return {k for k in ks if not any(o.startswith(k + ".") for o in ks)}


# ---- TAP ----------------------------------------------------------------------------------

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, good, name, why=""):
        self.n += 1
        print(f"{'ok' if good else 'not ok'} {self.n} - {name}")
        if not good:
            self.failed += 1
            for line in why.rstrip().splitlines():
                print(f"#   {line}")

    def skip(self, name, why):
        self.n += 1
        print(f"ok {self.n} - {name} # SKIP {why}")


def run(argv, **kw):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: {e}")


def difference(a_name, a, b_name, b):
    only_a = sorted(a - b)
    only_b = sorted(b - a)
    out = ""
    if only_a:
        out += f"only in {a_name}: {' '.join(only_a)}\n"
    if only_b:
        out += f"only in {b_name}: {' '.join(only_b)}\n"
    return out


def tags(page, section):
    """The tag of each .TP item of a section as the reader sees it: "policy check FILE ..."."""
    out, sect, after_tp = [], None, False
    for line in open(page, encoding="utf-8").read().splitlines():
        if line.startswith(".SH"):
            sect = line[3:].strip().strip('"')
        elif sect == section and line.startswith(".TP"):
            after_tp = True
            continue
        elif after_tp and line.startswith("."):
            words = roff_text(line.split(None, 1)[1] if " " in line else "").replace('"', "")
            out.append(" ".join(words.split()))
        after_tp = False
    return out


def example_blocks(page, section):
    """The text of each .EX ... .EE block of a section, as the reader sees it."""
    blocks, cur, sect = [], None, None
    for line in open(page, encoding="utf-8").read().splitlines():
        if line.startswith(".SH"):
            sect = line[3:].strip().strip('"')
        elif sect == section and line.startswith(".EX"):
            cur = []
        elif cur is not None and line.startswith(".EE"):
            blocks.append("\n".join(cur) + "\n")
            cur = None
        elif cur is not None:
            cur.append(roff_text(line))
    return blocks


def main():
    if len(sys.argv) == 4 and sys.argv[1] in ("--keys", "--leaves"):
        keys = (docs_keys if sys.argv[2] == "docs" else man_keys)(sys.argv[3])
        for k in (keys if sys.argv[1] == "--keys" else sorted(leaves(keys))):
            print(k)
        return 0
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    scopegate = os.environ.get("SCOPEGATE", "scopegate")
    man_dir = os.path.join(root, "man")
    t = Tap()
    print(f"1..{3 * len(PAGES) + 5}")

    # Rendering: what man-db and groff say to whoever opens the page.
    env = dict(os.environ, MANWIDTH="80")
    for page in PAGES:
        path = os.path.join(man_dir, page)
        r = run(["man", "--warnings", "-E", "UTF-8", "-l", path], env=env)
        t.ok(r.returncode == 0 and r.stderr == "" and r.stdout != "",
             f"{page} renders with man -l without a warning",
             f"expected: exit 0, nothing on stderr\ngot: exit {r.returncode}, stderr:\n{r.stderr}")
        text = re.sub(r".\x08", "", r.stdout)
        wide = [l for l in text.splitlines() if len(l.rstrip()) > 80]
        t.ok(r.stdout != "" and not wide, f"{page} fits 80 columns",
             "expected: no line wider than 80 columns (man does not wrap .EX lines)\n"
             "got:\n" + "\n".join(f"{len(l.rstrip())}: {l.rstrip()}" for l in wide))
        r = run(["groff", "-man", "-Tutf8", "-ww", "-z", path])
        t.ok(r.returncode == 0 and r.stderr == "" and r.stdout == "",
             f"{page} is silent under groff -ww",
             f"expected: exit 0 and no output\ngot: exit {r.returncode}:\n{r.stderr}{r.stdout}")

    # The deployment file's keys: the man page and docs/configuration.md list the same ones.
    docs = docs_keys(os.path.join(root, "docs", "configuration.md"))
    man = man_keys(os.path.join(man_dir, "scopegate.cfg.5"))
    sane = all(k in docs for k in ("listen", "limits.max_connections", "apps.NAME.issuer"))
    diff = difference("docs/configuration.md", leaves(docs), "scopegate.cfg.5", leaves(man))
    t.ok(sane and not diff, "scopegate.cfg.5 describes the keys docs/configuration.md's tables do",
         (diff or "") + ("" if sane else f"docs/configuration.md's tables gave: {docs}\n"))

    # ... and the parser accepts those, when the binary can say which it accepts.
    r = run([scopegate, "config", "keys"])
    parsed = [parser_key(l) for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or not parsed:
        t.skip("scopegate config keys lists the keys of the docs and the man page",
               "config keys not available")
    else:
        diff = difference("scopegate config keys", leaves(parsed), "docs/configuration.md",
                          leaves(docs))
        t.ok(not diff, "scopegate config keys lists the keys of the docs and the man page", diff)

    # Every command `scopegate help` lists is described in scopegate(8).
    r = run([scopegate, "help"])
    commands = []
    for line in r.stdout.splitlines():
        m = re.match(r"^  ([a-z]+)(?: ([a-z]+)\b)?", line)
        if m:
            commands.append(" ".join(w for w in m.groups() if w))
    items = tags(os.path.join(man_dir, "scopegate.8"), "COMMANDS")
    missing = [c for c in commands if not any(i == c or i.startswith(c + " ") for i in items)]
    t.ok(r.returncode == 0 and len(commands) >= 10 and not missing,
         "scopegate.8 describes every command scopegate help lists",
         f"scopegate help: exit {r.returncode}, commands {commands}\n"
         f"not among the items of scopegate.8's COMMANDS: {missing}")

    # The example policy and its cases are what they say they are.
    blocks = example_blocks(os.path.join(man_dir, "scopegate-policy.5"), "EXAMPLE")
    with tempfile.TemporaryDirectory() as tmp:
        pol = os.path.join(tmp, "policy.cfg")
        cases = os.path.join(tmp, "policy.cases")
        if len(blocks) == 2:
            open(pol, "w", encoding="utf-8").write(blocks[0])
            open(cases, "w", encoding="utf-8").write(blocks[1])
        r = run([scopegate, "policy", "check", pol, "--strict"])
        t.ok(len(blocks) == 2 and r.returncode == 0,
             "scopegate-policy.5's example policy passes policy check --strict",
             f"expected: two example blocks, exit 0\ngot: {len(blocks)} blocks, exit "
             f"{r.returncode}:\n{r.stdout}{r.stderr}")
        r = run([scopegate, "policy", "test", pol, cases])
        t.ok(len(blocks) == 2 and r.returncode == 0,
             "scopegate-policy.5's example cases pass policy test",
             f"expected: exit 0\ngot: exit {r.returncode}:\n{r.stdout}{r.stderr}")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
