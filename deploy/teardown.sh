#!/usr/bin/env bash
# Delete the function of one trigger, or of all four. The secret, service account and buckets stay.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<EOF
Usage: $0 TRIGGER|all [options]

Delete the function PREFIX-TRIGGER (all four with 'all'). What deploy/setup.sh made is kept.

$(common_help)
EOF
}

POSITIONAL=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -*)
      if parse_common_option "$@"; then shift "$CONSUMED"; else die_usage "unknown option $1"; fi
      ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
((${#POSITIONAL[@]} == 1)) || die_usage "expected one TRIGGER (finalize, delete, archive, metadata or all)"
select_triggers "${POSITIONAL[0]}"
validate_common
((DRY_RUN)) || require_gcloud

for trigger in "${SELECTED_TRIGGERS[@]}"; do
  run gcloud functions delete "$(function_name "$trigger")" "$(gen_flag)" "--project=$PROJECT" \
    "--region=$REGION" --quiet
done
