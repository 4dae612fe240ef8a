#!/bin/sh
# Build the real Docker Compose v2 CLI ($COMPOSE_VERSION) into $COMPOSE_BIN from the Go module
# proxy, once; `make compose-check` uses it to validate compose/*.yml on machines without
# Docker. `go install module@version` refuses compose's go.mod (it has exclude directives),
# so the module is downloaded and built in a scratch copy.
set -eu
: "${COMPOSE_VERSION:?}" "${COMPOSE_BIN:?}"
[ -x "$COMPOSE_BIN" ] && exit 0
command -v go >/dev/null || { echo "compose-check: needs Go (or docker compose) to validate" >&2; exit 1; }
dir=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "compose-check: could not download compose $COMPOSE_VERSION" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -R "$dir/." "$work/"
chmod -R u+w "$work"
mkdir -p "$(dirname "$COMPOSE_BIN")"
echo "compose-check: building docker compose $COMPOSE_VERSION (once) into $COMPOSE_BIN" >&2
(cd "$work" && go build -trimpath -o "$COMPOSE_BIN.tmp" ./cmd)
mv "$COMPOSE_BIN.tmp" "$COMPOSE_BIN"
