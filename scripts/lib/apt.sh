# shellcheck shell=bash
# Sourced by the project's scripts: installs Debian packages with apt-get, through sudo when
# not root. Usage: apt_install PACKAGE...
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing $* and no apt-get to install them" >&2
        return 1
    fi
    local sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
