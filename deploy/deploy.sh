#!/usr/bin/env bash
# Deploy storage-notifier for one trigger type (or all four), or its scheduled flush. Every trigger
# deploys the same source and the same entry point; only the function name and the event type differ.
set -euo pipefail
# shellcheck source=deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# shellcheck source=deploy/_http_functions.sh
source "$(dirname "${BASH_SOURCE[0]}")/_http_functions.sh"

# An instance's size, chosen together from `make bench`'s capacity rows. One line each to change.
DEFAULT_CPU=1              # a whole vCPU: Cloud Run serves concurrent requests only with 1 vCPU or more
DEFAULT_MEMORY_GEN2=512Mi  # an instance peaks near 66 MiB at 32 (make bench): room for the requests in flight
DEFAULT_MEMORY_GEN1=256MB  # 1st gen: one request at a time, and its CPU follows the memory
DEFAULT_CONCURRENCY=32     # ~4 ms of CPU per event, the rest waits on SendGrid; make bench's capacity rows
DEFAULT_MAX_INSTANCES=10   # bounds what a runaway bucket costs: instances x concurrency requests at most
SPARE_THREADS=8            # THREADS = concurrency + these: a request over the cap gets its 429 at once
MAX_THREADS=999            # below gunicorn's worker_connections (1000): see the THREADS line

ENV_FILE="${NOTIFIER_ENV_FILE:-}"
MEMORY="${NOTIFIER_MEMORY:-}"
CPU="${NOTIFIER_CPU:-}"  # empty: the default of the generation (2nd gen only has --cpu)
TIMEOUT="${NOTIFIER_TIMEOUT:-60s}"
MAX_INSTANCES="${NOTIFIER_MAX_INSTANCES:-$DEFAULT_MAX_INSTANCES}"
CONCURRENCY="${NOTIFIER_CONCURRENCY:-}"  # empty: the default of the generation (1st gen has none)
RUNTIME="${NOTIFIER_RUNTIME:-python312}"
BUILD_EPOCH=315532801 # 1980-01-01T00:00:01Z, the time the buildpacks lifecycle gives every file
TRIGGER_LOCATION="${NOTIFIER_TRIGGER_LOCATION:-}"
OBJECT_PREFIX="${NOTIFIER_OBJECT_PREFIX:-}"
RETRY=1
# notifier/flush.py FLUSH_BUDGET_SECONDS: a flush starts no digest after this; then one send may take
# the usual deadline, so the flush function's timeout is this plus --timeout.
FLUSH_BUDGET_SECONDS=240
FLUSH_SCHEDULE="* * * * *"  # notifier/digest.py SCHEDULE: every minute, as make sandbox runs it
WEBHOOK_KEY_SECRET="${NOTIFIER_WEBHOOK_KEY_SECRET:-sendgrid-webhook-public-key}"

