#!/usr/bin/env bash
# Build the local systemd base image for the lab containers (no registry is needed or used).
# Usage: scripts/build-image.sh [IMAGE]   (default: pi-lab/debian:bookworm; rebuild with FORCE=1)
set -euo pipefail

image="${1:-${PI_LAB_IMAGE:-pi-lab/debian:bookworm}}"
suite="${PI_LAB_SUITE:-bookworm}"
packages="python3,python3-apt,python3-packaging,python3-venv,systemd,systemd-sysv,dbus,sudo,ca-certificates,iproute2,procps,nftables"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "image $image already present (FORCE=1 rebuilds it)"
  exit 0
fi

rootfs="$(mktemp -d /var/tmp/pi-lab-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $suite into $rootfs ..."
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"

# Trust the same extra CA certificates as the host (TLS to package mirrors may be re-signed).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list" 2>/dev/null || true
# Units that make no sense in a container.
for unit in systemd-firstboot.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-remount-fs.service getty@tty1.service console-getty.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
: >"$rootfs/etc/machine-id"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*

echo "docker import -> $image"
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' - "$image" >/dev/null
docker image ls "$image"
