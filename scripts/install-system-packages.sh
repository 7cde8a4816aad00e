#!/usr/bin/env bash
# Debian packages the Qt viewer tests need: an X server (Xvfb) with Mesa software OpenGL.
# (QT_QPA_PLATFORM=offscreen has no OpenGL, so napari's canvas cannot host image layers.)
set -euo pipefail
packages=(xvfb xauth libgl1 libegl1 libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
          libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
          libxcb-shape0 libxcb-cursor0)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "system packages: all present"; exit 0; }
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "system packages: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
