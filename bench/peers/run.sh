#!/usr/bin/env bash
# fastq against the other Python task queues (issue 17): installs each peer into its own
# virtualenv (install.sh), then runs the harness with the repo's Python, which writes
# bench/data/peers.json, the "peers" section of bench/RESULTS.md and bench/peers.png.
#
#   bash bench/peers/run.sh                         # 20 000 tasks, 3 interleaved rounds
#   bash bench/peers/run.sh --tasks 500 --rounds 1  # a quick check of the pipeline
#   bash bench/peers/run.sh --systems fastq,celery --redis redis://127.0.0.1:6408
#
# A peer that does not install is still in the table, with the reason.
set -uo pipefail
cd "$(dirname "$0")/../.."
systems=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --systems) systems="${args[$((i + 1))]:-}" ;;
    --systems=*) systems="${args[$i]#--systems=}" ;;
  esac
done
# shellcheck disable=SC2086  # a comma list made into words
bash bench/peers/install.sh ${systems//,/ } || echo "some peers did not install (see the table)" >&2
exec .venv/bin/python bench/peers/harness.py --command "bash bench/peers/run.sh $*" "$@"
