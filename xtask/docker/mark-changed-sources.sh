#!/bin/sh
# Makes cargo's freshness check follow file contents, not the mtimes COPY leaves.
#
# The Dockerfile's build stage keeps cargo's target directory in a cache mount between
# builds, and cargo decides whether a workspace crate is stale by comparing its source files'
# mtimes with those of its last compile. What mtime `COPY . .` gives a file is not something
# to rely on (BuildKit may keep the build context's, a checkout gives every file the time of
# the checkout, a reproducible build normalises them): too old and cargo would reuse a stale
# crate and ship the previous binary; too new and every crate recompiles. So: every source
# file gets the oldest mtime (1 s after the epoch), then the files whose content differs
# from the last finished build's (or that are new) get the current time. The sha256 list of
# the sources is kept in the cache mount beside the target directory.
#
#   mark-changed-sources.sh <list>    before `cargo build`, in the workspace root
#   mark-changed-sources.sh --save <list>    after a successful build
set -eu
if [ "$1" = "--save" ]; then
    mv "$2.next" "$2"
    exit 0
fi
list="$1"
# Without the list of a build that finished (the first build with this script over an older
# cache, or one after a failed or cancelled build, whose half-compiled crates are in the
# cache but whose list was never saved), nothing says which crates are current: every file
# is "changed", and cargo recompiles the workspace's crates (not the dependencies).
trusted=yes
if [ ! -f "$list" ] || [ -f "$list.next" ]; then
    trusted=no
fi
find . -path ./target -prune -o -type f -print0 | sort -z | xargs -0 sha256sum > "$list.next"
if [ "$trusted" = no ]; then
    find . -path ./target -prune -o -type f -print0 | xargs -0 touch -h
    exit 0
fi
find . -path ./target -prune -o -type f -print0 | xargs -0 touch -h -d @1
# `sha256sum` lines are 64 hex digits, two spaces and the path.
grep -Fxv -f "$list" "$list.next" | cut -c67- | tr '\n' '\0' | xargs -0 -r touch -h
