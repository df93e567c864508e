#!/usr/bin/env python3
"""Checks that every #include in the gateway, the policy engine and sfsim points down the
layers (docs/architecture.md) or within its own module, never up or sideways:

  base 0  <  net 1  <  oidc 2, salesforce 2  <  store 3, policy 3  <  session 4, vault 4
          <  web 5  <  cli 6          (sfsim, the simulator, stands at 3: no store, no vault)

  check-layers.py SOURCE_ROOT

Prints one line per wrong include ("FILE:LINE: LAYER includes HEADER of LAYER") and exits 1
when there is one; prints what it checked and exits 0 otherwise."""
import os
import re
import sys

RANK = {"base": 0, "net": 1, "oidc": 2, "salesforce": 2, "sfsim": 3, "store": 3,
        "policy": 3, "session": 4, "vault": 4, "web": 5, "cli": 6}

# include/scopegate/NAME.h -> the module whose surface it is.
PUBLIC = {"rc": "base", "buf": "base", "log": "base", "duration": "base", "text": "base",
          "crypto": "base", "jose": "base", "metrics": "base", "http": "base",
          "config": "base", "diag": "base", "version": "base", "audit": "base", "notify": "base",
          "http_client": "net",
          "http_server": "net",
          "oidc": "oidc",
          "salesforce": "salesforce", "store": "store", "session": "session",
          "vault": "vault", "policy": "policy"}
# Private headers, by file name -> their module.
PRIVATE = {"oidc_int.h": "oidc", "store_int.h": "store", "vault_int.h": "vault", "gateway.h": "web",
           "serve.h": "web", "fleet.h": "web",
           "cli.h": "cli", "policy_int.h": "policy", "http_server_int.h": "net", "sim.h": "sfsim", "soql.h": "sfsim"}


def module_of(rel):
    parts = rel.split("/")
    if parts[0] == "gateway" and len(parts) > 2 and parts[1] in RANK:
        return parts[1]
    if parts[0] == "policy":
        return "policy"
    if parts[:2] == ["tests", "sfsim"]:
        return "sfsim"
    if parts[:2] == ["include", "scopegate"]:
        return PUBLIC.get(os.path.splitext(parts[2])[0])
    return None


def header_module(name):
    if name.startswith("scopegate/"):
        return PUBLIC.get(os.path.splitext(name[len("scopegate/"):])[0], "?")
    return PRIVATE.get(os.path.basename(name), "?")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    bad, checked = [], 0
    for top in ("gateway", "policy", "include/scopegate", "tests/sfsim"):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(d, f)
                rel = os.path.relpath(path, root)
                mod = module_of(rel)
                if mod is None:
                    bad.append(f"{rel}: not in any layer (put it in one of gateway/{{{','.join(RANK)}}})")
                    continue
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for n, line in enumerate(fh, 1):
                        m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                        if not m:
                            continue
                        checked += 1
                        hmod = header_module(m.group(1))
                        if hmod == "?":
                            bad.append(f"{rel}:{n}: includes {m.group(1)}, a header of no known "
                                       f"module (add it to scripts/check-layers.py)")
                        elif hmod != mod and RANK[hmod] >= RANK[mod]:
                            bad.append(f"{rel}:{n}: {mod} (layer {RANK[mod]}) includes "
                                       f"{m.group(1)} of {hmod} (layer {RANK[hmod]})")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} include(s) against the layers")
        return 1
    print(f"layers: {checked} includes checked, all point down or within their module")
    return 0


if __name__ == "__main__":
    sys.exit(main())
