#!/bin/sh
# Runs the dashboard's end-to-end browser tests (web/e2e) with Debian's
# Chromium against a real `tether serve --demo`. It expects bin/tether
# built with the dashboard (make build) and web/node_modules installed
# (cd web && npm ci). Without /usr/bin/chromium (or $CHROMIUM_PATH) the
# tests skip with a message naming the package, unless CI is set, where
# they fail. Screenshots land in web/test-results/.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
: "${TETHER_BIN:=$root/bin/tether}"
export TETHER_BIN

if [ ! -x "$TETHER_BIN" ]; then
	echo "browser-test: $TETHER_BIN is missing: run make build first" >&2
	exit 1
fi
if [ ! -d "$root/web/node_modules/playwright-core" ]; then
	echo "browser-test: playwright-core is not installed: cd web && npm ci" >&2
	exit 1
fi

cd "$root/web"
exec node --test --test-reporter=spec e2e/
