#!/usr/bin/env bash
# Test the install path of the container image where no container can be built: run the
# Dockerfile's install steps (deploy/install.sh) into a clean virtual environment, then use the
# result as the image would: settings from FACESEARCH_* only, JSON logs, index, serve, /ready
# through the image's HEALTHCHECK script, /metrics, backup and restore.
#   bash scripts/check-install.sh            (needs the package registry; a few minutes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== install (deploy/install.sh, as in deploy/Dockerfile)"
# Copy only what the Dockerfile copies, so a file it forgets to copy fails here too.
mkdir -p "$work/src"
cp "$root/pyproject.toml" "$root/README.md" "$work/src/"
cp -r "$root/src" "$work/src/src"
EXTRAS=${EXTRAS:-milvus,postgres} sh "$root/deploy/install.sh" "$work/venv" "$work/src"
bin="$work/venv/bin"

export FACESEARCH_HOME="$work/home" FACESEARCH_LOG_FORMAT=json FACESEARCH_PORT=${PORT:-18765}
export FACESEARCH_PASSWORD="check-install password" FACESEARCH_DISK_FLOOR_MB=1
cd "$work"
echo "== config show"
"$bin/facesearch" config show
echo "== index + user"
"$bin/facesearch" index "$root/samples/lfw" --collection samples
"$bin/facesearch" user add admin --role admin
echo "== serve"
"$bin/facesearch" serve > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 120); do
  "$bin/python" "$root/deploy/healthcheck.py" 2>/dev/null && break
  kill -0 "$server" || { cat "$work/serve.log"; exit 1; }
  sleep 1
done
"$bin/python" "$root/deploy/healthcheck.py"
echo "ready (healthcheck exit 0)"
"$bin/python" - <<PY
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:$FACESEARCH_PORT/metrics").read().decode()
types = [l for l in text.splitlines() if l.startswith("# TYPE facesearch_")]
assert len(types) >= 5, types
print(len(types), "facesearch_ metric families")
PY
kill "$server"; wait "$server" || true; server=
grep -q '"route": "/ready"' "$work/serve.log" && echo "JSON access line for /ready found"
echo "== backup + restore"
"$bin/facesearch" backup "$work/backup"
"$bin/facesearch" restore "$work/backup" --home "$work/restored"
"$bin/facesearch" doctor --check-only --home "$work/restored"
"$bin/facesearch" audit verify --home "$work/restored"
echo "== missing extras say which to install"
"$bin/python" -c "import matplotlib" 2>/dev/null && { echo "matplotlib should not be installed"; exit 1; }
if "$bin/python" -c "import facesearch.eval.plots" 2> "$work/extra.err"; then
  echo "importing the plots without matplotlib should fail"; exit 1
fi
grep "pip install 'facesearch\[eval\]'" "$work/extra.err"
echo "check-install: OK"
