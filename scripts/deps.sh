# Sourced by scripts/demo and scripts/test: installs the Debian packages that are missing.
SG_PACKAGES="meson ninja-build pkg-config gcc python3 curl libcurl4-openssl-dev libssl-dev
libcjson-dev libconfig-dev libmicrohttpd-dev libsqlite3-dev libcmocka-dev"
# Only the tests need these: the browser tests drive headless Chromium through chromedriver.
SG_TEST_PACKAGES="chromium chromium-driver nginx caddy"
# The interoperability test runs a real OpenID Provider (tests/interop) on Node.js >= 18 with
# npm. Debian's nodejs and npm only where there is no node yet: a machine whose node came from
# elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's npm) keeps its own.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    SG_TEST_PACKAGES="$SG_TEST_PACKAGES nodejs npm"
fi

# sg_install_deps PACKAGE... : installs those of the packages that are not installed yet.
sg_install_deps()
{
    local missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing:$missing"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
}
