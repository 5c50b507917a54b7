#!/usr/bin/env bash
# Deploy storage-notifier for one trigger type (or all four). Every trigger deploys the same
# source and the same entry point; only the function name and the event type differ.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

ENV_FILE="${NOTIFIER_ENV_FILE:-}"
MEMORY="${NOTIFIER_MEMORY:-}"
TIMEOUT="${NOTIFIER_TIMEOUT:-60s}"
MAX_INSTANCES="${NOTIFIER_MAX_INSTANCES:-10}"
CONCURRENCY="${NOTIFIER_CONCURRENCY:-1}"
RUNTIME="${NOTIFIER_RUNTIME:-python312}"
TRIGGER_LOCATION="${NOTIFIER_TRIGGER_LOCATION:-}"
RETRY=1

usage() {
  cat <<EOF
Usage: $0 TRIGGER [options]

Deploy handle_storage_event (main.py) as the Cloud Run function PREFIX-TRIGGER, triggered by
one Cloud Storage event type on one bucket. TRIGGER is finalize, delete, archive, metadata or all.

  --bucket NAME         bucket whose events trigger the function (or NOTIFIER_BUCKET). Required.
$(common_help)
  --env-file FILE       YAML map of non-secret settings, passed with --env-vars-file
                        (or NOTIFIER_ENV_FILE; default deploy/env.yaml if it exists;
                        deploy/env.example.yaml documents every variable)
  --secret NAME         Secret Manager secret holding the SendGrid key, mounted as
                        SENDGRID_API_KEY (or NOTIFIER_SECRET; default sendgrid-api-key)
  --service-account SA  runtime and trigger identity (or NOTIFIER_SERVICE_ACCOUNT; default
                        storage-notifier@PROJECT.iam.gserviceaccount.com, made by setup.sh)
  --memory SIZE         memory per instance (or NOTIFIER_MEMORY; default 256Mi, 256MB on gen1)
  --timeout DURATION    function timeout, at most 540s (or NOTIFIER_TIMEOUT; default 60s);
                        the in-process retry deadline is set 15s shorter
  --max-instances N     upper bound on instances (or NOTIFIER_MAX_INSTANCES; default 10)
  --concurrency N       requests per instance, 2nd gen (or NOTIFIER_CONCURRENCY; default 1;
                        more than 1 needs at least 1 vCPU, i.e. --memory 2Gi)
  --trigger-location L  where the bucket's events originate (default: the bucket's location,
                        looked up with gcloud storage buckets describe)
  --runtime ID          Python runtime (or NOTIFIER_RUNTIME; default python312)
  --no-retry            do not redeliver events whose delivery failed transiently
                        (default: --retry, so no email is lost to a SendGrid outage)

Examples:
  $0 finalize --project acme-prod --bucket acme-uploads
  $0 all --project acme-prod --bucket acme-uploads --region europe-west1 --dry-run
EOF
}

POSITIONAL=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --bucket) need_value "$@"; BUCKET="$2"; shift 2 ;;
    --env-file) need_value "$@"; ENV_FILE="$2"; shift 2 ;;
    --secret) need_value "$@"; SECRET="$2"; shift 2 ;;
    --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
    --memory) need_value "$@"; MEMORY="$2"; shift 2 ;;
    --timeout) need_value "$@"; TIMEOUT="$2"; shift 2 ;;
    --max-instances) need_value "$@"; MAX_INSTANCES="$2"; shift 2 ;;
    --concurrency) need_value "$@"; CONCURRENCY="$2"; shift 2 ;;
    --trigger-location) need_value "$@"; TRIGGER_LOCATION="$2"; shift 2 ;;
    --runtime) need_value "$@"; RUNTIME="$2"; shift 2 ;;
    --no-retry) RETRY=0; shift ;;
    --retry) RETRY=1; shift ;;
    -*)
      if parse_common_option "$@"; then shift "$CONSUMED"; else die_usage "unknown option $1"; fi
      ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done

