# shellcheck shell=bash
# Shared by the deploy/ scripts: settings with their defaults, validation, and running gcloud
# (or, with --dry-run, printing the exact commands shell-quoted). Sourced, never run.
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source it

NOTIFIER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIGGERS=(finalize delete archive metadata)
ENTRY_POINT=handle_storage_event
# Not an event type: the scheduled flush of held digests, an HTTP function (PREFIX-flush) that a Cloud
# Scheduler job of the same name calls. Never part of "all".
FLUSH=flush
FLUSH_ENTRY_POINT=flush_digests
# Nor this: SendGrid's signed Event Webhook, a public HTTP function (PREFIX-events). Never part of "all".
EVENTS=events
EVENTS_ENTRY_POINT=sendgrid_events
# Trigger → event type, per generation (see shared reference: gcloud.md).
declare -A GEN2_EVENT_TYPE=(
  [finalize]=google.cloud.storage.object.v1.finalized
  [delete]=google.cloud.storage.object.v1.deleted
  [archive]=google.cloud.storage.object.v1.archived
  [metadata]=google.cloud.storage.object.v1.metadataUpdated
)
declare -A GEN1_EVENT_TYPE=(
  [finalize]=google.storage.object.finalize
  [delete]=google.storage.object.delete
  [archive]=google.storage.object.archive
  [metadata]=google.storage.object.metadataUpdate
)
# Trigger → the event type of a Cloud Storage Pub/Sub notification (--via pubsub).
declare -A NOTIFICATION_EVENT_TYPE=(
  [finalize]=OBJECT_FINALIZE
  [delete]=OBJECT_DELETE
  [archive]=OBJECT_ARCHIVE
  [metadata]=OBJECT_METADATA_UPDATE
)
# `gcloud storage buckets notifications list` prints one record per configuration, its fields under
# "Notification Configuration" (gcloud's lib/surface/storage/buckets/notifications/list.py). The
# topic comes back as //pubsub.googleapis.com/projects/P/topics/T; absent event types or prefix
# print as "-", and the prefix as base64, so any object name is one word on one line.
_NC='"Notification Configuration"'
NOTIFICATION_MATCH_FORMAT="value[separator=\" \"]($_NC.topic,$_NC.event_types.join(\",\").yesno(no=\"-\"),\
$_NC.object_name_prefix.encode(base64).yesno(no=\"-\"),$_NC.payload_format)"
NOTIFICATION_ID_FORMAT="value($_NC.id,$_NC.topic)"  # tab-separated
# A word starting with this is printed as it is by print_command (a shell expansion to keep).
RAW=$'\x01'

# Every setting: a flag, or the environment variable named here, or the default.
PROJECT="${GOOGLE_CLOUD_PROJECT:-}"
REGION="${NOTIFIER_REGION:-us-central1}"
BUCKET="${NOTIFIER_BUCKET:-}"
NAME_PREFIX="${NOTIFIER_NAME_PREFIX:-storage-notifier}"
SECRET="${NOTIFIER_SECRET:-sendgrid-api-key}"
SERVICE_ACCOUNT="${NOTIFIER_SERVICE_ACCOUNT:-}"
GEN="${NOTIFIER_GEN:-2}"
VIA="${NOTIFIER_VIA:-eventarc}"
DRY_RUN=0

die_usage() {
  printf '%s: %s\n' "$(basename "$0")" "$1" >&2
  printf "Run '%s --help' for the options.\n" "$0" >&2
  exit 2
}

# Options every script understands: sets CONSUMED to how many words it took, or returns 1.
parse_common_option() {
  CONSUMED=1
  case "$1" in
    --project | --region | --name-prefix)
      need_value "$@"
      CONSUMED=2
      case "$1" in
        --project) PROJECT="$2" ;;
        --region) REGION="$2" ;;
        --name-prefix) NAME_PREFIX="$2" ;;
      esac
      ;;
    --gen1) GEN=1 ;;
    --gen2) GEN=2 ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# Call with "$@" before reading an option's value from $2.
need_value() {
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die_usage "$1 needs a value"
}