usage() {
  cat <<EOF
Usage: $0 TRIGGER [options]

Deploy handle_storage_event (main.py) as the Cloud Run function PREFIX-TRIGGER, triggered by
one Cloud Storage event type on one bucket. TRIGGER is finalize, delete, archive, metadata or all.

TRIGGER flush deploys flush_digests (main.py, same source, same --env-file and --secret) as the
HTTP function PREFIX-flush, callable only by the service account, and creates or updates the Cloud
Scheduler job PREFIX-flush that POSTs to it every minute as that account: it sends the digests of
rules with digest or max_emails (without it their events stay held). Its timeout is 240s (the
flush's budget) plus --timeout; --bucket, --via and the trigger options do not apply to it.

TRIGGER events deploys sendgrid_events (main.py, same source and --env-file) as the
PUBLIC HTTP function PREFIX-events, SendGrid's Event Webhook: SendGrid cannot authenticate to
Cloud Run, so the signature of each batch is the authentication (Signed Event Webhook; unsigned
or tampered batches get 403). The verification key is the secret --webhook-key-secret, mounted as
SENDGRID_WEBHOOK_PUBLIC_KEY: create it first (checked before the deploy); the service account is
granted read access to it. It never sends mail, so it gets no SendGrid API key and runs with
NOTIFY_BACKEND=console. Then it prints the URL to paste into SendGrid.

  --bucket NAME         bucket whose events trigger the function (or NOTIFIER_BUCKET). Required.
  --via eventarc|pubsub how events reach the function (or NOTIFIER_VIA; default eventarc):
                        eventarc  a storage trigger, filtered on bucket and event type only
                        pubsub    a notification configuration on the bucket publishes to the
                                  topic PREFIX-TRIGGER (made if absent), which triggers the
                                  function; made once, found again on the next deploy
  --prefix PATH         with --via pubsub: only objects whose names start with PATH, filtered
                        by Cloud Storage itself (or NOTIFIER_OBJECT_PREFIX)
$(common_help)
  --env-file FILE       YAML map of non-secret settings, passed with --env-vars-file
                        (or NOTIFIER_ENV_FILE; default deploy/env.yaml if it exists;
                        deploy/env.example.yaml documents every variable)
  --secret NAME         Secret Manager secret holding the SendGrid key, mounted as
                        SENDGRID_API_KEY (or NOTIFIER_SECRET; default sendgrid-api-key)
  --webhook-key-secret NAME  events: Secret Manager secret holding the Event Webhook's
                        verification key, mounted as SENDGRID_WEBHOOK_PUBLIC_KEY (or
                        NOTIFIER_WEBHOOK_KEY_SECRET; default sendgrid-webhook-public-key)
  --service-account SA  runtime and trigger identity (or NOTIFIER_SERVICE_ACCOUNT; default
                        storage-notifier@PROJECT.iam.gserviceaccount.com, made by setup.sh)
  --cpu N               vCPUs per instance (or NOTIFIER_CPU; 2nd gen only): .08 to 1, such
                        as .5 or 500m, or 2, 4, 6 or 8; default $DEFAULT_CPU, a whole vCPU, which
                        concurrent requests need
  --memory SIZE         memory per instance (or NOTIFIER_MEMORY; default $DEFAULT_MEMORY_GEN2, room for
                        the requests in flight, or the least --cpu 4 and up allow; $DEFAULT_MEMORY_GEN1
                        on gen1, where the CPU follows it)
  --timeout DURATION    function timeout, at most 540s (or NOTIFIER_TIMEOUT; default 60s);
                        the in-process retry deadline is set 15s shorter
  --max-instances N     upper bound on instances (or NOTIFIER_MAX_INSTANCES; default $DEFAULT_MAX_INSTANCES,
                        which bounds what a runaway bucket costs)
  --concurrency N       requests per instance, 2nd gen only (or NOTIFIER_CONCURRENCY;
                        default $DEFAULT_CONCURRENCY: an event mostly waits on SendGrid; above 1 needs
                        --cpu 1); the function's environment gets THREADS N + $SPARE_THREADS (at most
                        $MAX_THREADS) and NOTIFY_MAX_IN_FLIGHT N (1st gen: one request at a time)
  --trigger-location L  --via eventarc: where the bucket's events originate (default: the
                        bucket's location, looked up with gcloud storage buckets describe)
  --runtime ID          Python runtime (or NOTIFIER_RUNTIME; default python312)
  --no-retry            do not redeliver events whose delivery failed transiently
                        (default: --retry, so no email is lost to a SendGrid outage)

Examples:
  $0 finalize --project acme-prod --bucket acme-uploads
  $0 all --project acme-prod --bucket acme-uploads --region europe-west1 --dry-run
  $0 finalize --project acme-prod --bucket acme-uploads --via pubsub --prefix reports/
  $0 flush --project acme-prod --region europe-west1
  $0 events --project acme-prod --region europe-west1
EOF
}

