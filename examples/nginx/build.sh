#!/usr/bin/env bash
# Builds an nginx image from Debian packages: a minbase Debian rootfs with
# nginx-light (debootstrap), written as a `docker save` tarball that
# `berth image import` reads. Usage: build.sh OUT.tar [NAME:TAG]
# Needs root and debootstrap; reaches the Debian mirror apt uses.
set -euo pipefail
out=${1:?usage: build.sh OUT.tar [NAME:TAG]}
name=${2:-nginx:latest}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d /tmp/berth-nginx-XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "debootstrap --variant=minbase --include=nginx-light $suite ($mirror)" >&2
debootstrap --variant=minbase --include=nginx-light "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -5 "$work/debootstrap.log" >&2
  exit 1
}
# Smaller and container-shaped: no apt lists or caches; logs to the
# container's stdout/stderr; a page that says where it comes from.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
ln -sf /dev/stdout "$rootfs/var/log/nginx/access.log"
ln -sf /dev/stderr "$rootfs/var/log/nginx/error.log"
echo "<h1>nginx in a berth container</h1>" >"$rootfs/var/www/html/index.html"

# The docker-save layout: one layer, a config, a manifest.
img=$work/image
mkdir -p "$img"
tar --numeric-owner --xattrs -C "$rootfs" -cf "$img/layer.tar" .
diff_id=$(sha256sum "$img/layer.tar" | cut -d' ' -f1)
cat >"$img/config.json" <<JSON
{"architecture":"amd64","os":"linux",
 "config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
  "Cmd":["nginx","-g","daemon off;"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
cfg=$(sha256sum "$img/config.json" | cut -d' ' -f1)
mv "$img/config.json" "$img/$cfg.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$cfg" "$name" >"$img/manifest.json"
tar -C "$img" -cf "$out" .
echo "$out: $name ($(du -h "$out" | cut -f1))" >&2
