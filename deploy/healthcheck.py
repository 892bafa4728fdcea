"""Container HEALTHCHECK: exit 0 when the local server answers /ready with 200, else 1 (and why)."""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("FACESEARCH_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except urllib.error.HTTPError as exc:  # 503: not ready, the body says why
    print(exc.read().decode(errors="replace")[:500], file=sys.stderr)
    sys.exit(1)
except OSError as exc:
    print(f"not answering: {exc}", file=sys.stderr)
    sys.exit(1)
