#!/usr/bin/env bash
# One-time, idempotent project set-up for storage-notifier: APIs, the runtime service account and
# its roles, the Cloud Storage service agent's Pub/Sub role, the SendGrid secret, and optionally
# the state bucket and read access to watched buckets. Safe to run again: what exists is left as
# it is.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# shellcheck source=deploy/alerts/options.sh
source "$(dirname "${BASH_SOURCE[0]}")/alerts/options.sh"

STATE_BUCKET="${NOTIFY_STATE_BUCKET:-}"
READ_BUCKETS=()
KEEP_SECRET=0
APIS=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com
  artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com
  storage.googleapis.com logging.googleapis.com secretmanager.googleapis.com
  cloudscheduler.googleapis.com)  # the job calling the flush of held digests (deploy.sh flush)
# What the runtime (and trigger) identity needs on the project. run.invoker is granted per
# function by deploy.sh; the secret and the state bucket are granted on those resources only.
PROJECT_ROLES=(roles/eventarc.eventReceiver roles/logging.logWriter)

usage() {
  cat <<EOF
Usage: $0 [options]

Prepare a Google Cloud project for storage-notifier. Reads the SendGrid API key from standard
input ('$0 --project P < key.txt') or asks for it without showing it; never from the command line.

$(common_help)
  --secret NAME         Secret Manager secret for the SendGrid key (or NOTIFIER_SECRET;
                        default sendgrid-api-key)
  --keep-secret         leave an existing secret's value as it is (no key is read)
  --service-account SA  runtime identity to create (or NOTIFIER_SERVICE_ACCOUNT; default
                        storage-notifier@PROJECT.iam.gserviceaccount.com)
  --state-bucket NAME   also create this bucket for delivery state (or NOTIFY_STATE_BUCKET),
                        readable and writable by the service account only, with a lifecycle
                        rule deleting ledger records after 30 days (deploy/state-lifecycle.json)
  --bucket NAME         a watched bucket whose objects emails link to (link = "signed") or
                        attach (attach = true): the service account may read its objects
                        (roles/storage.objectViewer) and sign links as itself
                        (roles/iam.serviceAccountTokenCreator on itself). Repeat for several
                        buckets. Only as an option: read access is granted when asked for
$(alert_help)
EOF
}

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --secret) need_value "$@"; SECRET="$2"; shift 2 ;;
    --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
    --state-bucket) need_value "$@"; STATE_BUCKET="$2"; shift 2 ;;
    --bucket) need_value "$@"; READ_BUCKETS+=("$2"); shift 2 ;;
    --keep-secret) KEEP_SECRET=1; shift ;;
    *)
      if parse_common_option "$@" || parse_alert_option "$@"; then shift "$CONSUMED"; else die_usage "unknown argument $1"; fi
      ;;
  esac
done

validate_common
validate_secret_name
validate_alert_options
require_alert_email_if_tuned
if [[ -n "$STATE_BUCKET" ]]; then
  BUCKET="$STATE_BUCKET"
  validate_bucket
  STATE_BUCKET="$BUCKET"
fi
# Each bucket once (gs://B and B are one), in the order given: a binding is granted once.
declare -A seen_bucket=()
given_buckets=("${READ_BUCKETS[@]}")
READ_BUCKETS=()
for BUCKET in "${given_buckets[@]}"; do
  validate_bucket
  [[ -v "seen_bucket[$BUCKET]" ]] || READ_BUCKETS+=("$BUCKET")
  seen_bucket[$BUCKET]=1
done
((DRY_RUN)) || require_gcloud
member="serviceAccount:$SERVICE_ACCOUNT"

run gcloud services enable "${APIS[@]}" "--project=$PROJECT"

ensure gcloud iam service-accounts describe "$SERVICE_ACCOUNT" "--project=$PROJECT" -- \
  gcloud iam service-accounts create "${SERVICE_ACCOUNT%%@*}" "--project=$PROJECT" \
  "--display-name=storage-notifier runtime"
for role in "${PROJECT_ROLES[@]}"; do
  run gcloud projects add-iam-policy-binding "$PROJECT" "--member=$member" "--role=$role" \
    --condition=None --quiet
done

