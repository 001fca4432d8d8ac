#!/usr/bin/env bash
# Copy the browser libraries pinned in package.json / package-lock.json into
# site/static/vendor/, where they are committed: the demo and the servers need no npm.
# Run after changing a version: `npm ci && bash infra/vendor-static.sh` (or `npm run vendor`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules/hls.js ]; then
    npm ci --no-audit --no-fund --ignore-scripts
fi

version=$(node -p 'require("./node_modules/hls.js/package.json").version')
pinned=$(node -p 'require("./package.json").dependencies["hls.js"]')
if [ "$version" != "$pinned" ]; then
    echo "node_modules has hls.js $version but package.json pins $pinned: run npm ci" >&2
    exit 1
fi

target=site/static/vendor/hls.js
rm -rf "$target"
mkdir -p "$target"
# Without its source map (2.7 MB): drop the comment naming it, or collectstatic's
# manifest storage fails looking for the map.
sed '/^\/\/# sourceMappingURL=/d' node_modules/hls.js/dist/hls.min.js > "$target/hls.min.js"
cp node_modules/hls.js/LICENSE "$target/LICENSE"
printf 'hls.js %s (npm): dist/hls.min.js without its sourceMappingURL line, and LICENSE.\nCopied by infra/vendor-static.sh.\n' \
    "$version" > "$target/VERSION"
echo "site/static/vendor/hls.js: hls.js $version"
