#!/usr/bin/env bash
# Delete the function of one trigger, or of all four; with --via pubsub also its bucket notification
# configurations and its topic; "flush": the Cloud Scheduler job, then the flush function. The
# secret, service account and buckets stay.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<EOF
Usage: $0 TRIGGER|all [options]

Delete the function PREFIX-TRIGGER (all four with 'all'). What deploy/setup.sh made is kept
(its alerts too: deploy/alerts.sh --remove deletes them).
TRIGGER flush: the Cloud Scheduler job PREFIX-flush, then the function PREFIX-flush ('all' keeps them).
TRIGGER events: the SendGrid Event Webhook's function PREFIX-events ('all' keeps it); turn the
webhook off in SendGrid too.
Each resource is described first, so running it again after a partial teardown is safe: what is
gone is skipped ("already gone: ..."). Any other failure is shown, the other steps still run,
and the exit status is 1.

  --via pubsub          deployed with deploy.sh --via pubsub: first delete the bucket's
                        notification configurations publishing to the topic PREFIX-TRIGGER,
                        then the function, then the topic (or NOTIFIER_VIA). The topic is
                        kept while configurations may still publish to it: when removing
                        them failed, or when the bucket is not found (a typo in --bucket?)
  --bucket NAME         with --via pubsub: the bucket holding those configurations
                        (or NOTIFIER_BUCKET)
$(common_help)
EOF
}

# The teardown is one POSIX shell script, run by bash or, with --dry-run, printed: both do the same.
# Each step is one line, guarded by a describe (absent: skipped; refused or failing: shown, the rest
# still runs, and the script exits 1 naming what is left).
script_preamble() {
  printf '%s\n' 'rc=0' 'not_removed=' "$DESCRIBE_ERROR_KIND_FN"
  cat <<'EOF'
not_removed() { rc=1; not_removed="${not_removed:+$not_removed, }$1"; }
absent() { case $(describe_error_kind "$1") in gone) printf '%s\n' "$2" >&2 ;; *) printf '%s\n' "$1" >&2; return 1 ;; esac; }
EOF
}

# Sets $notifications to removed, no-bucket or failed: the topic step reads it.
notifications_step() {
  local trigger="$1" topic
  topic="$(topic_id "$trigger")"
  local describe=(gcloud storage buckets describe "gs://$BUCKET" "--project=$PROJECT")
  local list=(gcloud storage buckets notifications list "gs://$BUCKET" "--project=$PROJECT"
    "--format=$NOTIFICATION_ID_FORMAT")
  local delete=(gcloud storage buckets notifications delete
    "${RAW}\"projects/_/buckets/$BUCKET/notificationConfigs/\$id\"" "--project=$PROJECT")
  # shellcheck disable=SC2016  # printed for the script's shell to expand
  printf 'notifications=removed; if err=$(%s 2>&1 >/dev/null); then if ids=$(%s); then for id in $(printf '\''%%s\\n'\'' "$ids" | awk -v topic=%s %s); do %s || notifications=failed; done; else notifications=failed; fi; elif absent "$err" %s; then notifications=no-bucket; else notifications=failed; fi; [ "$notifications" != failed ] || not_removed %s\n' \
    "$(print_command "${describe[@]}")" "$(print_command "${list[@]}")" \
    "$(shell_quote "$(notification_topic "$trigger")")" \
    "$(quote_literal '$2 == topic && $1 ~ /^[0-9]+$/ { print $1 }')" "$(print_command "${delete[@]}")" \
    "$(quote_literal "bucket gs://$BUCKET not found: no notification configurations to delete there")" \
    "$(quote_literal "notifications from gs://$BUCKET to $topic")"
}

function_step() {
  local name flags
  name="$(function_name "$1")"
  flags=("$(gen_flag)" "--project=$PROJECT" "--region=$REGION")
  # shellcheck disable=SC2016
  printf 'if err=$(%s 2>&1 >/dev/null); then %s || not_removed %s; elif ! absent "$err" %s; then not_removed %s; fi\n' \
    "$(print_command gcloud functions describe "$name" "${flags[@]}")" \
    "$(print_command gcloud functions delete "$name" "${flags[@]}" --quiet)" "$(quote_literal "function $name")" \
    "$(quote_literal "already gone: function $name (project $PROJECT, region $REGION)")" \
    "$(quote_literal "function $name")"
}

