#!/usr/bin/env bash
# Refresh src/repscope/_assets/plotly-cartesian.min.js: plotly.js's cartesian partial bundle,
# the same plotly.js version as the installed `plotly` Python package (so figure dicts built
# for it render identically). Needs npm (registry access) and the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
version=$("$PY" - <<'PYEOF'
import re
from plotly.offline import get_plotlyjs
print(re.search(r"plotly\.js v(\d+\.\d+\.\d+)", get_plotlyjs()[:400]).group(1))
PYEOF
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "plotly.js-cartesian-dist-min@$version" >/dev/null && tar xzf ./*.tgz)
cp "$tmp/package/plotly-cartesian.min.js" src/repscope/_assets/plotly-cartesian.min.js
cp "$tmp/package/LICENSE" src/repscope/_assets/plotly-LICENSE.txt
echo "plotly.js cartesian bundle v$version -> src/repscope/_assets/"
