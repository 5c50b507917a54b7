#!/usr/bin/env bash
# Read a trigger's function logs: gcloud functions logs read with the right name and flags.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

LIMIT=50
usage() {
  cat <<EOF
Usage: $0 TRIGGER [--limit N] [options] [extra gcloud functions logs read flags]

Show the newest log entries of the function PREFIX-TRIGGER, one line per notification outcome.
TRIGGER is finalize, delete, archive, metadata or flush (the scheduled flush of digests).

  --limit N             how many entries, 1 to 1000 (default 50)
$(common_help)
Other --flag=value options, and everything after --, are passed on to gcloud, e.g.
--min-log-level=error or --start-time=2026-11-01.
EOF
}

POSITIONAL=()
EXTRA=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --limit) need_value "$@"; LIMIT="$2"; shift 2 ;;
    --) shift; EXTRA+=("$@"); break ;;
    -*)
      if parse_common_option "$@"; then shift "$CONSUMED"; else EXTRA+=("$1"); shift; fi
      ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
((${#POSITIONAL[@]} == 1)) || die_usage "expected one TRIGGER (finalize, delete, archive, metadata or flush)"
[[ "${POSITIONAL[0]}" != all ]] || die_usage "logs.sh reads one trigger at a time"
select_triggers "${POSITIONAL[0]}"
validate_common
[[ "$LIMIT" =~ ^[1-9][0-9]{0,2}$|^1000$ ]] || die_usage "--limit: expected 1 to 1000, got '$LIMIT'"
((DRY_RUN)) || require_gcloud

run gcloud functions logs read "$(function_name "${SELECTED_TRIGGERS[0]}")" "$(gen_flag)" \
  "--project=$PROJECT" "--region=$REGION" "--limit=$LIMIT" "${EXTRA[@]}"
