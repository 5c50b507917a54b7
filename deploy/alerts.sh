#!/usr/bin/env bash
# shellcheck disable=SC2016  # --dry-run prints shell text ($alerts_dir, $channel) for the user's shell
# Alerts for storage-notifier in Cloud Monitoring: a log-based metric counting the functions' outcome
# lines (by outcome and rule), an email channel, and alert policies from the files in deploy/alerts/.
# Safe to run again: the metric and each policy are updated in place, an existing channel for the
# address is reused. --remove deletes the policies and the metric (teardown).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=deploy/_common.sh
source "$here/_common.sh"
# shellcheck source=deploy/alerts/options.sh
source "$here/alerts/options.sh"

METRIC=storage-notifier-outcomes
TEMPLATES="$NOTIFIER_ROOT/deploy/alerts"
# Each policy carries the user label storage_notifier=<its file's name>: how a re-run finds it.
POLICIES=(dead-letters retrying)
ABSENCE_POLICY=no-sent
POLICY_LABEL=storage_notifier
# Where a 1st or 2nd gen function's log lines (and so the metric's points) come from. The metric
# and the threshold policies cover both; the absence policy watches the generation deployed, since
# the other one falling silent after a move between generations is no news.
declare -A RESOURCE_TYPE=([1]=cloud_function [2]=cloud_run_revision)
REMOVE=0

