#!/usr/bin/env bash
# Installs each peer task queue into a virtualenv of its own under $FASTQ_PEERS_CACHE
# (default ~/.cache/fastq/peers/<name>): peers pin conflicting redis-py versions, and ardiq and
# mayu need a newer Python than the repo's. Each venv gets redis-py too (the completion counter).
# A venv that cannot be made leaves <name>/FAILED with the reason; the harness reports it.
#
#   bash bench/peers/install.sh [name ...]      # default: every peer in PEERS below
set -uo pipefail
cd "$(dirname "$0")/../.."
CACHE="${FASTQ_PEERS_CACHE:-$HOME/.cache/fastq/peers}"
mkdir -p "$CACHE"

# name | Python it needs (repo = the repo's .venv Python) | pip requirements (pinned: the
# versions measured; bump them here)
PEERS="
celery   | repo | celery[redis]==5.7.0
dramatiq | repo | dramatiq[redis]==2.2.1
huey     | repo | huey==3.5.4 redis
rq       | repo | rq==2.12.0
arq      | repo | arq==0.28.0
potatoq  | repo | potatoq[redis]==26.1a8
taskito  | repo | taskito==0.22.0 redis
ardiq    | 3.13 | ardiq==1.2.0 redis
mayu     | 3.13 | mayu==0.2.5 redis
"

repo_python() {
  .venv/bin/python -c 'import sys; print(sys.executable)' 2>/dev/null
}

# A python of version $1 (major.minor): on PATH, in pyenv, or installed with pyenv.
find_python() {
  local want="$1" exe
  # pyenv's own builds first: its shim on PATH may exist without that version being selected.
  for exe in "$HOME"/.pyenv/versions/"$want"*/bin/python"$want" "python$want"; do
    if "$exe" -V >/dev/null 2>&1; then command -v "$exe"; return 0; fi
  done
  if command -v pyenv >/dev/null 2>&1 && pyenv install -s "$want" >&2; then
    exe=$(ls -d "$HOME"/.pyenv/versions/"$want"*/bin/python"$want" 2>/dev/null | tail -1)
    [ -n "$exe" ] && { echo "$exe"; return 0; }
  fi
  return 1
}

install_one() {
  local name="$1" py="$2" reqs="$3" dir="$CACHE/$1" python
  rm -f "$dir/FAILED"
  if [ "$py" = repo ]; then python=$(repo_python); else python=$(find_python "$py"); fi
  if [ -z "${python:-}" ]; then
    mkdir -p "$dir"; echo "no Python $py (repo .venv missing, or pyenv has none)" > "$dir/FAILED"
    return 1
  fi
  local stamp="$python | $reqs"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/STAMP" 2>/dev/null)" = "$stamp" ]; then
    return 0  # already installed with these requirements
  fi
  rm -rf "$dir"
  local log="$CACHE/$name.install.log"
  # shellcheck disable=SC2086  # the requirements are words on purpose
  if "$python" -m venv "$dir" >"$log" 2>&1 \
      && "$dir/bin/python" -m pip install -q --disable-pip-version-check $reqs >>"$log" 2>&1; then
    echo "$stamp" > "$dir/STAMP"
    echo "installed $name ($reqs) with $("$dir/bin/python" -V 2>&1)" >&2
  else
    mkdir -p "$dir"
    { echo "pip install $reqs failed with $python:"; tail -3 "$log"; } > "$dir/FAILED"
    echo "FAILED $name: see $log" >&2
    return 1
  fi
}

wanted=" $* "
status=0
while IFS='|' read -r name py reqs; do
  name=$(echo "$name" | xargs); py=$(echo "$py" | xargs); reqs=$(echo "$reqs" | xargs)
  [ -z "$name" ] && continue
  if [ $# -gt 0 ] && [[ "$wanted" != *" $name "* ]]; then continue; fi
  install_one "$name" "$py" "$reqs" || status=1
done <<< "$PEERS"
exit $status
