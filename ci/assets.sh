#!/usr/bin/env bash
# Fetch, unpack and verify zvisor's guest kernels from Debian's archive.
#
#   ci/assets.sh [--refresh] [ARCH...]       ARCH: x86_64 aarch64 s390x (default: all)
#   ci/assets.sh --extract-vmlinux BZIMAGE OUT   only extract an ELF vmlinux
#
# For each architecture this uses a private apt state (its own sources.list,
# lists and cache under .zvisor-assets/apt/<arch>/, never the system's dpkg
# state), resolves the kernel that Debian's metapackage currently points at,
# downloads it with `apt-get download` (apt checks the archive signature and
# the .deb's hash), re-checks the .deb's SHA256 against the Packages entry,
# unpacks it with `dpkg -x` and records a manifest of every file.
# On x86_64 it also extracts the ELF vmlinux (with the Xen PVH note) from the
# bzImage, by reading the boot-protocol header and the compression magic.
#
# Idempotent: when .zvisor-assets/<arch>/MANIFEST.sha256 exists, a run only
# verifies it (no network). --refresh looks the current version up again.
#
# Layout (paths other tools rely on):
#   .zvisor-assets/<arch>/kernel.env      PKG= VERSION= KVER= DEB_SHA256=
#   .zvisor-assets/<arch>/vmlinuz         the kernel image as Debian ships it
#   .zvisor-assets/<arch>/vmlinux         x86_64 only: ELF with PVH entry
#   .zvisor-assets/<arch>/modules/        lib/modules/<KVER> of the package
#   .zvisor-assets/<arch>/root/           the whole dpkg -x tree
#   .zvisor-assets/busybox/<arch>/busybox the static busybox of Debian's
#                                         busybox-static for <arch> (the
#                                         userland of test guests and of the
#                                         containers' rootfs inside them),
#                                         with busybox.env and its manifest
#
# Environment: ZVISOR_ASSETS (default <repo>/.zvisor-assets),
#   ZVISOR_KERNEL_META_<arch> metapackage to follow (default
#   linux-image-cloud-amd64 / linux-image-arm64 / linux-image-s390x),
#   ZVISOR_DEBIAN_MIRROR (default http://deb.debian.org).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ASSETS=${ZVISOR_ASSETS:-$ROOT/.zvisor-assets}
MIRROR=${ZVISOR_DEBIAN_MIRROR:-http://deb.debian.org}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
REFRESH=0

die() { echo "assets: error: $*" >&2; exit 1; }
log() { echo "assets: $*" >&2; }

# Maps any common spelling of an architecture to "rust-name debian-name".
arch_names() {
    case "$1" in
        x86_64 | amd64) echo "x86_64 amd64" ;;
        aarch64 | arm64) echo "aarch64 arm64" ;;
        s390x) echo "s390x s390x" ;;
        *) die "unknown architecture '$1' (want x86_64, aarch64 or s390x)" ;;
    esac
}

default_meta() {
    case "$1" in
        amd64) echo "${ZVISOR_KERNEL_META_x86_64:-linux-image-cloud-amd64}" ;;
        arm64) echo "${ZVISOR_KERNEL_META_aarch64:-linux-image-arm64}" ;;
        s390x) echo "${ZVISOR_KERNEL_META_s390x:-linux-image-s390x}" ;;
    esac
}

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (install: $2)"; }

# Little-endian unsigned integer of N bytes at OFFSET in FILE.
le_uint() {
    local file=$1 off=$2 n=$3 v=0 i b
    local -a bytes
    read -r -a bytes < <(od -An -v -t u1 -j "$off" -N "$n" "$file" 2>/dev/null | tr -s ' \n' ' ')
    [ "${#bytes[@]}" -eq "$n" ] || die "$file: short read at offset $off"
    for ((i = n - 1; i >= 0; i--)); do
        b=${bytes[$i]}
        v=$((v * 256 + b))
    done
    echo "$v"
}

hex_at() { od -An -v -t x1 -j "$2" -N "$3" "$1" 2>/dev/null | tr -d ' \n'; }

