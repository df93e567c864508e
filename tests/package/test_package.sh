#!/usr/bin/env bash
# The Debian package, built the Debian way from a copy of the source tree and checked as an
# operator would meet it: dpkg-buildpackage -b -us -uc, lintian (no error), the package's
# files, its unit (systemd-analyze verify, and an exposure of 2.0 or less), and the packaged
# binary itself, extracted from the .deb, signing a person in against the built sfsim and
# speaking sd_notify. Prints TAP; everything else goes out as "# " lines.
#
#   test_package.sh PACKAGE_SIGNIN TEST_GATEWAY_NOTIFY
#
# meson's test_env gives SG_SOURCE_ROOT, SFSIM and SFSIM_DEMO_CFG.
set -uo pipefail

signin_test=$1
notify_test=$2
src=${SG_SOURCE_ROOT:?SG_SOURCE_ROOT must name the source tree}
max_exposure=2.0

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok()
{
    n=$((n + 1))
    failed=1
    echo "not ok $n - $1"
}
# Indents a command's output into TAP comments.
say() { sed 's/^/# /'; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sg-package-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
echo "1..11"

# ---- the build, from a copy: the source tree is never written to --------------------------
copy=$work/scopegate
mkdir -p "$copy"
if [ -d "$src/.git" ] || git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    # What git tracks or would track (not the build folders, var/ or node_modules), as it is
    # in the working tree now, so uncommitted changes are what gets built.
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -cf - -T -) | tar -xf - -C "$copy"
else
    tar -C "$src" --exclude='./build*' --exclude=./var --exclude='*/node_modules' -cf - . |
        tar -xf - -C "$copy"