# Cloud Storage publishes its events through Pub/Sub as its own service agent.
if ((DRY_RUN)); then
  # shellcheck disable=SC2016  # printed for the user's shell to expand
  printf 'storage_agent=$(%s)\n' "$(print_command gcloud storage service-agent "--project=$PROJECT")"
  storage_member="${RAW}--member=\"serviceAccount:\$storage_agent\""
else
  storage_member="--member=serviceAccount:$(gcloud storage service-agent "--project=$PROJECT")"
fi
run gcloud projects add-iam-policy-binding "$PROJECT" "$storage_member" \
  --role=roles/pubsub.publisher --condition=None --quiet

# The SendGrid key: a new version of the secret, read from stdin or a silent prompt, never argv.
secret_exists=0
if ((!DRY_RUN)) && gcloud secrets describe "$SECRET" "--project=$PROJECT" >/dev/null 2>&1; then
  secret_exists=1
fi
ensure gcloud secrets describe "$SECRET" "--project=$PROJECT" -- \
  gcloud secrets create "$SECRET" "--project=$PROJECT" --replication-policy=automatic
add_version=(gcloud secrets versions add "$SECRET" "--project=$PROJECT" --data-file=-)
if ((KEEP_SECRET && (secret_exists || DRY_RUN))); then
  echo "# keeping the current value of secret $SECRET" >&2
elif ((DRY_RUN)); then
  printf '%s  # the key on standard input\n' "$(print_command "${add_version[@]}")"
else
  if [[ -t 0 ]]; then
    read -r -s -p "SendGrid API key (Mail Send permission only; not shown): " key
    echo >&2
  else
    key="$(cat)"
  fi
  key="${key//[$'\t\r\n ']/}"
  [[ -n "$key" ]] || { echo "no SendGrid API key on standard input or at the prompt" >&2; exit 2; }
  printf '+ %s  # the key, from standard input\n' "$(print_command "${add_version[@]}")" >&2
  # printf is a shell builtin: the key goes through a pipe, never into any process's argv.
  printf '%s' "$key" | "${add_version[@]}"
  unset key
fi
run gcloud secrets add-iam-policy-binding "$SECRET" "--project=$PROJECT" "--member=$member" \
  --role=roles/secretmanager.secretAccessor --condition=None --quiet

if [[ -n "$STATE_BUCKET" ]]; then
  ensure gcloud storage buckets describe "gs://$STATE_BUCKET" "--project=$PROJECT" -- \
    gcloud storage buckets create "gs://$STATE_BUCKET" "--project=$PROJECT" "--location=$REGION" \
    --uniform-bucket-level-access
  run gcloud storage buckets add-iam-policy-binding "gs://$STATE_BUCKET" "--member=$member" \
    --role=roles/storage.objectAdmin --quiet
  # Ledger records are only needed while an event can still be redelivered; dead letters are kept.
  run gcloud storage buckets update "gs://$STATE_BUCKET" "--project=$PROJECT" \
    "--lifecycle-file=$NOTIFIER_ROOT/deploy/state-lifecycle.json"
fi

# Signed links and attachments read the object; a link is signed through the IAM signBlob API as
# the runtime service account itself, which needs the token creator role on itself.
for bucket in "${READ_BUCKETS[@]}"; do
  run gcloud storage buckets add-iam-policy-binding "gs://$bucket" "--member=$member" \
    --role=roles/storage.objectViewer --condition=None --quiet
done
if ((${#READ_BUCKETS[@]})); then
  run gcloud iam service-accounts add-iam-policy-binding "$SERVICE_ACCOUNT" "--project=$PROJECT" \
    "--member=$member" --role=roles/iam.serviceAccountTokenCreator --condition=None --quiet
fi

if [[ -n "$ALERT_EMAIL" ]]; then
  alert_args=(--project "$PROJECT" "--gen$GEN" --alert-email "$ALERT_EMAIL" --retrying-threshold "$RETRYING_THRESHOLD")
  [[ -z "$EXPECT_EVERY" ]] || alert_args+=(--expect-every "$EXPECT_EVERY")
  ((!DRY_RUN)) || alert_args+=(--dry-run)
  "$NOTIFIER_ROOT/deploy/alerts.sh" "${alert_args[@]}"
fi

if ((!DRY_RUN)); then
  echo "Set-up done. Next: deploy/deploy.sh finalize --project $PROJECT --bucket BUCKET" >&2
fi