# Extracts the ELF vmlinux from an x86 bzImage: the boot protocol header
# (>= 2.08) gives payload_offset/payload_length; the compression is detected
# from the payload's magic bytes.
extract_vmlinux() {
    local bz=$1 out=$2
    [ "$(hex_at "$bz" 0x202 4)" = "48647253" ] || die "$bz: no 'HdrS' boot header"
    local proto setup_sects off len magic
    proto=$(le_uint "$bz" $((0x206)) 2)
    [ "$proto" -ge $((0x208)) ] || die "$bz: boot protocol $(printf %x "$proto") < 2.08 has no payload fields"
    setup_sects=$(le_uint "$bz" $((0x1f1)) 1)
    [ "$setup_sects" -ne 0 ] || setup_sects=4
    off=$(( (setup_sects + 1) * 512 + $(le_uint "$bz" $((0x248)) 4) ))
    len=$(le_uint "$bz" $((0x24c)) 4)
    [ "$len" -gt 0 ] || die "$bz: empty payload"
    magic=$(hex_at "$bz" "$off" 6)
    local -a cmd
    case "$magic" in
        1f8b*) cmd=(gzip -dc) ;;
        fd377a585a00) cmd=(xz -dc --single-stream) ;;
        02214c18*) cmd=(lz4 -dc) ;;
        28b52ffd*) cmd=(zstd -dcq) ;;
        425a68*) cmd=(bzip2 -dc) ;;
        5d0000*) cmd=(xz -dc --format=lzma) ;;
        *) die "$bz: unknown compression magic $magic at payload offset $(printf %#x "$off")" ;;
    esac
    log "vmlinux: payload at $(printf %#x "$off"), $len bytes, ${cmd[0]}"
    # The payload carries the decompressed size as 4 trailing bytes, which some
    # decompressors report as trailing garbage; the result is checked below.
    tail -c +$((off + 1)) "$bz" | head -c "$len" | "${cmd[@]}" >"$out.tmp" 2>/dev/null || true
    [ "$(hex_at "$out.tmp" 0 4)" = "7f454c46" ] || die "$bz: decompressed payload is not an ELF file"
    readelf -n "$out.tmp" | grep -A2 '^ *Xen' | grep -q '0x00000012' \
        || die "$bz: vmlinux has no Xen PVH entry note (type 0x12)"
    mv "$out.tmp" "$out"
}

apt_opts() {
    local d=$1 darch=$2
    echo "-q -oAPT::Architecture=$darch -oAPT::Architectures=$darch" \
        "-oDir::State::Lists=$d/lists -oDir::Cache=$d/cache -oDir::State::status=$d/status" \
        "-oDir::Etc::SourceList=$d/sources.list -oDir::Etc::SourceParts=$d/sources.list.d" \
        "-oDir::Etc::Preferences=$d/preferences -oDir::Etc::PreferencesParts=$d/preferences.d" \
        "-oAcquire::Languages=none"
}

# Creates the private apt state of an architecture and runs apt-get update
# in it; with FORCE=0 only when it has no package lists yet.
apt_prepare() {
    local rarch=$1 darch=$2 force=$3 apt=$ASSETS/apt/$1
    if [ "$force" = 0 ] && compgen -G "$apt/lists/*_Packages*" >/dev/null; then
        return 0
    fi
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$apt/preferences.d"
    : >"$apt/status"
    : >"$apt/preferences"
    cat >"$apt/sources.list" <<SRC
deb [signed-by=$KEYRING] $MIRROR/debian bookworm main
deb [signed-by=$KEYRING] $MIRROR/debian bookworm-updates main
deb [signed-by=$KEYRING] $MIRROR/debian-security bookworm-security main
SRC
    log "$rarch: apt-get update (private state in $apt)"
    # shellcheck disable=SC2086
    apt-get $(apt_opts "$apt" "$darch") update >"$apt/update.log" 2>&1 \
        || { cat "$apt/update.log" >&2; die "$rarch: apt-get update failed"; }
}