# The flush's job, before its function: nothing calls a function that is gone.
job_step() {
  local name flags
  name="$(function_name "$1")"
  flags=("--project=$PROJECT" "--location=$REGION")
  # shellcheck disable=SC2016
  printf 'if err=$(%s 2>&1 >/dev/null); then %s || not_removed %s; elif ! absent "$err" %s; then not_removed %s; fi\n' \
    "$(print_command gcloud scheduler jobs describe "$name" "${flags[@]}")" \
    "$(print_command gcloud scheduler jobs delete "$name" "${flags[@]}" --quiet)" \
    "$(quote_literal "Cloud Scheduler job $name")" \
    "$(quote_literal "already gone: Cloud Scheduler job $name (project $PROJECT, location $REGION)")" \
    "$(quote_literal "Cloud Scheduler job $name")"
}

# The topic goes only once no notification configuration can still publish to it: a later deploy
# recreating the topic would otherwise revive configurations (old prefix, old event types).
topic_step() {
  local topic what
  topic="$(topic_id "$1")"
  what="$(quote_literal "topic $topic")"
  # shellcheck disable=SC2016
  printf 'if err=$(%s 2>&1 >/dev/null); then case $notifications in removed) %s || not_removed %s ;; no-bucket) echo %s >&2; not_removed %s ;; *) echo %s >&2; not_removed %s ;; esac; elif ! absent "$err" %s; then not_removed %s; fi\n' \
    "$(print_command gcloud pubsub topics describe "$topic" "--project=$PROJECT")" \
    "$(print_command gcloud pubsub topics delete "$topic" "--project=$PROJECT" --quiet)" "$what" \
    "$(quote_literal "bucket gs://$BUCKET not found: topic $topic kept (its notifications, if any, live on another bucket?). Run teardown again with the right --bucket, or if that bucket is really gone: gcloud pubsub topics delete $topic --project=$PROJECT")" \
    "$what" \
    "$(quote_literal "topic $topic kept: notifications from gs://$BUCKET may still point at it; run teardown again once the error above is fixed")" \
    "$what" "$(quote_literal "already gone: topic $topic (project $PROJECT)")" "$what"
}

script_summary() {
  # shellcheck disable=SC2016
  printf '%s\n' 'if [ "$rc" != 0 ]; then printf '\''teardown incomplete: not removed: %s. Fix the error above and run it again; what is gone is skipped.\n'\'' "$not_removed" >&2; fi' 'exit "$rc"'
}

teardown_script() {
  script_preamble
  for trigger in "${SELECTED_TRIGGERS[@]}"; do
    if [[ "$trigger" == "$FLUSH" ]]; then job_step "$trigger"; fi
    if [[ "$VIA" == pubsub ]]; then notifications_step "$trigger"; fi
    function_step "$trigger"
    if [[ "$VIA" == pubsub ]]; then topic_step "$trigger"; fi
  done
  script_summary
}

# Run for real: each call but a describe is shown as "+ gcloud ..." on stderr (fd 3, so a describe's
# captured error never holds it).
TRACE_GCLOUD='set +eu
exec 3>&2
gcloud() { case " $* " in *" describe "*) ;; *) printf "+ gcloud" >&3; printf " %q" "$@" >&3; echo >&3 ;; esac; command gcloud "$@"; }'

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
((${#POSITIONAL[@]} == 1)) ||
  die_usage "expected one TRIGGER (finalize, delete, archive, metadata, all, flush or events)"
select_triggers "${POSITIONAL[0]}"
case "${SELECTED_TRIGGERS[0]}" in "$FLUSH" | "$EVENTS") VIA=eventarc ;; esac  # no topic or notification of its own
validate_via
if [[ "$VIA" == pubsub ]]; then
  validate_bucket
elif ((BUCKET_GIVEN)); then
  die_usage "--bucket: only --via pubsub uses a bucket (to find its notification configurations)"
fi
validate_common
((DRY_RUN)) || require_gcloud

# Notifications first, so nothing is published to a topic about to go; the function before its
# topic, so its trigger's subscription goes with it.
if ((DRY_RUN)); then
  teardown_script
else
  exec "$BASH" -c "$TRACE_GCLOUD
$(teardown_script)"
fi
