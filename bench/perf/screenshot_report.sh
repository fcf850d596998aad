#!/usr/bin/env bash
# Render `diffbench report` as HTML and take a screenshot of it in headless Chromium, to check by eye
# that the page reads well (the table wraps to the page width, the figure is embedded, links exist).
#
# Usage:
#   bench/scripts/screenshot_report.sh [RESULTS_DIR] [OUT_DIR] [WIDTHxHEIGHT] [-- extra `diffbench report` flags]
#   bench/scripts/screenshot_report.sh results /tmp/shots 1280x2000 -- --vs dkd --ui-url http://127.0.0.1:5000
#
# Writes OUT_DIR/report.html and OUT_DIR/report.png. Needs Chromium (Debian: apt-get install -y chromium).
# The flags below keep Chromium off the network and away from the user's profile; --no-sandbox is only
# needed when running as root (containers, CI).
set -euo pipefail

results=${1:-results}
out=${2:-/tmp/diffbench-report-shot}
size=${3:-1280x2000}
shift $(( $# < 3 ? $# : 3 ))
[[ ${1:-} == "--" ]] && shift

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z $browser ]]; then
    echo "error: no Chromium found (Debian: apt-get install -y chromium)" >&2
    exit 2
fi

mkdir -p "$out"
diffbench report --output "$results" --out "$out/report.html" "$@"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
sandbox=()
[[ $(id -u) == 0 ]] && sandbox=(--no-sandbox)
"$browser" --headless "${sandbox[@]}" --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" \
    --window-size="${size/x/,}" --screenshot="$out/report.png" "file://$(realpath "$out/report.html")" \
    >/dev/null 2>&1
echo "screenshot: $out/report.png"