# Downloads one package of DARCH into DIR through the private apt state,
# re-checks its SHA256 against the Packages entry and prints "NAME VERSION SHA".
download_deb() {
    local rarch=$1 darch=$2 pkg=$3 dir=$4 apt=$ASSETS/apt/$1
    local o ver want deb sha
    o=$(apt_opts "$apt" "$darch")
    # shellcheck disable=SC2086
    ver=$(apt-cache $o policy "$pkg" | awk '/Candidate:/ {print $2}')
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "$rarch: no candidate for $pkg"
    # shellcheck disable=SC2086
    want=$(apt-cache $o show "$pkg=$ver" | sed -n 's/^SHA256: //p' | head -n1)
    [ -n "$want" ] || die "$rarch: no SHA256 for $pkg $ver in the Packages index"
    log "$rarch: apt-get download $pkg=$ver"
    # shellcheck disable=SC2086
    (cd "$dir" && apt-get $o download "$pkg=$ver" >"$apt/download.log" 2>&1) \
        || { cat "$apt/download.log" >&2; die "$rarch: download of $pkg failed"; }
    deb=$(cd "$dir" && find . -maxdepth 1 -name "${pkg}_*.deb" -printf '%f\n' | head -n1)
    [ -n "$deb" ] || die "$rarch: apt-get download left no ${pkg}_*.deb"
    sha=$(sha256sum "$dir/$deb" | cut -d' ' -f1)
    [ "$sha" = "$want" ] || die "$rarch: $deb sha256 $sha != Packages entry $want"
    echo "$deb $ver $sha"
}

# Debian's busybox-static for one architecture, unpacked to
# .zvisor-assets/busybox/<arch>/busybox (idempotent like the kernels).
fetch_busybox() {
    local rarch=$1 darch=$2
    local dir=$ASSETS/busybox/$rarch
    if [ "$REFRESH" = 0 ] && [ -f "$dir/MANIFEST.sha256" ]; then
        if verify_arch "$dir"; then
            # shellcheck disable=SC1091
            . "$dir/busybox.env"
            log "$rarch: busybox-static $VERSION verified"
            return 0
        fi
        die "$rarch: $dir/MANIFEST.sha256 does not verify; delete $dir (or run with --refresh)"
    fi
    apt_prepare "$rarch" "$darch" "$REFRESH"
    rm -rf "$dir"
    mkdir -p "$dir"
    local deb ver sha
    read -r deb ver sha < <(download_deb "$rarch" "$darch" busybox-static "$dir")
    [ -n "$sha" ] || die "$rarch: busybox-static download failed"
    dpkg -x "$dir/$deb" "$dir/root"
    [ -x "$dir/root/bin/busybox" ] || die "$rarch: busybox-static has no /bin/busybox"
    cp "$dir/root/bin/busybox" "$dir/busybox"
    rm -rf "$dir/root" "$dir/$deb"
    cat >"$dir/busybox.env" <<ENV
PKG=busybox-static
VERSION=$ver
DEB_SHA256=$sha
ENV
    (cd "$dir" && sha256sum busybox busybox.env >MANIFEST.sha256)
    log "$rarch: busybox-static $ver ready in $dir"
}

verify_arch() {
    local dir=$1
    [ -f "$dir/MANIFEST.sha256" ] || return 1
    (cd "$dir" && sha256sum --quiet --strict -c MANIFEST.sha256) >/dev/null 2>&1
}

