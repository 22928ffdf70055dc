#!/usr/bin/env bash
# Prints the path of a working Python X.Y interpreter, or says which one is missing (exit 1).
#
#   tools/find_python.sh 3.12 [PREFERRED]
#
# PREFERRED (the Makefile's PYTHON312=... and the like) is tried first. Then, in order: pythonX.Y
# on PATH, pyenv's installed versions, the usual system prefixes, `uv python find`, python3.
# A candidate counts only if running it reports version X.Y and it has the venv module. That
# matters where several Pythons sit side by side under pyenv: there `python3.12` on PATH is a
# shim that refuses to run ("command not found ... exists in these Python versions") until
# 3.12 is selected, while pyenv's own copy under versions/3.12.*/bin runs.
set -u
want=${1:?usage: find_python.sh X.Y [PREFERRED]}
preferred=${2:-}
tried=()

try() {  # try CANDIDATE: if it runs, is version $want and has venv, print its real path, exit 0
  local out
  [ -n "$1" ] || return 1
  tried+=("$1")
  out=$("$1" -c 'import sys, venv; print("%d.%d" % sys.version_info[:2], sys.executable)' \
    2>/dev/null) || return 1
  if [ "${out%% *}" = "$want" ]; then
    echo "${out#* }"  # the interpreter itself, not a shim that picks one per directory
    exit 0
  fi
  return 1
}

try "$preferred"
try "$(command -v "python$want" 2>/dev/null)"
if command -v pyenv >/dev/null 2>&1; then
  try "$(PYENV_VERSION="$(pyenv versions --bare 2>/dev/null | grep -E "^$want(\.[0-9]+)?$" \
      | sort -V | tail -1)" pyenv which "python$want" 2>/dev/null)"
fi
roots=("${PYENV_ROOT:-$HOME/.pyenv}")
for root in "${roots[@]}"; do
  for candidate in $(ls -d "$root"/versions/"$want".*/bin/"python$want" 2>/dev/null | sort -V -r); do
    try "$candidate"
  done
done
for prefix in /usr/local/bin /usr/bin /opt/python/bin; do
  try "$prefix/python$want"
done
if command -v uv >/dev/null 2>&1; then
  try "$(uv python find "$want" 2>/dev/null)"
fi
try "$(command -v python3 2>/dev/null)"

echo "estimator-fix: no working Python $want found (tried: ${tried[*]:-nothing})." \
  "Install it (for example \`pyenv install $want\`) or name it:" \
  "make ... PYTHON${want/./}=/path/to/python$want" >&2
exit 1
