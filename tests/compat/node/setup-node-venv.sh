#!/usr/bin/env bash
# Creates (idempotently) what tests/tests/node_agent.rs needs to run the real Python
# SlapOS node agent as user `nobody` (slapgrid-behaviour.md 8.2/8.3):
#   $SLAPOS_NODE_PY   a copy of Python 3.12 that `nobody` can execute (default
#                     /var/tmp/slapos-node-py312; pyenv's lives under /root, mode 0700)
#   $SLAPOS_NODE_VENV a venv of it (default /var/tmp/slapos-node-venv) with
#                     slapos.core 1.26.1, slapos.libnetworkcache, supervisor,
#                     zc.buildout<5 and setuptools<80 (classic eggs: see 8.2)
# Usage: setup-node-venv.sh [PYTHON3.12]   (needs root for apt-get install patchelf)
set -euo pipefail
PY_HOME=${SLAPOS_NODE_PY:-/var/tmp/slapos-node-py312}
VENV=${SLAPOS_NODE_VENV:-/var/tmp/slapos-node-venv}

ok() {
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
v = {n: m.version(n) for n in ('slapos.core', 'zc.buildout', 'setuptools', 'supervisor',
                                'slapos.libnetworkcache')}
sys.exit(not (v['slapos.core'] == '1.26.1' and int(v['zc.buildout'].split('.')[0]) < 5
              and int(v['setuptools'].split('.')[0]) < 80))
EOF
}
if [ -x "$VENV/bin/python" ] && ok && runuser -u nobody -- "$VENV/bin/python" -c 'import slapos.grid.slapgrid' 2>/dev/null; then
    echo "node venv ready: $VENV"
    exit 0
fi

SRC=${1:-}
if [ -z "$SRC" ]; then
    if [ -x /root/.pyenv/versions/3.12.1/bin/python3.12 ]; then
        SRC=/root/.pyenv/versions/3.12.1/bin/python3.12
    else
        SRC=$(command -v python3.12)
    fi
fi
SRC_HOME=$(dirname "$(dirname "$(readlink -f "$SRC")")")
command -v patchelf >/dev/null || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends patchelf
}
rm -rf "$PY_HOME" "$VENV"
mkdir -p "$PY_HOME/bin" "$PY_HOME/lib"
cp -a "$SRC_HOME/bin/python3.12" "$PY_HOME/bin/"
ln -sf python3.12 "$PY_HOME/bin/python3"
cp -a "$SRC_HOME"/lib/libpython3.12*.so* "$PY_HOME/lib/" 2>/dev/null || true
# the standard library without its test suite and without what pip installed into it
tar -C "$SRC_HOME/lib" --exclude=python3.12/test --exclude='python3.12/site-packages/*' \
    --exclude=__pycache__ -cf - python3.12 | tar -C "$PY_HOME/lib" -xf -
if readelf -d "$PY_HOME/bin/python3.12" | grep -q 'R.*PATH'; then
    patchelf --set-rpath '$ORIGIN/../lib' "$PY_HOME/bin/python3.12"
fi
chmod -R a+rX "$PY_HOME"
"$PY_HOME/bin/python3.12" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check slapos.core==1.26.1 \
    slapos.libnetworkcache supervisor "zc.buildout<5" "setuptools<80"
chmod -R a+rX "$VENV"
ok
runuser -u nobody -- "$VENV/bin/python" -c 'import slapos.grid.slapgrid'
echo "node venv ready: $VENV"
