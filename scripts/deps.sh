# Sourced by scripts/demo and scripts/test: installs the Debian packages that are missing.
SG_PACKAGES="meson ninja-build pkg-config gcc python3 curl iproute2 libcurl4-openssl-dev libssl-dev
libcjson-dev libconfig-dev libmicrohttpd-dev libsqlite3-dev libpq-dev libcmocka-dev"
# Only the tests need these: the browser tests drive headless Chromium through chromedriver;
# the proxy tests run nginx and Caddy; clang is the second compiler every change is built with;
# the PostgreSQL store's tests run a PostgreSQL server of their own (tests/harness/pg.c); the
# manual pages' test renders them with man-db's man and groff (tests/docs); the package test
# (tests/package) builds the Debian package, runs lintian on it and checks its unit with
# systemd-analyze.
SG_TEST_PACKAGES="chromium chromium-driver nginx caddy clang postgresql man-db groff-base debhelper
dpkg-dev fakeroot lintian systemd"
# The interoperability test runs a real OpenID Provider (tests/interop) on Node.js >= 18 with
# npm. Debian's nodejs and npm only where there is no node yet: a machine whose node came from
# elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's npm) keeps its own.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    SG_TEST_PACKAGES="$SG_TEST_PACKAGES nodejs npm"
fi

sg_is_installed()
{
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

# sg_install_deps PACKAGE... : installs those of the packages that are not installed yet.
# On failure it names each package that is still missing (and whether the configured
# repositories know it at all), shows apt's own words, and returns 1.
sg_install_deps()
{
    local missing="" p
    for p in "$@"; do
        sg_is_installed "$p" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing:$missing"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "error: these Debian packages are missing and installing them needs root" \
                "(no sudo here):$missing" >&2
            return 1
        }
        sudo="sudo"
    fi
    local log
    log=$(mktemp)
    if ! $sudo apt-get update -qq >"$log" 2>&1; then
        echo "error: apt-get update failed:" >&2
        tail -n 20 "$log" >&2
        rm -f "$log"
        return 1
    fi
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >"$log" 2>&1; then
        echo "error: apt-get install failed; apt said:" >&2
        grep -E '^(E|W):' "$log" >&2 || tail -n 20 "$log" >&2
        for p in $missing; do
            sg_is_installed "$p" && continue
            if apt-cache show "$p" >/dev/null 2>&1; then
                echo "error: package $p is not installed" >&2
            else
                echo "error: package $p is not installed: the configured repositories do not have it" >&2
            fi
        done
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
