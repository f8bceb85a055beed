#!/usr/bin/env bash
# The Debian packages the checks need beyond Python, installed when missing:
#   test   systemd-analyze (the unit checks), zsh and fish (the completion tests), chromium
#          and chromium-driver (the dashboard's browser tests, headless)
#   image  podman and runc (build and run the container image), mmdebstrap (its base image,
#          made from Debian's packages: this machine reaches no container registry)
# Usage: scripts/install-tools.sh test|image ...   (apt-get, so root; says what it installs)
set -euo pipefail

packages=()
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || packages+=("$2")
}
for group in "$@"; do
  case "$group" in
    test)
      need systemd-analyze systemd; need zsh zsh; need fish fish
      need chromium chromium; need chromedriver chromium-driver ;;
    image) need podman podman; need runc runc; need mmdebstrap mmdebstrap ;;
    *) echo "install-tools: unknown group '$group' (test, image)" >&2; exit 2 ;;
  esac
done
[ ${#packages[@]} -eq 0 ] && exit 0

echo "install-tools: installing ${packages[*]} from Debian's packages (apt-get)" >&2
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tools: cannot install them here (needs root and apt-get); install" \
    "${packages[*]} and run again" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