fi
started=$(date +%s)
if (cd "$copy" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1; then
    ok "dpkg-buildpackage -b -us -uc builds the package from a clean copy of the tree ($(($(date +%s) - started)) s)"
else
    not_ok "dpkg-buildpackage -b -us -uc builds the package from a clean copy of the tree"
    tail -n 40 "$work/build.log" | say
fi
deb=$(ls "$work"/scopegate_*_*.deb 2>/dev/null | grep -v dbgsym | head -n 1)
changes=$(ls "$work"/scopegate_*.changes 2>/dev/null | head -n 1)
if [ -z "$deb" ] || [ -z "$changes" ]; then
    echo "# no .deb was built: nothing else can be checked"
    for what in "a changelog version that is not meson's stops the build" "lintian" \
        "the package's files" "systemd-analyze verify" "the unit's exposure" "sysusers and tmpfiles" \
        "the packaged default config" "the packaged policy" "the packaged binary signs in" \
        "the packaged binary speaks sd_notify"; do
        not_ok "$what (no package)"
    done
    exit 1
fi

# ---- the version check: the changelog must say meson's version ---------------------------
cp "$copy/debian/changelog" "$work/changelog.good"
sed -i '1s/(\([^)]*\))/(99.0.0)/' "$copy/debian/changelog"
if out=$(cd "$copy" && debian/rules check-version 2>&1); then
    not_ok "a changelog version that is not meson's stops the build (expected failure, got success)"
else
    ok "a changelog version that is not meson's stops the build"
    echo "$out" | say
fi
cp "$work/changelog.good" "$copy/debian/changelog"

# ---- lintian: errors fail, warnings are printed -------------------------------------------
lintian --allow-root --info "$changes" >"$work/lintian.log" 2>&1
grep -E '^[EW]: ' "$work/lintian.log" | say
if grep -qE '^E: ' "$work/lintian.log"; then
    not_ok "lintian finds no error in $(basename "$changes")"
elif ! grep -qE '^[EWIPN]: |^$' "$work/lintian.log" && [ -s "$work/lintian.log" ]; then
    not_ok "lintian ran (it said something else)"
    say <"$work/lintian.log"
else
    ok "lintian finds no error in $(basename "$changes") ($(grep -cE '^W: ' "$work/lintian.log") warnings)"
fi

# ---- the package's files -----------------------------------------------------------------
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|' >"$work/files"
missing=""
for f in /usr/bin/scopegate /lib/systemd/system/scopegate.service \
    /usr/lib/sysusers.d/scopegate.conf /usr/lib/tmpfiles.d/scopegate.conf \
    /etc/logrotate.d/scopegate /etc/scopegate/scopegate.cfg /etc/scopegate/policy.cfg \
    /usr/share/doc/scopegate/examples/scopegate.cfg \
    /usr/share/doc/scopegate/examples/default.cfg /usr/share/doc/scopegate/examples/default.cases \
    /usr/share/man/man8/scopegate.8.gz /usr/share/man/man5/scopegate.cfg.5.gz \
    /usr/share/man/man5/scopegate-policy.5.gz; do
    grep -qxF "$f" "$work/files" || missing="$missing $f"
done
extra=$(grep -E '(^|/)sfsim' "$work/files")
conffiles=$(dpkg-deb -f "$deb" Package >/dev/null && dpkg-deb -I "$deb" conffiles 2>/dev/null)
for f in /etc/scopegate/scopegate.cfg /etc/scopegate/policy.cfg /etc/logrotate.d/scopegate; do
    echo "$conffiles" | grep -qxF "$f" || missing="$missing (conffile)$f"
done
if [ -z "$missing" ] && [ -z "$extra" ]; then
    ok "the package holds the binary, the unit, sysusers, tmpfiles, logrotate, the configs (conffiles), examples and manual pages, and no sfsim"
else
    not_ok "the package's files: expected none missing and no sfsim; missing:${missing:- none}; sfsim: ${extra:-none}"
    say <"$work/files"
fi

# ---- the unit ------------------------------------------------------------------------------
root=$work/root
dpkg-deb -x "$deb" "$root"
unit=$work/unit/scopegate.service
mkdir -p "$work/unit"
# ExecStart must resolve: the unit as installed, pointed at the extracted binary.
sed "s|/usr/bin/scopegate|$root/usr/bin/scopegate|" "$root/lib/systemd/system/scopegate.service" >"$unit"
# --man=no: the man pages are checked by lintian, not by whether this machine has them.
if out=$(systemd-analyze verify --man=no "$unit" 2>&1); then
    ok "systemd-analyze verify accepts scopegate.service"
else
    not_ok "systemd-analyze verify accepts scopegate.service"
fi
[ -n "$out" ] && echo "$out" | say
score_line=$(systemd-analyze security --offline=true "$unit" 2>&1 | grep 'Overall exposure level')
echo "$score_line" | say
score=$(echo "$score_line" | grep -oE 'level for [^:]*: [0-9.]+' | grep -oE '[0-9.]+$')
if [ -n "$score" ] && awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
    ok "the unit's exposure (systemd-analyze security --offline=true) is $score, at most $max_exposure"
else
    not_ok "the unit's exposure: expected at most $max_exposure, got ${score:-no score}"
    systemd-analyze security --offline=true "$unit" 2>&1 | grep '✗' | say
fi

# ---- the user and the state folder, as postinst makes them, in a scratch root --------------
sysroot=$work/sysroot
mkdir -p "$sysroot/etc"
systemd-sysusers --root="$sysroot" "$root/usr/lib/sysusers.d/scopegate.conf" 2>&1 | say
systemd-tmpfiles --root="$sysroot" --create "$root/usr/lib/tmpfiles.d/scopegate.conf" 2>&1 | say
user=$(grep '^scopegate:' "$sysroot/etc/passwd" 2>/dev/null)
ids=$(echo "$user" | awk -F: '{print $3 ":" $4}')
mode=$(stat -c '%a %u:%g' "$sysroot/var/lib/scopegate" 2>/dev/null)
if [ -n "$user" ] && [ "$mode" = "700 $ids" ]; then
    ok "sysusers makes the system user scopegate and tmpfiles its /var/lib/scopegate, mode 0700"
else
    not_ok "sysusers and tmpfiles: expected a scopegate user and /var/lib/scopegate 700 $ids, got user '${user}', folder '${mode:-missing}'"
fi

# ---- the packaged configs ------------------------------------------------------------------
# Placeholders: the service must refuse to start and say what is missing.
out=$("$root/usr/bin/scopegate" serve --config "$root/etc/scopegate/scopegate.cfg" 2>&1 </dev/null)
status=$?
if [ $status -ne 0 ] && echo "$out" | grep -q 'signin.secret'; then
    ok "the packaged config refuses to start until its secret file is there, and names it"
else
    not_ok "the packaged config: expected a failing start naming signin.secret, got exit $status"
fi
echo "$out" | say
if out=$("$root/usr/bin/scopegate" policy check "$root/etc/scopegate/policy.cfg" 2>&1); then
    ok "the packaged policy passes scopegate policy check"
else
    not_ok "the packaged policy passes scopegate policy check"
fi
echo "$out" | say

# ---- the packaged binary against sfsim ---------------------------------------------------
# Each helper prints TAP of its own; here it is one line, its output comments.
run_helper()
{
    local what=$1
    shift
    local out status
    out=$(SCOPEGATE=$root/usr/bin/scopegate CMOCKA_MESSAGE_OUTPUT=TAP "$@" 2>&1)
    status=$?
    echo "$out" | say
    if [ $status -eq 0 ]; then ok "$what"; else not_ok "$what (exit $status)"; fi
}
run_helper "the packaged binary signs a person in and /auth answers with their role" "$signin_test"
run_helper "the packaged binary says READY=1, RELOADING=1, STOPPING=1 over NOTIFY_SOCKET" "$notify_test"

exit $failed