((${#POSITIONAL[@]} == 1)) || die_usage "expected one TRIGGER (finalize, delete, archive, metadata or all)"
select_triggers "${POSITIONAL[0]}"
validate_common
validate_bucket

[[ "$TIMEOUT" =~ ^0*([0-9]{1,3})s?$ ]] || die_usage "--timeout: expected 20s to 540s, such as 60s, got '$TIMEOUT'"
timeout_s=$((10#${BASH_REMATCH[1]}))  # decimal, whatever its leading zeros (bash reads 0030 as octal)
((timeout_s >= 20 && timeout_s <= 540)) || die_usage "--timeout: must be 20s to 540s, got '$TIMEOUT'"
[[ "$MAX_INSTANCES" =~ ^[1-9][0-9]*$ ]] || die_usage "--max-instances: expected a whole number >= 1, got '$MAX_INSTANCES'"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]{0,2}$|^1000$ ]] || die_usage "--concurrency: expected 1 to 1000, got '$CONCURRENCY'"
[[ "$RUNTIME" =~ ^python3(1[2-9]|[2-9][0-9])$ ]] || die_usage "--runtime: expected python312 or newer, got '$RUNTIME'"
validate_secret_name
if [[ -z "$MEMORY" ]]; then
  if [[ "$GEN" == 2 ]]; then MEMORY=256Mi; else MEMORY=256MB; fi
fi
[[ "$MEMORY" =~ ^[0-9]+([kKmMgG]i?)?[bB]?$ ]] || die_usage "--memory: expected a size such as 256Mi or 1Gi, got '$MEMORY'"
if ((CONCURRENCY > 1)); then
  # Cloud Run functions need a whole vCPU for concurrent requests: 2 GiB of memory brings one.
  [[ "$MEMORY" =~ ^([0-9]+)([kKmMgG]?) ]]
  size=$((10#${BASH_REMATCH[1]}))
  case "${BASH_REMATCH[2],,}" in g) mib=$((size * 1024)) ;; k) mib=$((size / 1024)) ;; *) mib=$size ;; esac
  ((GEN == 1 || mib >= 2048)) || die_usage "--concurrency $CONCURRENCY needs at least 1 vCPU: use --memory 2Gi or more"
fi
if [[ -z "$ENV_FILE" && -f "$NOTIFIER_ROOT/deploy/env.yaml" ]]; then
  ENV_FILE="$NOTIFIER_ROOT/deploy/env.yaml"
fi
if [[ -n "$ENV_FILE" && ! -f "$ENV_FILE" ]]; then
  die_usage "--env-file: '$ENV_FILE' does not exist (copy deploy/env.example.yaml to start one)"
fi

# The function's environment: the user's file, read as YAML, checked (no secrets, only strings) and
# written back one quoted value a line; then a retry deadline that ends before the timeout.
deploy_env="$(mktemp "${TMPDIR:-/tmp}/storage-notifier-env.XXXXXX")"
trap 'rm -f "$deploy_env"' EXIT
if [[ -n "$ENV_FILE" ]]; then
  python="$(find_python)" ||
    die_usage "--env-file: reading '$ENV_FILE' needs python3 (or the Google Cloud CLI, which bundles it)"
  if ! problem="$("$python" "$NOTIFIER_ROOT/deploy/envfile.py" --drop NOTIFY_DEADLINE_SECONDS \
    --drop NOTIFY_KEY_SECRET -- "$ENV_FILE" 2>&1 >"$deploy_env")"; then
    die_usage "--env-file: ${problem:-could not read $ENV_FILE}"
  fi
fi
{
  echo "NOTIFY_DEADLINE_SECONDS: \"$((timeout_s - 15))\""
  echo "NOTIFY_KEY_SECRET: \"$SECRET\""  # its name only, so error messages can say which secret to fix
} >>"$deploy_env"
((DRY_RUN)) || require_gcloud
if ((DRY_RUN)); then
  # Print a script that runs as it stands: the env file first (one single-quoted word, which no
  # content can end), then the commands.
  content="$(cat "$deploy_env"; echo .)"  # the dot keeps the final newline from $(...)
  printf 'printf %%s %s > %s\n' "$(quote_literal "${content%.}")" "$(shell_quote "$deploy_env")"
fi

location_arg=()
if [[ "$GEN" == 2 ]]; then
  if [[ -n "$TRIGGER_LOCATION" ]]; then
    location_arg=("--trigger-location=$TRIGGER_LOCATION")
  elif ((DRY_RUN)); then
    # shellcheck disable=SC2016  # printed for the user's shell to expand
    printf 'location=$(%s | tr "[:upper:]" "[:lower:]")\n' \
      "$(print_command gcloud storage buckets describe "gs://$BUCKET" "--project=$PROJECT" "--format=value(location)")"
    location_arg=("${RAW}--trigger-location=\"\$location\"")
  else
    location="$(gcloud storage buckets describe "gs://$BUCKET" "--project=$PROJECT" "--format=value(location)")"
    [[ -n "$location" ]] || { echo "could not read the location of gs://$BUCKET" >&2; exit 1; }
    location_arg=("--trigger-location=${location,,}")
  fi
fi

for trigger in "${SELECTED_TRIGGERS[@]}"; do
  name="$(function_name "$trigger")"
  command=(gcloud functions deploy "$name" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION"
    "--runtime=$RUNTIME" "--source=$NOTIFIER_ROOT" "--entry-point=$ENTRY_POINT")
  if [[ "$GEN" == 2 ]]; then
    command+=("--trigger-event-filters=type=$(gen2_event_type "$trigger")"
      "--trigger-event-filters=bucket=$BUCKET" "${location_arg[@]}"
      "--trigger-service-account=$SERVICE_ACCOUNT" "--concurrency=$CONCURRENCY")
  else
    command+=("--trigger-resource=$BUCKET" "--trigger-event=$(gen1_event_type "$trigger")")
  fi
  command+=("--service-account=$SERVICE_ACCOUNT" "--memory=$MEMORY" "--timeout=${timeout_s}s"
    "--max-instances=$MAX_INSTANCES" "--env-vars-file=$deploy_env"
    "--set-secrets=SENDGRID_API_KEY=$SECRET:latest")
  if ((RETRY)); then command+=(--retry); else command+=(--no-retry); fi
  command+=(--quiet)
  run "${command[@]}"
  if [[ "$GEN" == 2 ]]; then
    # Eventarc invokes the function as the trigger service account: allow exactly this function.
    run gcloud functions add-invoker-policy-binding "$name" "--project=$PROJECT" "--region=$REGION" \
      "--member=serviceAccount:$SERVICE_ACCOUNT" --quiet
  fi
done
