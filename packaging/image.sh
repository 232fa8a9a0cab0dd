#!/usr/bin/env bash
# The brisk container image: FROM scratch with the binary, the shared libraries
# it and libpq.so.5 need (as ldd names them, with the dynamic loader), CA
# certificates, a non-root account and /data for SQLite.
#
#   packaging/image.sh --binary build/brisk --tag localhost/brisk:0.1.0
#       stage the files and build the image with buildah (no daemon, no pulls);
#       prints the image's size, uncompressed and as gzip-compressed layers
#   packaging/image.sh --binary build/brisk --rootfs DIR
#       only stage the file tree into DIR (packaging/Containerfile copies it)
#   --no-pq   leave out libpq.so.5 and its dependencies: a SQLite-only image
#
# Reproducible as far as buildah allows: every file and the image get the
# timestamp 0 (--timestamp 0), files are owned by root (or the account, for
# /data), the file list is sorted. `make image` runs this.
set -euo pipefail

BRISK_UID=10001 # the account the container serves as (not root, not a host account)
binary="" tag="" rootfs="" with_pq=1
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    --rootfs) rootfs="$2"; shift ;;
    --no-pq) with_pq=0 ;;
    *) echo "usage: $0 --binary PATH (--tag NAME | --rootfs DIR) [--no-pq]" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$binary" ] || { [ -z "$tag" ] && [ -z "$rootfs" ]; }; then
    echo "usage: $0 --binary PATH (--tag NAME | --rootfs DIR) [--no-pq]" >&2
    exit 2
fi
[ -x "$binary" ] || { echo "image: $binary is not an executable (make first)" >&2; exit 1; }

# The shared objects ldd lists for each argument: "name => /path (addr)" and the
# loader's "/lib64/ld-linux-x86-64.so.2 (addr)"; not the vDSO, nor the "file:" headers
# ldd prints for several arguments.
needed_libs() {
    ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u
}

stage() {
    local root="$1"
    mkdir -p "$root"/{usr/bin,etc/ssl/certs,data,tmp}
    chmod 0755 "$root" "$root/usr" "$root/usr/bin" "$root/etc"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/data"
    if command -v strip >/dev/null; then
        strip --strip-unneeded -o "$root/usr/bin/brisk" "$binary"
    else
        cp "$binary" "$root/usr/bin/brisk"
    fi
    chmod 0755 "$root/usr/bin/brisk"

    local objs=("$binary")
    if [ "$with_pq" = 1 ]; then
        # libpq.so.5 for dlopen (src/db/pq_load.c): beside the libc the binary uses,
        # which is where the loader of the image searches
        local libdir pq
        libdir=$(dirname "$(needed_libs "$binary" | grep '/libc\.so\.6$')")
        pq="$libdir/libpq.so.5"
        [ -e "$pq" ] || { echo "image: $pq not found (apt-get install libpq5, or --no-pq)" >&2; exit 1; }
        objs+=("$pq")
        mkdir -p "$root$(dirname "$pq")"
        cp -L "$pq" "$root$pq"
    fi
    local lib
    while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib" # the file itself under the name the loader looks for
    done < <(needed_libs "${objs[@]}")
    chmod -R u=rwX,go=rX "$root/lib"* "$root/usr/lib" 2>/dev/null || true

    # libpq verifies servers against sslrootcert=/etc/ssl/certs/ca-certificates.crt
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nbrisk:x:%s:%s:brisk:/data:/sbin/nologin\n' \
        "$BRISK_UID" "$BRISK_UID" > "$root/etc/passwd"
    printf 'root:x:0:\nbrisk:x:%s:\n' "$BRISK_UID" > "$root/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
    chmod 0644 "$root"/etc/{passwd,group,nsswitch.conf} "$root/etc/ssl/certs/ca-certificates.crt"
}

if [ -n "$rootfs" ]; then
    stage "$rootfs"
    exit 0
fi

command -v buildah >/dev/null || { echo "image: buildah is missing (apt-get install buildah)" >&2; exit 1; }
work=$(mktemp -d /tmp/brisk-image-XXXXXX)
ctr=""
cleanup() {
    [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
stage "$work/root"
version=$("$binary" --version | awk '{ print $2 }')

ctr=$(buildah from --name "brisk-image-$$" scratch)
# /data last, as the account's: the volume podman and Kubernetes create from it
buildah copy --quiet --chown 0:0 "$ctr" "$work/root" / >/dev/null
# start out writable by the non-root user (a directory's contents are copied, so
# copy the one holding data/ to have data/ itself owned)
mkdir -m 0755 "$work/vol" && mkdir -m 0700 "$work/vol/data"
buildah copy --quiet --chown "$BRISK_UID:$BRISK_UID" "$ctr" "$work/vol" / >/dev/null
buildah config \
    --user "$BRISK_UID:$BRISK_UID" \
    --workingdir /data \
    --volume /data \
    --port 8080/tcp \
    --env BRISK_ADDR=0.0.0.0:8080 \
    --env BRISK_DATABASE_URL=sqlite:/data/brisk.db \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --entrypoint '["/usr/bin/brisk"]' \
    --cmd serve \
    --stop-signal SIGTERM \
    --os linux \
    --created-by "packaging/image.sh" \
    --label org.opencontainers.image.title=brisk \
    --label "org.opencontainers.image.version=$version" \
    --label org.opencontainers.image.description="users and orders HTTP/1.1 JSON API" \
    "$ctr"
buildah commit --quiet --rm --timestamp 0 --identity-label=false --format oci "$ctr" "$tag" >/dev/null
ctr=""

# Size: the layer as stored (uncompressed) and as a registry would hold it (gzip)
uncompressed=$(du -sb --apparent-size "$work/root" | awk '{ print $1 }')
buildah push --quiet "$tag" "oci-archive:$work/image.tar" >/dev/null
compressed=$(tar -tvf "$work/image.tar" | awk '{ s += $3 } END { print s }')
id=$(buildah inspect --type image --format '{{.FromImageID}}' "$tag")
awk -v t="$tag" -v id="${id#sha256:}" -v u="$uncompressed" -v c="$compressed" 'BEGIN {
    printf "image %s (%.12s): %d bytes of files (%.1f MB), %d bytes as gzip layers (%.1f MB)\n",
        t, id, u, u / 1e6, c, c / 1e6 }'
