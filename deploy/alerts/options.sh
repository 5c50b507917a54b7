# shellcheck shell=bash
# The alert options deploy/alerts.sh and deploy/setup.sh share: defaults, parsing and validation,
# so setup refuses a bad address before it changes anything. Sourced after _common.sh, never run.
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source it

ALERT_EMAIL="${NOTIFIER_ALERT_EMAIL:-}"
EXPECT_EVERY=""       # hours; empty: leave the no-sent policy as it is; 0: remove it
RETRYING_THRESHOLD=20 # retrying lines within 15 minutes
# Cloud Monitoring's metric-absence window is at most 23.5 hours (docs: "Create metric-absence
# alerting policies"; newer pages say 24 h in the console, 24.5 h through the API): whole hours up to 23.
EXPECT_EVERY_MAX=23
RETRYING_THRESHOLD_MAX=100000
ALERT_TUNING="" # the last of --expect-every / --retrying-threshold given, to refuse it without an address

# Sets CONSUMED to how many words it took, or returns 1 (like parse_common_option).
parse_alert_option() {
  CONSUMED=2
  case "$1" in
    --alert-email) need_value "$@"; ALERT_EMAIL="$2" ;;
    --expect-every) need_value "$@"; EXPECT_EVERY="$2"; ALERT_TUNING="$1" ;;
    --retrying-threshold) need_value "$@"; RETRYING_THRESHOLD="$2"; ALERT_TUNING="$1" ;;
    *) return 1 ;;
  esac
}

alert_help() {
  cat <<EOF
  --alert-email ADDR    email address the alerts go to (or NOTIFIER_ALERT_EMAIL): a Cloud
                        Monitoring email channel (an existing one for ADDR is reused), the
                        log-based metric storage-notifier-outcomes, and alert policies for
                        undelivered mail (any dead-lettered, partially-sent, bounced or
                        dropped line within 10 minutes) and retrying
  --retrying-threshold N  alert when more than N notifications answer retrying within 15
                        minutes (1-$RETRYING_THRESHOLD_MAX; default 20)
  --expect-every N      also alert when no email was sent for N hours (1-$EXPECT_EVERY_MAX: Cloud
                        Monitoring watches for an absence for at most 23.5 hours); 0 removes
                        that alert, leaving it out keeps it as it is
EOF
}

# ADDR must look like an address (it becomes a channel label and a list filter: no quotes, commas
# or spaces); the numbers must be whole and within the limits above.
validate_alert_options() {
  local email_shape='^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$'
  if [[ -n "$ALERT_EMAIL" ]]; then
    [[ ${#ALERT_EMAIL} -le 254 && "$ALERT_EMAIL" =~ $email_shape ]] ||
      die_usage "--alert-email: '$ALERT_EMAIL' is not an email address such as ops@example.com"
  fi
  if [[ -n "$EXPECT_EVERY" ]]; then
    whole_number_within "$EXPECT_EVERY" 0 "$EXPECT_EVERY_MAX" ||
      die_usage "--expect-every: expected whole hours from 1 to $EXPECT_EVERY_MAX (Cloud Monitoring watches for an absence for at most 23.5 hours), or 0 to remove that alert; got '$EXPECT_EVERY'"
    EXPECT_EVERY=$((10#$EXPECT_EVERY))
  fi
  whole_number_within "$RETRYING_THRESHOLD" 1 "$RETRYING_THRESHOLD_MAX" ||
    die_usage "--retrying-threshold: expected a whole number from 1 to $RETRYING_THRESHOLD_MAX, got '$RETRYING_THRESHOLD'"
  RETRYING_THRESHOLD=$((10#$RETRYING_THRESHOLD))
}

# VALUE MIN MAX: digits only (no sign, no leading "0x"), read as decimal even with leading zeros.
whole_number_within() {
  [[ "$1" =~ ^[0-9]{1,6}$ ]] || return 1
  ((10#$1 >= $2 && 10#$1 <= $3))
}

# setup.sh: alerts are optional there, so an alert setting without the address would do nothing.
require_alert_email_if_tuned() {
  [[ -n "$ALERT_EMAIL" || -z "$ALERT_TUNING" ]] || die_usage "$ALERT_TUNING: needs --alert-email ADDR"
}
