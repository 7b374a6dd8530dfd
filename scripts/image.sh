#!/usr/bin/env bash
# Builds the mcp-policy OCI image from deploy/Dockerfile (FROM scratch) with buildah, which needs
# no Docker engine, or with docker. Usage:
#   cargo build --release --bin policy-sidecar --bin demo-tool-server
#   scripts/image.sh [--bin-dir DIR] [--tag NAME:TAG] [--engine buildah|docker]
#                    [--archive FILE] [--check] [--scratch-storage]
#
#   --bin-dir DIR      where policy-sidecar and demo-tool-server are (default target/release)
#   --tag NAME:TAG     the image name (default mcp-policy:<the binary's version>)
#   --engine E         buildah (the default when installed, else docker if installed)
#   --archive FILE     also write the image as an OCI archive (buildah only)
#   --check            run the binaries inside the image: `policy-sidecar --version`,
#                      `policy-sidecar validate` on examples/policies (cvc5 from the image),
#                      `demo-tool-server --help`; check the user; print the image size (buildah)
#   --scratch-storage  build in a throw-away buildah store (vfs driver) removed at exit, as CI
#                      does; without it the image stays in your store, ready for `buildah push`
# As root, or rootless inside `buildah unshare scripts/image.sh ...` (--check runs the binaries
# with `buildah run --isolation chroot`, which needs no OCI runtime).
#
# The build context is made here: rootfs/ gets the binaries (debug info stripped), every shared
# library `ldd` names for them and for cvc5, cvc5 itself, the CA certificates, /etc/passwd and
# /etc/group with the non-root user 65532, and the Debian copyright files of the packages the
# copied files come from. The image runs on the glibc it was built with, so build it on the
# distribution you would take a base image from (Debian 12 here).
# Installs buildah (Debian package) when neither engine is there, cvc5 and binutils when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/lib/apt.sh

bin_dir=target/release
tag=""
engine=""
archive=""
check=false
scratch=false
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --engine) engine="$2"; shift 2 ;;
        --archive) archive="$2"; shift 2 ;;
        --check) check=true; shift ;;
        --scratch-storage) scratch=true; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

step() { printf '==> %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

for bin in policy-sidecar demo-tool-server; do
    [ -x "$bin_dir/$bin" ] || fail "$bin_dir/$bin is missing: cargo build --release --bin policy-sidecar --bin demo-tool-server (or pass --bin-dir)"
done
version="$("$bin_dir/policy-sidecar" --version | awk '{print $2}')"
[ -n "$version" ] || fail "no version from $bin_dir/policy-sidecar --version"
tag="${tag:-mcp-policy:$version}"

if [ -z "$engine" ]; then
    if command -v buildah >/dev/null 2>&1; then engine=buildah
    elif command -v docker >/dev/null 2>&1; then engine=docker
    else engine=buildah
    fi
fi
case "$engine" in
    buildah)
        if ! command -v buildah >/dev/null 2>&1; then
            step "installing buildah (apt-get)"
            apt_install buildah
        fi ;;
    docker) command -v docker >/dev/null 2>&1 || fail "docker is not installed" ;;
    *) fail "--engine must be buildah or docker" ;;
esac
if [ "$engine" = docker ] && { $check || [ -n "$archive" ]; }; then
    fail "--check and --archive need --engine buildah"
fi
missing=()
command -v cvc5 >/dev/null 2>&1 || missing+=(cvc5)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (apt-get)"
    apt_install "${missing[@]}"
fi

work="$(mktemp -d)"
storage=()
if $scratch; then
    storage=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
