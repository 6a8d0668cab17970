#!/usr/bin/env bash
# Debian packages loraclf's tests and toolbox read: WordNet for `augment --method synonym|eda` (read offline,
# no nltk.download) and Chromium for the headless check of the HTML report. Installs only what is missing.
set -euo pipefail
want=(wordnet-base wordnet-sense-index chromium)
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