common_help() {
  cat <<EOF
  --project ID          Google Cloud project (or GOOGLE_CLOUD_PROJECT; default: the project
                        of gcloud's active configuration, gcloud config get-value project)
  --region REGION       region of the functions (or NOTIFIER_REGION; default us-central1)
  --name-prefix PREFIX  functions are named PREFIX-TRIGGER (or NOTIFIER_NAME_PREFIX;
                        default storage-notifier)
  --gen1 | --gen2       1st or 2nd generation Cloud Run functions (or NOTIFIER_GEN=1|2;
                        default 2nd gen)
  --dry-run             print the exact gcloud commands, shell-quoted, and run nothing
  -h, --help            this help
EOF
}

validate_common() {
  local from=""
  if [[ -z "$PROJECT" ]]; then
    PROJECT="$(config_project)"
    from=" (from gcloud config)"
    [[ -n "$PROJECT" ]] ||
      die_usage "no project: pass --project ID, set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'"
  fi
  [[ "$PROJECT" =~ ^([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] ||
    die_usage "--project: '$PROJECT'$from is not a project ID (6-30 lowercase letters, digits, hyphens)"
  # Said once, on stderr: a command that picked the project itself names the one it picked.
  [[ -z "$from" ]] || printf '%s: project %s%s\n' "$(basename "$0")" "$PROJECT" "$from" >&2
  [[ "$REGION" =~ ^[a-z]+-[a-z]+[0-9]+$ ]] ||
    die_usage "--region: '$REGION' is not a region such as us-central1 or europe-west1"
  [[ "$NAME_PREFIX" =~ ^[a-z][a-z0-9-]{0,40}$ ]] ||
    die_usage "--name-prefix: '$NAME_PREFIX' must start with a letter and use only a-z, 0-9 and -"
  [[ "$GEN" == 1 || "$GEN" == 2 ]] || die_usage "NOTIFIER_GEN: expected 1 or 2, got '$GEN'"
  [[ -n "$SERVICE_ACCOUNT" ]] || SERVICE_ACCOUNT="$(default_service_account)"
  [[ "$SERVICE_ACCOUNT" =~ ^[a-z0-9-]+@[a-z0-9.:-]+$ ]] ||
    die_usage "--service-account: '$SERVICE_ACCOUNT' is not a service account email"
}

# The project gcloud itself would use: its active configuration's core/project (CLOUDSDK_CORE_PROJECT
# included). Reading the local configuration calls no API; empty when unset or without gcloud.
config_project() {
  command -v gcloud >/dev/null 2>&1 || return 0
  { gcloud config get-value project 2>/dev/null || true; } | head -n 1
}

validate_via() {
  [[ "$VIA" == eventarc || "$VIA" == pubsub ]] || die_usage "--via: expected eventarc or pubsub, got '$VIA'"
  if [[ "$VIA" == pubsub && "$NAME_PREFIX" == goog* ]]; then
    die_usage "--name-prefix: Pub/Sub topic names (PREFIX-TRIGGER) cannot start with 'goog'"
  fi
}

validate_secret_name() {
  [[ "$SECRET" =~ ^[A-Za-z0-9_-]{1,255}$ ]] ||
    die_usage "--secret: '$SECRET' is not a Secret Manager secret name (letters, digits, - and _)"
}

# A domain-scoped project "example.com:proj" has accounts at proj.example.com.iam.gserviceaccount.com.
default_service_account() {
  local id="$PROJECT"
  [[ "$id" != *:* ]] || id="${id#*:}.${id%%:*}"
  echo "storage-notifier@${id}.iam.gserviceaccount.com"
}

# TRIGGER or "all" → SELECTED_TRIGGERS, or a usage error.
select_triggers() {
  if [[ "$1" == all ]]; then
    SELECTED_TRIGGERS=("${TRIGGERS[@]}")
  elif [[ -n "$1" && ( -v "GEN2_EVENT_TYPE[$1]" || "$1" == "$FLUSH" || "$1" == "$EVENTS" ) ]]; then
    SELECTED_TRIGGERS=("$1")
  else
    die_usage "unknown trigger '$1': expected one of ${TRIGGERS[*]}, all, $FLUSH or $EVENTS"
  fi
}

function_name() { echo "${NAME_PREFIX}-$1"; }

gen2_event_type() { echo "${GEN2_EVENT_TYPE[$1]}"; }

# --via pubsub: one topic per function, named like it, in the function's project.
topic_id() { function_name "$1"; }

topic_path() { echo "projects/$PROJECT/topics/$(topic_id "$1")"; }

# How Cloud Storage writes the topic into a notification configuration.
notification_topic() { echo "//pubsub.googleapis.com/$(topic_path "$1")"; }

gen1_event_type() { echo "${GEN1_EVENT_TYPE[$1]}"; }

gen_flag() { if [[ "$GEN" == 2 ]]; then echo --gen2; else echo --no-gen2; fi; }

# Bucket names: 3-63 characters (222 with dots), lowercase letters, digits, - _ and ., starting and
# ending with a letter or digit; not an IP address. Strips a gs:// prefix from BUCKET.
validate_bucket() {
  local given="$BUCKET"
  BUCKET="${BUCKET#gs://}"
  BUCKET="${BUCKET%/}"
  [[ -n "$BUCKET" ]] || die_usage "no bucket: pass --bucket NAME or set NOTIFIER_BUCKET"
  if [[ ! "$BUCKET" =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ || "$BUCKET" =~ ^[0-9.]+$ ||
    "$BUCKET" == goog* || "$BUCKET" == *..* ]] ||
    { [[ "$BUCKET" != *.* ]] && ((${#BUCKET} > 63)); }; then
    die_usage "--bucket: '$given' is not a valid Cloud Storage bucket name"
  fi
}

# A python3 for deploy/envfile.py: CLOUDSDK_PYTHON (gcloud's own setting), python3 on PATH, else
# the one the Google Cloud CLI bundles (SDK/platform/bundledpythonunix, next to SDK/bin/gcloud).
find_python() {
  local candidate gcloud_path
  for candidate in "${CLOUDSDK_PYTHON:-}" python3; do
    if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  gcloud_path="$(command -v gcloud)" || return 1
  candidate="$(dirname "$(readlink -f "$gcloud_path")")/../platform/bundledpythonunix/bin/python3"
  [[ -x "$candidate" ]] && echo "$candidate"
}

require_gcloud() {
  if ! command -v gcloud >/dev/null 2>&1; then
    echo "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then run 'gcloud auth login'." >&2
    exit 127
  fi
}

# Quote one word so a POSIX shell reads it back unchanged.
shell_quote() {
  if [[ "$1" == "$RAW"* ]]; then
    printf '%s' "${1#"$RAW"}"
  elif [[ "$1" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  else
    quote_literal "$1"
  fi
}

# Single-quote any text, newlines and all: nothing inside can end the word or expand.
quote_literal() {
  printf "'%s'" "${1//\'/\'\\\'\'}"
}

print_command() {
  local word out=""
  for word in "$@"; do out+="$(shell_quote "$word") "; done
  printf '%s\n' "${out% }"
}

# Under --dry-run print "describe || create" as one runnable line; otherwise create only if the
# describe command fails. Arguments: the describe command, "--", the create command.
ensure() {
  local describe=() create=()
  while [[ "$1" != -- ]]; do describe+=("$1"); shift; done
  shift
  create=("$@")
  if ((DRY_RUN)); then
    printf '%s >/dev/null 2>&1 || %s\n' "$(print_command "${describe[@]}")" "$(print_command "${create[@]}")"
  elif "${describe[@]}" >/dev/null 2>&1; then
    printf '= exists: %s\n' "$(print_command "${describe[@]:0:5}")" >&2
  else
    run "${create[@]}"
  fi
}

# How a describe's error is classed: "refused" (401/403, PERMISSION_DENIED, credentials), checked first
# because its text may name a project such as shop-404 or say "token not found"; "gone" only in the
# exact words gcloud (528, lib/googlecloudsdk) prints for a 404 of that command: Cloud Storage's
# GcsNotFoundError "gs://B not found: 404.", functions' ResponseError "status=[404]" (gen1 and gen2),
# Pub/Sub's and Cloud Scheduler's NOT_FOUND; anything else "failed". Part of the script teardown.sh runs or, with --dry-run, prints.
DESCRIBE_ERROR_KIND_FN="$(
  cat <<'EOF'
describe_error_kind() {
  case $1 in
    *PERMISSION_DENIED* | *UNAUTHENTICATED* | *"status=[40"[13]"]"* | *"HTTPError 40"[13]* | \
      *"Permission '"* | *"does not have"* | *"not authorized"* | *"auth tokens"* | *"gcloud auth"* | \
      *"active account selected"*) echo refused ;;
    *"ERROR: (gcloud.storage.buckets.describe) gs://"*" not found: 404."* | \
      *"ERROR: (gcloud.functions.describe) ResponseError: status=[404], "* | \
      *"ERROR: (gcloud.pubsub.topics.describe) NOT_FOUND: "* | \
      *"ERROR: (gcloud.scheduler.jobs.describe) NOT_FOUND: "*) echo gone ;;
    *) echo failed ;;
  esac
}
EOF
)"

# Run a command, or print it under --dry-run.
run() {
  if ((DRY_RUN)); then
    print_command "$@"
  else
    printf '+ %s\n' "$(print_command "$@")" >&2
    "$@"
  fi
}