fi
bah() { buildah "${storage[@]}" "$@"; }
cleanup() {
    if $scratch; then
        bah rm --all >/dev/null 2>&1 || true
        bah rmi --all --force >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- the root filesystem ------------------------------------------------------------------------
context="$work/context"
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
step "root filesystem for $tag from $bin_dir"
for bin in policy-sidecar demo-tool-server; do
    strip --strip-debug -o "$rootfs/usr/local/bin/$bin" "$bin_dir/$bin"
done
cvc5="$(command -v cvc5)"
cp -L "$cvc5" "$rootfs/usr/bin/cvc5"

# Every shared library the binaries and cvc5 load, at the path the loader looks for it.
copied=("$cvc5" /etc/ssl/certs/ca-certificates.crt)
for elf in "$bin_dir/policy-sidecar" "$bin_dir/demo-tool-server" "$cvc5"; do
    if ! ldd_out="$(ldd "$elf" 2>&1)"; then
        [[ "$ldd_out" == *"not a dynamic executable"* ]] && continue
        fail "ldd $elf: $ldd_out"
    fi
    if grep -q 'not found' <<<"$ldd_out"; then
        fail "ldd $elf: $(grep 'not found' <<<"$ldd_out")"
    fi
    while read -r lib; do
        [ -e "$rootfs$lib" ] && continue
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
        copied+=("$lib")
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$ldd_out")
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"

# The copyright files of the Debian packages the copied files come from (the certificate bundle
# is generated by the package ca-certificates, which dpkg does not list as its owner).
if command -v dpkg >/dev/null 2>&1; then
    for file in "${copied[@]}"; do
        if [ "$file" = /etc/ssl/certs/ca-certificates.crt ]; then
            package=ca-certificates
        else
            package="$(dpkg -S "$file" 2>/dev/null || dpkg -S "$(realpath "$file")" 2>/dev/null || true)"
            package="${package%%:*}"
        fi
        [ -n "$package" ] || continue
        notice="/usr/share/doc/$package/copyright"
        if [ -f "$notice" ] && [ ! -f "$rootfs$notice" ]; then
            mkdir -p "$rootfs/usr/share/doc/$package"
            cp "$notice" "$rootfs$notice"
        fi
    done
fi

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
# Host names from /etc/hosts (which Kubernetes and Docker mount) first, then DNS.
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"

# --- build ----------------------------------------------------------------------------------------
created="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
step "$engine: build deploy/Dockerfile as $tag"
if [ "$engine" = docker ]; then
    docker build -f deploy/Dockerfile --build-arg "VERSION=$version" -t "$tag" "$context"
    step "built $tag: docker push it to your registry (deploy/README.md)"
    exit 0
fi
bah bud --quiet --format oci --layers=false --timestamp "$created" \
    --build-arg "VERSION=$version" -f deploy/Dockerfile -t "$tag" "$context" >/dev/null
size="$(bah images --format '{{.Size}}' "$tag")"
step "built $tag: $size uncompressed"

if [ -n "$archive" ]; then
    mkdir -p "$(dirname "$archive")"
    rm -f "$archive"
    bah push --quiet "$tag" "oci-archive:$archive:$tag"
    step "wrote $archive ($(du -h "$archive" | cut -f1), layers compressed)"
fi

if $check; then
    step "run the binaries inside $tag (buildah run, chroot isolation)"
    container="$(bah from --quiet --pull=never "$tag")"
    inside() { bah run --isolation chroot "$@"; }
    user="$(bah inspect --format '{{.OCIv1.Config.User}}' "$tag")"
    [ "$user" = "65532:65532" ] || fail "the image runs as '$user', not 65532:65532"
    out="$(inside "$container" -- policy-sidecar --version)"
    [ "$out" = "policy-sidecar $version" ] || fail "policy-sidecar --version inside the image: $out"
    echo "    $out"
    out="$(inside -v "$root/examples/policies:/examples/policies:ro" "$container" -- \
        policy-sidecar validate --config /examples/policies/policy-sidecar.toml 2>&1)" \
        || fail "policy-sidecar validate inside the image: $out"
    grep -q '^semantic analysis with /usr/bin/cvc5 ' <<<"$out" \
        || fail "validate did not run cvc5 from the image: $out"
    sed 's/^/    /' <<<"$out"
    inside "$container" -- demo-tool-server --help >/dev/null \
        || fail "demo-tool-server --help inside the image"
    if [ -z "$archive" ]; then
        bah push --quiet "$tag" "oci-archive:$work/image.tar:$tag"
        compressed="$(du -h "$work/image.tar" | cut -f1)"
    else
        compressed="$(du -h "$archive" | cut -f1)"
    fi
    step "$tag runs: $size uncompressed, $compressed as a compressed OCI archive"
fi
