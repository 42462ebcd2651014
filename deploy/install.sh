#!/usr/bin/env bash
# Installs isopath as a systemd service: the binaries, the unit, a sample configuration (kept if
# one exists), the host-setup notes, and a system user and group `isopath` (the group owns the
# control socket: add operators to it). Every file, directory, user and group it creates is
# recorded in a manifest, so deploy/uninstall.sh removes exactly that and nothing else.
#
#   deploy/install.sh [--prefix DIR] [--sysconfdir DIR] [--destdir DIR] [--from DIR]
#                     [--housekeeping CPUS] [--no-user]
#
#   --prefix       where binaries, unit and docs go (default /usr/local)
#   --sysconfdir   where isopath/isopath.toml goes (default /etc)
#   --destdir      stage everything under this directory (also $DESTDIR): paths inside the
#                  files stay those of the final system; users and groups go into
#                  DESTDIR/etc/{passwd,group,shadow,gshadow} (useradd --prefix)
#   --from         directory holding the built isopathd and isopath (default target/release)
#   --housekeeping CPUAffinity= of the service (default 0): the cores that are not workers
#   --no-user      do not create the isopath user and group
#
# It does not enable or start the service; with systemd running and no DESTDIR it reloads the
# unit files. Exit status 0 on success, 1 on any error (nothing is left half-installed: a
# failure removes what this run created).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
prefix=/usr/local
sysconfdir=/etc
destdir=${DESTDIR:-}
from=$repo/target/release
housekeeping=0
make_user=1

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --sysconfdir) sysconfdir=${2:?--sysconfdir needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --from) from=${2:?--from needs a directory}; shift 2 ;;
        --housekeeping) housekeeping=${2:?--housekeeping needs a CPU list}; shift 2 ;;
        --no-user) make_user=0; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $prefix in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
