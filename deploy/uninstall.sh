#!/usr/bin/env bash
# Removes what deploy/install.sh installed, exactly: the entries of its manifest, last first.
#
#   deploy/uninstall.sh [--prefix DIR] [--destdir DIR] [--keep-config]
#
#   --prefix       the prefix given to install.sh (default /usr/local): the manifest is
#                  PREFIX/share/isopath/install-manifest
#   --destdir      the staging directory given to install.sh (also $DESTDIR)
#   --keep-config  leave the configuration file even if it is unchanged
#
# A file changed since it was installed (an edited configuration) is kept and named; a
# directory is removed only if empty; the isopath user and group go only if install.sh created
# them (and so do the shadow-utils backups passwd- group- shadow- gshadow- if it created those). With systemd running and no DESTDIR, the service is stopped and disabled first.
# Exit status 0 when everything recorded was removed or deliberately kept, 1 on an error.
set -euo pipefail

prefix=/usr/local
destdir=${DESTDIR:-}
keep_config=0

die() { echo "uninstall.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --keep-config) keep_config=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if [ -n "$destdir" ]; then
    [ -d "$destdir" ] || die "$destdir does not exist"
    destdir=$(cd "$destdir" && pwd)
fi
D() { printf '%s%s' "$destdir" "$1"; }
manifest=$prefix/share/isopath/install-manifest
[ -f "$(D "$manifest")" ] || die "no manifest at $(D "$manifest"): nothing installed with this prefix and destdir"

if [ -z "$destdir" ] && [ -d /run/systemd/system ] && systemctl cat isopath.service >/dev/null 2>&1; then
    systemctl disable --now isopath.service || echo "uninstall.sh: could not stop isopath.service" >&2
fi

mapfile -t entries < <(grep -v '^#' "$(D "$manifest")" | grep -v '^$')
kept=0
backups=()
# The manifest itself is not among its entries; it goes before its directory does.
rm -f "$(D "$manifest")"
for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
    read -r kind path sum <<<"${entries[$i]}"
    case $kind in
        file)
            f=$(D "$path")
            if [ ! -e "$f" ]; then
                echo "uninstall.sh: $path already gone" >&2
            elif [ "$keep_config" = 1 ] && [[ $path == */isopath/isopath.toml ]]; then
                echo "uninstall.sh: keeping $path (--keep-config)" >&2
                kept=1
            elif [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$sum" ]; then
                echo "uninstall.sh: keeping $path: changed since it was installed" >&2
                kept=1
            else
                rm -f "$f"
            fi
            ;;
        dir)
            if [ -d "$(D "$path")" ] && ! rmdir "$(D "$path")" 2>/dev/null; then
                echo "uninstall.sh: keeping $path: not empty" >&2
                kept=1
            fi
            ;;
        user)
            userdel ${destdir:+--prefix "$destdir"} "$path" || die "userdel $path failed"
            ;;
        group)
            groupdel ${destdir:+--prefix "$destdir"} "$path" || die "groupdel $path failed"
            ;;
        backup)
            # A shadow-utils backup (passwd- ...) that install.sh's useradd created: removed
            # below, after userdel and groupdel have rewritten it.
            backups+=("$path")
            ;;
        *)
            die "unknown manifest entry: ${entries[$i]}"
            ;;
    esac
done

for path in "${backups[@]}"; do
    rm -f "$(D "$path")"
done

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$kept" = 1 ]; then
    echo "uninstall.sh: removed what install.sh placed, except the files named above"
else
    echo "uninstall.sh: removed everything install.sh placed"
fi