# An object name prefix as Cloud Storage takes it: 1 to 1024 bytes of UTF-8, no CR or LF.
validate_object_prefix() {
  [[ -n "$OBJECT_PREFIX" ]] || return 0
  [[ "$VIA" == pubsub ]] || die_usage "--prefix: Eventarc storage triggers filter on the bucket only;\
 use --via pubsub to filter on an object name prefix"
  [[ "$OBJECT_PREFIX" != *[$'\r\n']* ]] ||
    die_usage "--prefix: an object name cannot hold a carriage return or line feed"
  [[ "$OBJECT_PREFIX" != gs://* ]] ||
    die_usage "--prefix: an object name prefix such as reports/, not a gs:// URL (the bucket is --bucket)"
  local bytes
  bytes="$(LC_ALL=C && printf '%s' "${#OBJECT_PREFIX}")"  # bytes, not characters
  ((bytes <= 1024)) || die_usage "--prefix: at most 1024 bytes, got $bytes"
  printf '%s' "$OBJECT_PREFIX" | iconv -f UTF-8 -t UTF-8 >/dev/null 2>&1 ||
    die_usage "--prefix: object names are UTF-8, and this is not"
}

# The notification configuration publishing TRIGGER's events on BUCKET to its topic: made unless
# one with the same topic, event type, prefix and JSON payload is listed already, as a bucket holds
# at most 100 of them (10 per event type). Under --dry-run, the same check as one printed line.
ensure_notification() {
  local trigger="$1" expected topic listing line scope others=0
  local list=(gcloud storage buckets notifications list "gs://$BUCKET" "--project=$PROJECT"
    "--format=$NOTIFICATION_MATCH_FORMAT")
  local create=(gcloud storage buckets notifications create "gs://$BUCKET" "--topic=$(topic_path "$trigger")"
    "--event-types=${NOTIFICATION_EVENT_TYPE[$trigger]}")
  [[ -z "$OBJECT_PREFIX" ]] || create+=("--object-prefix=$OBJECT_PREFIX")
  create+=(--payload-format=json "--project=$PROJECT")
  topic="$(notification_topic "$trigger")"
  expected="$topic ${NOTIFICATION_EVENT_TYPE[$trigger]} $(prefix_base64) JSON_API_V1"
  if ((DRY_RUN)); then
    scope="every object"
    [[ -z "$OBJECT_PREFIX" ]] || scope="objects named $(quote_literal "$OBJECT_PREFIX")..."
    printf '# gs://%s -> topic %s: %s of %s (made unless listed already)\n' "$BUCKET" "$(topic_id "$trigger")" \
      "${NOTIFICATION_EVENT_TYPE[$trigger]}" "$scope"
    # grep reads to the end (no -q): under pipefail, gcloud cut short would look like "not listed".
    printf '%s | grep -xF -- %s >/dev/null || %s\n' "$(print_command "${list[@]}")" \
      "$(quote_literal "$expected")" "$(print_command "${create[@]}")"
    return 0
  fi
  listing="$(run "${list[@]}")"  # a failed listing stops the deploy: never create blindly
  if grep -xF -- "$expected" <<<"$listing" >/dev/null; then
    printf '= exists: notification of gs://%s to topic %s\n' "$BUCKET" "$(topic_id "$trigger")" >&2
  else
    run "${create[@]}"
  fi
  while IFS= read -r line; do
    if [[ "$line" == "$topic "* && "$line" != "$expected" ]]; then others=$((others + 1)); fi
  done <<<"$listing"
  if ((others)); then
    printf '%s: %d other notification configuration(s) on gs://%s publish to topic %s (another prefix or %s' \
      "$(basename "$0")" "$others" "$BUCKET" "$(topic_id "$trigger")" "event type), so its function gets their" >&2
    printf ' events too; deploy/teardown.sh %s --via pubsub --bucket %s removes them all\n' "$trigger" "$BUCKET" >&2
  fi
}

# The prefix as gcloud's encode(base64) prints it: its Latin-1 bytes when every character has one,
# else UTF-8 (EncodeToBytes in googlecloudsdk/core/console/console_attr.py); "-" for none.
prefix_base64() {
  local encoded
  if [[ -z "$OBJECT_PREFIX" ]]; then
    echo -
  elif encoded="$(printf '%s' "$OBJECT_PREFIX" | iconv -f UTF-8 -t ISO-8859-1 2>/dev/null | base64)"; then
    printf '%s\n' "${encoded//$'\n'/}"
  else
    printf '%s' "$OBJECT_PREFIX" | base64 | tr -d '\n'
    echo
  fi
}

# What Cloud Run accepts (cloud.google.com/run/docs/configuring/cpu): 80m to 1000m, or a whole 1, 2,
# 4, 6 or 8 vCPUs; and memory for the CPU, in MiB indexed by millicores (bash lists them in order):
# from that CPU up at least the floor, below that CPU at most the cap.
WHOLE_CPUS=" 1000 2000 4000 6000 8000 "
MEMORY_FLOOR_MIB=([4000]=2048 [6000]=4096)
MEMORY_CAP_MIB=([500]=512 [1000]=1024)
MIB=1048576

# A CPU count as gcloud takes it (1, 2.0, .5, 2000m) as millicores on stdout, if Cloud Run has it;
# nothing for any other value or spelling (gcloud would also take 2k or 0.0001).
cpu_millicores() {
  local cpu="$1" fraction millicores=
  [[ "$cpu" =~ [0-9] ]] || return 0
  if [[ "$cpu" =~ ^([0-9]{1,5})m$ ]]; then
    millicores=$((10#${BASH_REMATCH[1]}))
  elif [[ "$cpu" =~ ^([0-9]{0,2})(\.([0-9]{0,3})0*)?$ ]]; then
    fraction="${BASH_REMATCH[3]}000"
    millicores=$((10#${BASH_REMATCH[1]:-0} * 1000 + 10#${fraction:0:3}))
  fi
  [[ -n "$millicores" ]] || return 0
  if ((millicores >= 80 && millicores <= 1000)) || [[ "$WHOLE_CPUS" == *" $millicores "* ]]; then
    echo "$millicores"
  fi
}

# A --memory size in bytes: k, M, G decimal, Ki, Mi, Gi binary, a trailing B changing nothing; past
# 9 digits, more than any instance has.
memory_bytes() {
  [[ "$1" =~ ^0*([0-9]{1,9})([kKmMgG]?)(i?)[bB]?$ ]] || { echo $((1 << 62)); return 0; }
  local base=1000 power=0
  [[ -z "${BASH_REMATCH[3]}" ]] || base=1024
  case "${BASH_REMATCH[2],,}" in k) power=1 ;; m) power=2 ;; g) power=3 ;; esac
  echo $((10#${BASH_REMATCH[1]} * base ** power))
}

mib_size() {  # 512 -> 512Mi, 2048 -> 2Gi
  if (($1 % 1024)); then echo "${1}Mi"; else echo "$(($1 / 1024))Gi"; fi
}

# MEMORY within Cloud Run's bounds for MILLICORES: unset, its floor (or the default); set outside
# them, refused naming both.
size_memory_for_cpu() {
  local millicores="$1" key floor=0 cap=0 bytes
  for key in "${!MEMORY_FLOOR_MIB[@]}"; do ((millicores < key)) || floor="${MEMORY_FLOOR_MIB[key]}"; done
  for key in "${!MEMORY_CAP_MIB[@]}"; do
    if ((millicores < key)); then cap="${MEMORY_CAP_MIB[key]}"; break; fi
  done
  if [[ -z "$MEMORY" ]]; then
    if ((floor)); then MEMORY="$(mib_size "$floor")"; else MEMORY="$DEFAULT_MEMORY_GEN2"; fi
  fi
  valid_memory
  bytes="$(memory_bytes "$MEMORY")"
  ((bytes >= floor * MIB)) || die_usage "--cpu $CPU needs --memory $(mib_size "$floor") or more, got '$MEMORY'"
  ((!cap || bytes <= cap * MIB)) || die_usage "--cpu $CPU allows --memory $(mib_size "$cap") at most, got '$MEMORY'"
}

valid_memory() {
  [[ "$MEMORY" =~ ^[0-9]+([kKmMgG]i?)?[bB]?$ ]] ||
    die_usage "--memory: expected a size such as 512Mi or 1Gi, got '$MEMORY'"
}

# --cpu, --memory and --concurrency, checked together and completed with the generation's defaults.
# 1st gen has neither --cpu nor --concurrency: given explicitly, they are refused rather than ignored.
validate_size() {
  local millicores
  [[ -z "$CONCURRENCY" || "$CONCURRENCY" =~ ^[1-9][0-9]{0,2}$|^1000$ ]] ||
    die_usage "--concurrency: expected 1 to 1000, got '$CONCURRENCY'"
  if [[ "$GEN" == 1 ]]; then
    [[ -z "$CPU" ]] || die_usage "1st gen functions have no --cpu; their CPU follows --memory\
 (drop --cpu and NOTIFIER_CPU, or deploy 2nd gen)"
    [[ "${CONCURRENCY:-1}" == 1 ]] || die_usage "--concurrency $CONCURRENCY: 1st gen functions serve one request\
 at a time (drop --concurrency and NOTIFIER_CONCURRENCY, or deploy 2nd gen)"
    CONCURRENCY=1
    MEMORY="${MEMORY:-$DEFAULT_MEMORY_GEN1}"
    valid_memory
  else
    CPU="${CPU:-$DEFAULT_CPU}"
    CONCURRENCY="${CONCURRENCY:-$DEFAULT_CONCURRENCY}"
    millicores="$(cpu_millicores "$CPU")"
    [[ -n "$millicores" ]] || die_usage "--cpu: expected a number of vCPUs Cloud Run allows: 0.08 to 1\
 (80m to 1000m, such as .5) or 1, 2, 4, 6 or 8 (such as 2000m), got '$CPU'"
    # Cloud Run gives concurrent requests to an instance only when it has a whole vCPU.
    ((CONCURRENCY == 1 || millicores >= 1000)) ||
      die_usage "--concurrency $CONCURRENCY needs a whole vCPU: use --cpu 1 (or --concurrency 1)"
    size_memory_for_cpu "$millicores"
  fi
}

# The env file deploy.sh writes sets these from --concurrency; the user's may not (a THREADS that
# does not match the concurrency would leave requests queued, or the cap unanswered).
refuse_capacity_variables() {
  local line name
  while IFS= read -r line; do
    name="${line%%: *}"
    case "$name" in
      THREADS | NOTIFY_MAX_IN_FLIGHT)
        die_usage "--env-file: $ENV_FILE sets $name; deploy.sh sets it from --concurrency (THREADS is the\
 concurrency + $SPARE_THREADS, at most $MAX_THREADS, NOTIFY_MAX_IN_FLIGHT the concurrency): remove it and pass --concurrency N" ;;
    esac
  done <"$deploy_env"
}

# Rules with digest or max_emails hold their events until the flush sends them: say so after a
# trigger's deploy. A plain look at the rules file deployed (notify.toml, or NOTIFY_CONFIG's), in
# bash alone: deploy.sh needs nothing but bash and gcloud.
digest_rules_hint() {
  local rules="$NOTIFIER_ROOT/notify.toml" line held=0
  while IFS= read -r line; do
    [[ "$line" =~ ^NOTIFY_CONFIG:\ \"([^\"\\]+)\"$ ]] || continue
    rules="${BASH_REMATCH[1]}"
    [[ "$rules" == /* ]] || rules="$NOTIFIER_ROOT/$rules"
  done <"$deploy_env"
  [[ -f "$rules" && -r "$rules" ]] || return 0
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" =~ ^[[:space:]]*(digest|max_emails)[[:space:]]*= ]]; then held=1; break; fi
  done <"$rules"
  ((held)) || return 0
  printf '%s: %s has rules with digest or max_emails: their events are held until the scheduled flush sends them.\n' \
    "$(basename "$0")" "$rules" >&2
  printf 'Unless it is deployed already in this project and region, run: deploy/deploy.sh flush --project %s --region %s\n' \
    "$PROJECT" "$REGION" >&2
}

POSITIONAL=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --bucket) need_value "$@"; BUCKET="$2"; shift 2 ;;
    --via) need_value "$@"; VIA="$2"; shift 2 ;;
    --prefix) need_value "$@"; OBJECT_PREFIX="$2"; shift 2 ;;
    --env-file) need_value "$@"; ENV_FILE="$2"; shift 2 ;;
    --secret) need_value "$@"; SECRET="$2"; shift 2 ;;
    --webhook-key-secret) need_value "$@"; WEBHOOK_KEY_SECRET="$2"; shift 2 ;;
    --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
    --memory) need_value "$@"; MEMORY="$2"; shift 2 ;;
    --cpu) need_value "$@"; CPU="$2"; shift 2 ;;
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

((${#POSITIONAL[@]} == 1)) ||
  die_usage "expected one TRIGGER (finalize, delete, archive, metadata, all, flush or events)"
select_triggers "${POSITIONAL[0]}"
validate_common
http_only=0  # the flush and the webhook: HTTP functions, no bucket, no trigger
[[ "${SELECTED_TRIGGERS[0]}" != "$FLUSH" && "${SELECTED_TRIGGERS[0]}" != "$EVENTS" ]] || http_only=1
if ((!http_only)); then
  validate_bucket
  validate_via
  validate_object_prefix
fi

[[ "$TIMEOUT" =~ ^0*([0-9]{1,3})s?$ ]] || die_usage "--timeout: expected 20s to 540s, such as 60s, got '$TIMEOUT'"
timeout_s=$((10#${BASH_REMATCH[1]}))  # decimal, whatever its leading zeros (bash reads 0030 as octal)
((timeout_s >= 20 && timeout_s <= 540)) || die_usage "--timeout: must be 20s to 540s, got '$TIMEOUT'"
flush_timeout_s=$((FLUSH_BUDGET_SECONDS + timeout_s))
if [[ "${SELECTED_TRIGGERS[0]}" == "$FLUSH" && "$GEN" == 1 ]] && ((flush_timeout_s > 540)); then
  die_usage "--timeout: the flush runs ${FLUSH_BUDGET_SECONDS}s of digests plus one send, and a 1st gen function\
 runs at most 540s: use --timeout 300s or less (or 2nd gen)"
fi
[[ "$MAX_INSTANCES" =~ ^[1-9][0-9]*$ ]] || die_usage "--max-instances: expected a whole number >= 1, got '$MAX_INSTANCES'"
[[ "$RUNTIME" =~ ^python3(1[2-9]|[2-9][0-9])$ ]] || die_usage "--runtime: expected python312 or newer, got '$RUNTIME'"
validate_secret_name
[[ "$WEBHOOK_KEY_SECRET" =~ ^[A-Za-z0-9_-]{1,255}$ ]] ||
  die_usage "--webhook-key-secret: '$WEBHOOK_KEY_SECRET' is not a Secret Manager secret name (letters, digits, - and _)"
validate_size
if [[ -z "$ENV_FILE" && -f "$NOTIFIER_ROOT/deploy/env.yaml" ]]; then
  ENV_FILE="$NOTIFIER_ROOT/deploy/env.yaml"
fi
if [[ -n "$ENV_FILE" && ! -f "$ENV_FILE" ]]; then
  die_usage "--env-file: '$ENV_FILE' does not exist (copy deploy/env.example.yaml to start one)"
fi

# The function's environment: the user's file, read as YAML, checked (no secrets, only strings) and
# written back one quoted value a line; then a retry deadline that ends before the timeout.
deploy_env="$(mktemp "${TMPDIR:-/tmp}/storage-notifier-env.XXXXXX")"
events_drop=()  # the webhook sends no mail: its backend is console whatever the file says
[[ "${SELECTED_TRIGGERS[0]}" != "$EVENTS" ]] || events_drop=(--drop NOTIFY_BACKEND)
trap 'rm -f "$deploy_env"' EXIT
if [[ -n "$ENV_FILE" ]]; then
  python="$(find_python)" ||
    die_usage "--env-file: reading '$ENV_FILE' needs python3 (or the Google Cloud CLI, which bundles it)"
  if ! problem="$("$python" "$NOTIFIER_ROOT/deploy/envfile.py" --drop NOTIFY_DEADLINE_SECONDS \
    --drop NOTIFY_KEY_SECRET --drop GOOGLE_CLOUD_PROJECT "${events_drop[@]}" -- "$ENV_FILE" 2>&1 >"$deploy_env")"; then
    die_usage "--env-file: ${problem:-could not read $ENV_FILE}"
  fi
  refuse_capacity_variables
fi
{
  echo "NOTIFY_DEADLINE_SECONDS: \"$((timeout_s - 15))\""
  # functions-framework serves THREADS requests at once (default CPUs x 4): the concurrency, plus
  # spare threads that answer a request beyond NOTIFY_MAX_IN_FLIGHT at once (429, retried). At most
  # 999: gunicorn keeps a connection alive only while fewer than worker_connections (1000, which
  # functions-framework leaves as is) - THREADS are kept alive, so at 1000 every answer would close it.
  threads=$((CONCURRENCY + SPARE_THREADS < MAX_THREADS ? CONCURRENCY + SPARE_THREADS : MAX_THREADS))
  echo "THREADS: \"$threads\""
  echo "NOTIFY_MAX_IN_FLIGHT: \"$CONCURRENCY\""
  echo "NOTIFY_KEY_SECRET: \"$SECRET\""  # its name only, so error messages can say which secret to fix
  echo "GOOGLE_CLOUD_PROJECT: \"$PROJECT\""  # log lines name their trace as projects/PROJECT/traces/T
  ((!${#events_drop[@]})) || echo 'NOTIFY_BACKEND: "console"'  # no SENDGRID_API_KEY: nothing to send with
} >>"$deploy_env"
((DRY_RUN)) || require_gcloud
if ((DRY_RUN)); then
  # Print a script that runs as it stands: the env file first (one single-quoted word, which no
  # content can end), then the commands.
  content="$(cat "$deploy_env"; echo .)"  # the dot keeps the final newline from $(...)
  printf 'printf %%s %s > %s\n' "$(quote_literal "${content%.}")" "$(shell_quote "$deploy_env")"
fi

size_args=("--memory=$MEMORY")  # every function's; gen2 has --cpu, valid only next to --memory
[[ "$GEN" == 1 ]] || size_args+=("--cpu=$CPU")

location_arg=()
if [[ "$GEN" == 2 && "$VIA" == eventarc ]] && ((!http_only)); then
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
  if [[ "$trigger" == "$FLUSH" ]]; then deploy_flush; continue; fi
  if [[ "$trigger" == "$EVENTS" ]]; then deploy_events; continue; fi
  name="$(function_name "$trigger")"
  if [[ "$VIA" == pubsub ]]; then
    # Made here, before the function that subscribes to it. The notification made last grants the
    # Cloud Storage service agent publish rights on it (no --skip-topic-setup).
    ensure gcloud pubsub topics describe "$(topic_id "$trigger")" "--project=$PROJECT" -- \
      gcloud pubsub topics create "$(topic_id "$trigger")" "--project=$PROJECT"
  fi
  command=(gcloud functions deploy "$name" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION"
    "--runtime=$RUNTIME" "--source=$NOTIFIER_ROOT" "--entry-point=$ENTRY_POINT")
  if [[ "$VIA" == pubsub ]]; then
    command+=("--trigger-topic=$(topic_id "$trigger")")
  elif [[ "$GEN" == 2 ]]; then
    command+=("--trigger-event-filters=type=$(gen2_event_type "$trigger")"
      "--trigger-event-filters=bucket=$BUCKET" "${location_arg[@]}")
  else
    command+=("--trigger-resource=$BUCKET" "--trigger-event=$(gen1_event_type "$trigger")")
  fi
  if [[ "$GEN" == 2 ]]; then
    command+=("--trigger-service-account=$SERVICE_ACCOUNT" "--concurrency=$CONCURRENCY")
  fi
  command+=("--service-account=$SERVICE_ACCOUNT" "${size_args[@]}" "--timeout=${timeout_s}s"
    "--max-instances=$MAX_INSTANCES" "--env-vars-file=$deploy_env"
    "--set-secrets=SENDGRID_API_KEY=$SECRET:latest"
    # The build's `compileall -f` then writes checked-hash bytecode (PEP 552) for our source, which
    # still matches it after the image's mtimes are set to 1980; timestamped, it never would, and
    # every cold start would compile our modules again (bench/workspace.py).
    "--update-build-env-vars=SOURCE_DATE_EPOCH=$BUILD_EPOCH")
  if ((RETRY)); then command+=(--retry); else command+=(--no-retry); fi
  command+=(--quiet)
  run "${command[@]}"
  if [[ "$GEN" == 2 ]]; then
    # Eventarc invokes the function as the trigger service account: allow exactly this function.
    run gcloud functions add-invoker-policy-binding "$name" "--project=$PROJECT" "--region=$REGION" \
      "--member=serviceAccount:$SERVICE_ACCOUNT" --quiet
  fi
  # Last, so Cloud Storage publishes only once the function's subscription is there to receive.
  if [[ "$VIA" == pubsub ]]; then ensure_notification "$trigger"; fi
done
((http_only)) || digest_rules_hint