fetch_arch() {
    local rarch=$1 darch=$2
    local dir=$ASSETS/$rarch apt=$ASSETS/apt/$rarch
    if [ "$REFRESH" = 0 ] && [ -f "$dir/MANIFEST.sha256" ]; then
        if verify_arch "$dir"; then
            # shellcheck disable=SC1091
            . "$dir/kernel.env"
            log "$rarch: $PKG $VERSION verified ($(wc -l <"$dir/MANIFEST.sha256") files)"
            return 0
        fi
        die "$rarch: $dir/MANIFEST.sha256 does not verify; delete $dir (or run with --refresh)"
    fi

    apt_prepare "$rarch" "$darch" 1
    local o meta cand pkg ver sha want deb
    o=$(apt_opts "$apt" "$darch")
    meta=$(default_meta "$darch")
    # shellcheck disable=SC2086
    cand=$(apt-cache $o policy "$meta" | awk '/Candidate:/ {print $2}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ] || die "$rarch: no candidate for $meta"
    # shellcheck disable=SC2086
    pkg=$(apt-cache $o show "$meta=$cand" | sed -n 's/^Depends: //p' | tr ',' '\n' \
        | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
    [ -n "$pkg" ] || die "$rarch: $meta $cand does not depend on a linux-image package"
    # shellcheck disable=SC2086
    ver=$(apt-cache $o policy "$pkg" | awk '/Candidate:/ {print $2}')
    # shellcheck disable=SC2086
    want=$(apt-cache $o show "$pkg=$ver" | sed -n 's/^SHA256: //p' | head -n1)
    [ -n "$want" ] || die "$rarch: no SHA256 for $pkg $ver in the Packages index"

    rm -rf "$dir"
    mkdir -p "$dir"
    log "$rarch: apt-get download $pkg=$ver"
    # shellcheck disable=SC2086
    (cd "$dir" && apt-get $o download "$pkg=$ver" >"$apt/download.log" 2>&1) \
        || { cat "$apt/download.log" >&2; die "$rarch: download of $pkg failed"; }
    deb=$(cd "$dir" && find . -maxdepth 1 -name '*.deb' -printf '%f\n' | head -n1)
    sha=$(sha256sum "$dir/$deb" | cut -d' ' -f1)
    [ "$sha" = "$want" ] || die "$rarch: $deb sha256 $sha != Packages entry $want"
    mv "$dir/$deb" "$dir/linux-image.deb"

    log "$rarch: dpkg -x"
    dpkg -x "$dir/linux-image.deb" "$dir/root"
    local kver
    kver=$(cd "$dir/root/lib/modules" && find . -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n1)
    [ -n "$kver" ] || die "$rarch: package has no lib/modules/<version>"
    local img
    img=$(cd "$dir/root/boot" && find . -maxdepth 1 -type f \( -name 'vmlinuz-*' -o -name 'vmlinux-*' \) -printf '%f\n' | head -n1)
    [ -n "$img" ] || die "$rarch: package has no boot/vmlinuz-*"
    ln -s "root/boot/$img" "$dir/vmlinuz"
    ln -s "root/lib/modules/$kver" "$dir/modules"
    if [ "$rarch" = x86_64 ]; then
        extract_vmlinux "$dir/root/boot/$img" "$dir/vmlinux"
    fi
    cat >"$dir/kernel.env" <<ENV
PKG=$pkg
VERSION=$ver
KVER=$kver
DEB_SHA256=$sha
ENV
    (cd "$dir" && find . -type f ! -name 'MANIFEST.sha256*' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum >MANIFEST.sha256.tmp && mv MANIFEST.sha256.tmp MANIFEST.sha256)
    log "$rarch: $pkg $ver ($kver) ready in $dir"
}

main() {
    local -a arches=()
    if [ "${1:-}" = --extract-vmlinux ]; then
        [ "$#" -eq 3 ] || die "usage: $0 --extract-vmlinux BZIMAGE OUT"
        need readelf binutils; need lz4 lz4; need xz xz-utils; need zstd zstd
        [ -f "$2" ] || die "$2: no such file"
        extract_vmlinux "$2" "$3"
        return 0
    fi
    for a in "$@"; do
        case "$a" in
            --refresh) REFRESH=1 ;;
            -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option '$a'" ;;
            *) arches+=("$a") ;;
        esac
    done
    [ "${#arches[@]}" -gt 0 ] || arches=(x86_64 aarch64 s390x)
    need apt-get apt; need dpkg dpkg; need sha256sum coreutils; need od coreutils
    need readelf binutils; need lz4 lz4; need xz xz-utils; need zstd zstd
    [ -f "$KEYRING" ] || die "$KEYRING missing (install: debian-archive-keyring)"
    mkdir -p "$ASSETS"
    exec 9>"$ASSETS/.lock"
    flock 9
    local names
    for a in "${arches[@]}"; do
        names=$(arch_names "$a")
        # shellcheck disable=SC2086
        fetch_arch $names
        # shellcheck disable=SC2086
        fetch_busybox $names
    done
}

main "$@"
