#!/bin/sh
# Puts the latest `mmbench run` into the README: the block between the
# mmbench-run markers of DIR/report.md replaces the README's block, and the
# run's files (plots, report.md, results.json, results.csv, meta.json) are
# copied to docs/results/. DIR is the run's --out directory.
#
#   mmbench run --quick --out /tmp/run && scripts/update-results.sh /tmp/run
set -eu
if [ $# -ne 1 ] || [ ! -f "$1/report.md" ]; then
  echo "usage: scripts/update-results.sh DIR (the --out DIR of a finished mmbench run)" >&2
  exit 2
fi
dir=$1
root=$(cd "$(dirname "$0")/.." && pwd)
begin='<!-- mmbench-run:begin -->'
end='<!-- mmbench-run:end -->'
block=$(mktemp)
trap 'rm -f "$block" "$root/README.md.new"' EXIT

sed -n "/$begin/,/$end/p" "$dir/report.md" >"$block"
if [ ! -s "$block" ]; then
  echo "update-results: $dir/report.md has no mmbench-run block" >&2
  exit 1
fi
if ! grep -q "$begin" "$root/README.md"; then
  echo "update-results: README.md has no $begin marker to replace" >&2
  exit 1
fi
mkdir -p "$root/docs/results"
rm -f "$root"/docs/results/*.png
for f in "$dir"/*.png "$dir/report.md" "$dir/results.json" "$dir/results.csv" "$dir/meta.json"; do
  [ -f "$f" ] && cp "$f" "$root/docs/results/"
done
awk -v f="$block" -v b="$begin" -v e="$end" '
  $0 == b { while ((getline line < f) > 0) print line; skip = 1; next }
  $0 == e { skip = 0; next }
  !skip { print }' "$root/README.md" >"$root/README.md.new"
mv "$root/README.md.new" "$root/README.md"
echo "README.md and docs/results/ updated from $dir"
