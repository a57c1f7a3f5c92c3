#!/usr/bin/env bash
# Claims 2-4 of the seed papers at size=cpu (results/cpu/claims/README.md): the LRA table and
# SMAT (configs/claims_lra.py) and AdaMRA's ablations (configs/claims_adamra.py), 3 seeds each,
# on two CPU cores (--jobs 2). Hours of CPU: stop it any time (Ctrl-C, SIGTERM) and run it
# again; runs already in the committed record (results/cpu/claims/records) are not trained
# again, finished runs are recorded even when others fail, and the tables are rebuilt. Its
# exit status is the sweeps' (1 while any run failed, got stuck or diverged; 130/143 when
# stopped). A recovered record is not rerun: delete its folder from the workdir after the
# restore step (or before a rerun) to train that seed again.
#
# Usage: scripts/reproduce_claims.sh [OUT]      (tables in OUT, default results/cpu/claims)
# Environment: LRA_IMDB_ARCHIVE (default ../shared/data/aclImdb_v1.tar.gz), RUNS (the workdir,
#              default runs/claims), LRA (the command, e.g. LRA="python -m lra.cli", or
#              LRA="echo lra" to print the training steps), PYTHON (default python3).
set -u

# paths given are taken from here; the defaults from the repository root
OUT=${1:+$(realpath -m "$1")}
RUNS=${RUNS:+$(realpath -m "$RUNS")}
ARCHIVE=${LRA_IMDB_ARCHIVE:+$(realpath -m "$LRA_IMDB_ARCHIVE")}
LRA=${LRA:-lra}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-results/cpu/claims}
RUNS=${RUNS:-runs/claims}
ARCHIVE=${ARCHIVE:-../shared/data/aclImdb_v1.tar.gz}
RECORD=results/cpu/claims/records

sweep() {  # in the background, so that a SIGTERM or Ctrl-C to this script stops it cleanly
  $LRA sweep --from "$1" --workdir "$RUNS" --jobs 2 &
  local pid=$! rc
  trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
  wait "$pid"; rc=$?
  while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done  # a trap cut the wait short
  trap - TERM INT
  return "$rc"
}

$LRA data prepare text --source archive --size cpu --path "$ARCHIVE" || exit $?
"$PYTHON" scripts/claims_record.py --restore --runs "$RUNS" --to "$RECORD" || exit $?
status=0
for grid in configs/claims_lra.py configs/claims_adamra.py; do
  sweep "$grid" || status=$?
  [ "$status" -ge 128 ] && break  # stopped by a signal: record what finished, then stop
done
"$PYTHON" scripts/claims_record.py --runs "$RUNS" --to "$RECORD" || exit $?
"$PYTHON" scripts/claim_lra_table.py --runs "$RECORD" --bench results/cpu/bench_4k_rounds.json \
  --out "$OUT" || exit $?
"$PYTHON" scripts/claim_adamra_ablations.py --runs "$RECORD" --out "$OUT" || exit $?
exit "$status"