usage() {
  cat <<EOF
Usage: $0 --alert-email ADDR [options]
       $0 --remove [options]

Set up (or update) Cloud Monitoring alerts for storage-notifier: the log-based metric $METRIC
(the functions' outcome lines, labelled by outcome and rule), an email notification channel for
ADDR, and alert policies (deploy/alerts/*.json): any dead-lettered, partially-sent, bounced or
dropped line within 10 minutes; more than --retrying-threshold retrying lines within 15 minutes; with --expect-every N,
no sent line for N hours. --remove deletes the policies and the metric (the channel is kept).

$(alert_help)
  --remove              delete the alert policies and the metric instead
$(common_help)
EOF
}

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --remove) REMOVE=1; shift ;;
    *)
      if parse_alert_option "$@" || parse_common_option "$@"; then
        shift "$CONSUMED"
      else
        die_usage "unknown argument $1"
      fi
      ;;
  esac
done

validate_common
validate_alert_options
((REMOVE)) || [[ -n "$ALERT_EMAIL" ]] ||
  die_usage "--alert-email: needed (the address the alerts go to), unless --remove"
((DRY_RUN)) || require_gcloud

# The rendered files, removed on exit. --dry-run renders them too, to print them into its script,
# whose commands read them from the printed script's own $alerts_dir.
ALERTS_DIR="$(mktemp -d)"
trap 'rm -rf "$ALERTS_DIR"' EXIT

# FLAG=PATH of a rendered file, as the command that reads it sees it.
file_arg() {
  if ((DRY_RUN)); then
    echo "${RAW}$1=\"\$alerts_dir/$2\""
  else
    echo "$1=$ALERTS_DIR/$2"
  fi
}

# Fill a template's @PLACEHOLDERS@ (validated words and numbers only); under --dry-run also print
# the file as a here-document of the printed script.
render() {
  local name="$1" type="${RESOURCE_TYPE[$GEN]}"
  sed -e "s|@METRIC@|$METRIC|g" -e "s|@RETRYING_THRESHOLD@|$RETRYING_THRESHOLD|g" \
    -e "s|@EXPECT_HOURS@|${EXPECT_EVERY:-0}|g" -e "s|@EXPECT_SECONDS@|$((${EXPECT_EVERY:-0} * 3600))|g" \
    -e "s|@RESOURCE_TYPE@|$type|g" "$TEMPLATES/$name" >"$ALERTS_DIR/$name"
  if ((DRY_RUN)); then
    printf 'cat >"$alerts_dir/%s" <<'\''JSON'\''\n%s\nJSON\n' "$name" "$(cat "$ALERTS_DIR/$name")"
  fi
}

# Set the variable named $1 to what a command prints (under --dry-run: print VAR=$(command)).
capture() {
  local -n into="$1"
  local printed_name="${1,,}"
  shift
  if ((DRY_RUN)); then
    printf '%s=$(%s)\n' "$printed_name" "$(print_command "$@")"
  else
    printf '+ %s\n' "$(print_command "$@")" >&2
    # shellcheck disable=SC2034  # a nameref: this sets the caller's variable
    into="$("$@")"
  fi
}

# Arrays named $1 (a describe or list) and $2, $3: run $2 if $1 succeeds, else $3.
if_else() {
  local -n test_cmd="$1" then_cmd="$2" else_cmd="$3"
  if ((DRY_RUN)); then
    printf 'if %s >/dev/null 2>&1; then\n  %s\nelse\n  %s\nfi\n' "$(print_command "${test_cmd[@]}")" \
      "$(print_command "${then_cmd[@]}")" "$(print_command "${else_cmd[@]}")"
  elif "${test_cmd[@]}" >/dev/null 2>&1; then
    run "${then_cmd[@]}"
  else
    run "${else_cmd[@]}"
  fi
}

policy_filter() { echo "--filter=userLabels.$POLICY_LABEL=\"$1\""; }

ensure_metric() {
  render metric.json
  # shellcheck disable=SC2034  # read through if_else's namerefs
  local describe=(gcloud logging metrics describe "$METRIC" "--project=$PROJECT")
  # shellcheck disable=SC2034
  local update=(gcloud logging metrics update "$METRIC" "--project=$PROJECT" "$(file_arg --config-from-file metric.json)")
  # shellcheck disable=SC2034
  local create=(gcloud logging metrics create "$METRIC" "--project=$PROJECT" "$(file_arg --config-from-file metric.json)")
  if_else describe update create
}

# CHANNEL: the resource name of an email channel for ALERT_EMAIL, found or made.
ensure_channel() {
  local list=(gcloud beta monitoring channels list "--project=$PROJECT"
    "--filter=type=\"email\" AND labels.email_address=\"$ALERT_EMAIL\"" "--format=value(name)" --limit=1)
  local create=(gcloud beta monitoring channels create "--project=$PROJECT" --type=email
    "--display-name=storage-notifier alerts ($ALERT_EMAIL)" "--channel-labels=email_address=$ALERT_EMAIL"
    "--format=value(name)")
  CHANNEL=""
  capture CHANNEL "${list[@]}"
  if ((DRY_RUN)); then
    printf '[ -n "$channel" ] || channel=$(%s)\n' "$(print_command "${create[@]}")"
    printf '[ -n "$channel" ] || { echo "no email channel for %s" >&2; exit 1; }\n' "$ALERT_EMAIL"
  elif [[ -n "$CHANNEL" ]]; then
    printf '= exists: email channel %s for %s\n' "$CHANNEL" "$ALERT_EMAIL" >&2
  else
    capture CHANNEL "${create[@]}"
    [[ "$CHANNEL" == projects/*/notificationChannels/* ]] ||
      { echo "alerts.sh: gcloud made no email channel for $ALERT_EMAIL (it printed '$CHANNEL')" >&2; exit 1; }
  fi
}

# One policy from deploy/alerts/NAME.json: updated in place when a policy with its label exists.
ensure_policy() {
  local name="$1" policy=""
  render "$name.json"
  local list=(gcloud alpha monitoring policies list "--project=$PROJECT" "$(policy_filter "$name")"
    "--format=value(name)" --limit=1)
  local file channels
  file="$(file_arg --policy-from-file "$name.json")"
  if ((DRY_RUN)); then
    channels="${RAW}--notification-channels=\"\$channel\""
    printf 'policy=$(%s)\n' "$(print_command "${list[@]}")"
    printf 'if [ -n "$policy" ]; then\n  %s\nelse\n  %s\nfi\n' \
      "$(print_command gcloud alpha monitoring policies update "${RAW}\"\$policy\"" "--project=$PROJECT" "$file" \
        "${RAW}--set-notification-channels=\"\$channel\"")" \
      "$(print_command gcloud alpha monitoring policies create "--project=$PROJECT" "$file" "$channels")"
    return
  fi
  capture policy "${list[@]}"
  if [[ -n "$policy" ]]; then
    run gcloud alpha monitoring policies update "$policy" "--project=$PROJECT" "$file" \
      "--set-notification-channels=$CHANNEL"
  else
    run gcloud alpha monitoring policies create "--project=$PROJECT" "$file" "--notification-channels=$CHANNEL"
  fi
}

# Delete every policy carrying the label (value $1, or any with "*"), then say so.
delete_policies() {
  local filter="--filter=userLabels.$POLICY_LABEL:*" policy names
  [[ "$1" == "*" ]] || filter="$(policy_filter "$1")"
  local list=(gcloud alpha monitoring policies list "--project=$PROJECT" "$filter" "--format=value(name)")
  if ((DRY_RUN)); then
    printf 'for policy in $(%s); do\n  %s\ndone\n' "$(print_command "${list[@]}")" \
      "$(print_command gcloud alpha monitoring policies delete "${RAW}\"\$policy\"" "--project=$PROJECT" --quiet)"
    return
  fi
  capture names "${list[@]}"
  for policy in $names; do
    run gcloud alpha monitoring policies delete "$policy" "--project=$PROJECT" --quiet
  done
}

delete_metric() {
  local describe=(gcloud logging metrics describe "$METRIC" "--project=$PROJECT")
  local delete=(gcloud logging metrics delete "$METRIC" "--project=$PROJECT" --quiet)
  if ((DRY_RUN)); then
    printf 'if %s >/dev/null 2>&1; then\n  %s\nfi\n' "$(print_command "${describe[@]}")" "$(print_command "${delete[@]}")"
  elif "${describe[@]}" >/dev/null 2>&1; then
    run "${delete[@]}"
  else
    printf '= gone (or not readable): metric %s\n' "$METRIC" >&2
  fi
}

if ((REMOVE)); then
  delete_policies "*"
  delete_metric
  echo "# the email channel is kept (other policies may use it): gcloud beta monitoring channels list --project=$PROJECT" >&2
  exit 0
fi

((!DRY_RUN)) || printf '%s\n' 'alerts_dir=$(mktemp -d)' 'trap '\''rm -rf "$alerts_dir"'\'' EXIT'
run gcloud services enable monitoring.googleapis.com logging.googleapis.com "--project=$PROJECT"
ensure_metric
ensure_channel
for name in "${POLICIES[@]}"; do ensure_policy "$name"; done
if [[ "$EXPECT_EVERY" == 0 ]]; then
  delete_policies "$ABSENCE_POLICY"
elif [[ -n "$EXPECT_EVERY" ]]; then
  ensure_policy "$ABSENCE_POLICY"
fi
((DRY_RUN)) || echo "Alerts set up: they go to $ALERT_EMAIL (Cloud Monitoring > Alerting shows them)." >&2
