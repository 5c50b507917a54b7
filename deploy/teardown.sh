#!/usr/bin/env bash
# Delete the function of one trigger, or of all four; with --via pubsub also its bucket notification
# configurations and its topic. The secret, service account and buckets stay.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<EOF
Usage: $0 TRIGGER|all [options]

Delete the function PREFIX-TRIGGER (all four with 'all'). What deploy/setup.sh made is kept.
Each resource is described first, so running it again after a partial teardown is safe: what is
gone is skipped ("already gone: ..."). Any other failure is shown, the other steps still run,
and the exit status is 1.

  --via pubsub          deployed with deploy.sh --via pubsub: first delete the bucket's
                        notification configurations publishing to the topic PREFIX-TRIGGER,
                        then the function, then the topic (or NOTIFIER_VIA)
  --bucket NAME         with --via pubsub: the bucket holding those configurations
                        (or NOTIFIER_BUCKET)
$(common_help)
EOF
}

# Delete every notification configuration on BUCKET that publishes to TRIGGER's topic, whatever
# its event types or prefix. Under --dry-run, the same as one printed loop.
delete_notifications() {
  local trigger="$1" topic listing id listed_topic ids=() status=0
  local list=(gcloud storage buckets notifications list "gs://$BUCKET" "--project=$PROJECT"
    "--format=$NOTIFICATION_ID_FORMAT")
  local delete=(gcloud storage buckets notifications delete
    "${RAW}\"projects/_/buckets/$BUCKET/notificationConfigs/\$id\"" "--project=$PROJECT")
  topic="$(notification_topic "$trigger")"
  if ((DRY_RUN)); then
    # shellcheck disable=SC2016  # printed for the user's shell to expand
    printf 'for id in $(%s | awk -v topic=%s %s); do %s; done\n' "$(print_command "${list[@]}")" \
      "$(shell_quote "$topic")" "$(quote_literal '$2 == topic && $1 ~ /^[0-9]+$/ { print $1 }')" \
      "$(print_command "${delete[@]}")"
    return 0
  fi
  # Called as when_present's action, where set -e is off: each failure is returned by hand.
  listing="$(run "${list[@]}")" || return 1
  while read -r id listed_topic; do
    if [[ "$listed_topic" == "$topic" && "$id" =~ ^[0-9]+$ ]]; then ids+=("$id"); fi
  done <<<"$listing"
  for id in "${ids[@]}"; do
    run gcloud storage buckets notifications delete "projects/_/buckets/$BUCKET/notificationConfigs/$id" \
      "--project=$PROJECT" || status=1
  done
  return "$status"
}

POSITIONAL=()
BUCKET_GIVEN=0
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --via) need_value "$@"; VIA="$2"; shift 2 ;;
    --bucket) need_value "$@"; BUCKET="$2"; BUCKET_GIVEN=1; shift 2 ;;
    -*)
      if parse_common_option "$@"; then shift "$CONSUMED"; else die_usage "unknown option $1"; fi
      ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
((${#POSITIONAL[@]} == 1)) || die_usage "expected one TRIGGER (finalize, delete, archive, metadata or all)"
select_triggers "${POSITIONAL[0]}"
validate_via
if [[ "$VIA" == pubsub ]]; then
  validate_bucket
elif ((BUCKET_GIVEN)); then
  die_usage "--bucket: only --via pubsub uses a bucket (to find its notification configurations)"
fi
validate_common
((DRY_RUN)) || require_gcloud

# Notifications first, so nothing is published to a topic about to go; the function before its
# topic, so its trigger's subscription goes with it. Each is looked up first, so a teardown that
# stopped half-way can simply be run again: what is gone is skipped, and one failure does not
# keep the rest in place.
for trigger in "${SELECTED_TRIGGERS[@]}"; do
  function_id="$(function_name "$trigger")"
  topic="$(topic_id "$trigger")"
  if [[ "$VIA" == pubsub ]]; then
    # A bucket's notification configurations go with it: none to list when the bucket is gone.
    when_present "notifications from gs://$BUCKET to $topic" \
      gcloud storage buckets describe "gs://$BUCKET" "--project=$PROJECT" -- delete_notifications "$trigger"
  fi
  when_present "function $function_id" \
    gcloud functions describe "$function_id" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION" -- \
    run gcloud functions delete "$function_id" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION" --quiet
  if [[ "$VIA" == pubsub ]]; then
    when_present "topic $topic" gcloud pubsub topics describe "$topic" "--project=$PROJECT" -- \
      run gcloud pubsub topics delete "$topic" "--project=$PROJECT" --quiet
  fi
done
if ((${#NOT_REMOVED[@]})); then
  printf -v not_removed '%s, ' "${NOT_REMOVED[@]}"
  printf 'teardown incomplete: not removed: %s. Fix the error above and run it again; what is gone is skipped.\n' \
    "${not_removed%, }" >&2
  exit 1
fi
