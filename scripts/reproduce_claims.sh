#!/usr/bin/env bash
# Claims 2-4 of the seed papers at size=cpu (results/cpu/claims/README.md): the LRA table and
# SMAT (configs/claims_lra.py) and AdaMRA's ablations (configs/claims_adamra.py), 3 seeds each,
# on two CPU cores (--jobs 2). Hours of CPU: stop it any time (Ctrl-C, SIGTERM) and run it
# again; runs already in the committed record (results/cpu/claims/records) are not trained
# again, finished runs are recorded even when others fail, and the tables are rebuilt.
#
# Usage: scripts/reproduce_claims.sh [OUT]      (tables in OUT, default results/cpu/claims)
# Environment: LRA_IMDB_ARCHIVE (default ../shared/data/aclImdb_v1.tar.gz), RUNS (the workdir,
#              default runs/claims), LRA (the command, e.g. LRA="python -m lra.cli", or
#              LRA="echo lra" to print the training steps), PYTHON (default python3).
set -uo pipefail

OUT=${1:-results/cpu/claims}
RUNS=${RUNS:-runs/claims}
LRA=${LRA:-lra}
PYTHON=${PYTHON:-python3}
RECORD=results/cpu/claims/records

$LRA data prepare text --source archive --size cpu \
  --path "${LRA_IMDB_ARCHIVE:-../shared/data/aclImdb_v1.tar.gz}" || exit $?
$PYTHON scripts/claims_record.py --restore --runs "$RUNS" --to "$RECORD" || exit $?
status=0
for grid in configs/claims_lra.py configs/claims_adamra.py; do
  $LRA sweep --from "$grid" --workdir "$RUNS" --jobs 2 || status=$?
  [ "$status" -ge 128 ] && break  # stopped by a signal: record what finished, then stop
done
$PYTHON scripts/claims_record.py --runs "$RUNS" --to "$RECORD" || exit $?
$PYTHON scripts/claim_lra_table.py --runs "$RECORD" --bench results/cpu/bench_4k_rounds.json \
  --out "$OUT" || exit $?
$PYTHON scripts/claim_adamra_ablations.py --runs "$RECORD" --out "$OUT" || exit $?
exit "$status"
