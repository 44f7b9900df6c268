#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when missing.
# As root it runs apt-get; otherwise it prints the exact command and stops.
set -euo pipefail
PKGS="mosquitto mosquitto-clients swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config python3-gpg python3-venv"
missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "ztfl: missing system packages:$missing" >&2
  echo "ztfl: install them with: sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi
echo "ztfl: installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