case $sysconfdir in /*) ;; *) die "--sysconfdir must be absolute: $sysconfdir" ;; esac
[[ $housekeeping =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] \
    || die "--housekeeping must be a CPU list such as 0 or 0-1,4: $housekeeping"
for b in isopathd isopath; do
    [ -x "$from/$b" ] || die "$from/$b not found: build it first (cargo build --release -p isopath-control) or pass --from"
done
if [ -n "$destdir" ]; then
    mkdir -p "$destdir"
    destdir=$(cd "$destdir" && pwd)
fi

sbindir=$prefix/sbin
bindir=$prefix/bin
unitdir=$prefix/lib/systemd/system
docdir=$prefix/share/doc/isopath
datadir=$prefix/share/isopath
manifest=$datadir/install-manifest
D() { printf '%s%s' "$destdir" "$1"; }

[ -e "$(D "$manifest")" ] && die "already installed ($(D "$manifest") exists): run deploy/uninstall.sh first"

# Everything created is appended to this list, in order; it becomes the manifest.
record=()
rollback() {
    local i entry kind path backups_made=()
    for ((i = ${#record[@]} - 1; i >= 0; i--)); do
        entry=${record[$i]}
        kind=${entry%% *}
        path=${entry#* }
        case $kind in
            file) rm -f "$(D "${path% *}")" ;;
            backup) backups_made+=("$path") ;;
            dir) rmdir "$(D "$path")" 2>/dev/null || true ;;
            user) userdel ${destdir:+--prefix "$destdir"} "$path" 2>/dev/null || true ;;
            group) groupdel ${destdir:+--prefix "$destdir"} "$path" 2>/dev/null || true ;;
        esac
    done
    # After userdel and groupdel, which rewrite them.
    for path in "${backups_made[@]}"; do rm -f "$(D "$path")"; done
}
tmp=$(mktemp -d)
trap 'status=$?; rm -rf "$tmp"; if [ $status -ne 0 ]; then echo "install.sh: failed; removing what was installed" >&2; rollback; fi' EXIT

# mkdir -p, recording each directory it creates.
mkdirs() {
    local d=$1 missing=()
    while [ ! -d "$(D "$d")" ]; do
        missing=("$d" "${missing[@]}")
        d=$(dirname "$d")
    done
    for d in "${missing[@]}"; do
        mkdir -m 0755 "$(D "$d")"
        record+=("dir $d")
    done
}

# Installs SRC at DST (a path on the final system) with MODE, recording its checksum.
place() {
    local src=$1 dst=$2 mode=$3
    mkdirs "$(dirname "$dst")"
    install -m "$mode" "$src" "$(D "$dst")"
    record+=("file $dst $(sha256sum "$(D "$dst")" | cut -d' ' -f1)")
}

place "$from/isopathd" "$sbindir/isopathd" 0755
place "$from/isopath" "$bindir/isopath" 0755

sed -e "s|@SBINDIR@|$sbindir|g" -e "s|@SYSCONFDIR@|$sysconfdir|g" \
    -e "s|@DOCDIR@|$docdir|g" -e "s|@HOUSEKEEPING@|$housekeeping|g" \
    "$here/isopath.service" > "$tmp/isopath.service"
grep -q '@[A-Z]*@' "$tmp/isopath.service" && die "unit template has an unknown @PLACEHOLDER@"
place "$tmp/isopath.service" "$unitdir/isopath.service" 0644
place "$here/README.md" "$docdir/README.md" 0644

# The configuration is the operator's: an existing one is left alone (and not recorded).
if [ -e "$(D "$sysconfdir/isopath/isopath.toml")" ]; then
    echo "install.sh: keeping the existing $sysconfdir/isopath/isopath.toml" >&2
else
    place "$here/isopath.toml" "$sysconfdir/isopath/isopath.toml" 0644
fi

if [ "$make_user" = 1 ]; then
    if [ -n "$destdir" ]; then
        [ -f "$destdir/etc/passwd" ] && [ -f "$destdir/etc/group" ] \
            || die "$destdir/etc/passwd and etc/group are needed to add the isopath user there (or pass --no-user)"
    fi
    pfx=(${destdir:+--prefix "$destdir"})
    # useradd and groupadd keep the previous databases as passwd-, group-, shadow-, gshadow-;
    # the ones that did not exist before are ours to remove.
    backups=()
    for f in passwd group shadow gshadow; do
        [ -e "$(D "/etc/$f-")" ] || backups+=("/etc/$f-")
    done
    if ! grep -q '^isopath:' "$(D /etc/group)"; then
        groupadd --system "${pfx[@]}" isopath
        record+=("group isopath")
    fi
    # Members of isopath-admin may change the running daemon and read flows over the
    # netlink-format socket (root always may); members of isopath only read.
    if ! grep -q '^isopath-admin:' "$(D /etc/group)"; then
        groupadd --system "${pfx[@]}" isopath-admin
        record+=("group isopath-admin")
    fi
    if ! grep -q '^isopath:' "$(D /etc/passwd)"; then
        useradd --system "${pfx[@]}" --gid isopath --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin \
            --comment "isopath datapath daemon" isopath
        record+=("user isopath")
    fi
    for f in "${backups[@]}"; do
        [ -e "$(D "$f")" ] && record+=("backup $f")
    done
fi

mkdirs "$datadir"
{
    echo "# isopath install manifest: deploy/uninstall.sh removes exactly these, last first."
    echo "# prefix=$prefix sysconfdir=$sysconfdir"
    printf '%s\n' "${record[@]}"
} > "$tmp/manifest"
install -m 0644 "$tmp/manifest" "$(D "$manifest")"

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || echo "install.sh: systemctl daemon-reload failed; run it by hand" >&2
fi
echo "install.sh: installed under ${destdir:-/} (prefix $prefix); manifest $manifest"
echo "install.sh: next: edit $sysconfdir/isopath/isopath.toml, run 'isopath doctor -c $sysconfdir/isopath/isopath.toml', then 'systemctl enable --now isopath'"
