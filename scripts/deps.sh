#!/usr/bin/env bash
# Installs what the build needs on Debian 12, only when something is missing.
#   bash scripts/deps.sh                       the build's packages (an error when they cannot be had)
#   bash scripts/deps.sh --optional P1 P2...   extra packages, installed when possible; a warning otherwise
set -euo pipefail
optional=0
if [ "${1:-}" = "--optional" ]; then
  optional=1
  shift
  packages=("$@")
else
  packages=(cmake g++ make libeigen3-dev catch2 libbenchmark-dev libomp-dev zlib1g-dev
            nlohmann-json3-dev libcli11-dev libopenblas0-pthread)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get > /dev/null; then
  if [ $optional -eq 1 ]; then
    echo "note: not installed (optional): ${missing[*]}; install them as root with apt-get install -y ${missing[*]}" >&2
    exit 0
  fi
  echo "curvature needs these Debian packages: ${missing[*]}" >&2
  echo "install them (as root) with: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [ $optional -eq 1 ]; then
  apt-get update -q > /dev/null || true
  for p in "${missing[@]}"; do
    apt-get install -y -q --no-install-recommends "$p" > /dev/null || echo "note: could not install $p (optional)" >&2
  done
  exit 0
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
