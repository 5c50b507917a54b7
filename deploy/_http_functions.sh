# shellcheck shell=bash
# deploy.sh's two HTTP functions, beside the four triggers: the scheduled flush (and its Cloud
# Scheduler job) and SendGrid's Event Webhook. Sourced by deploy.sh, never run: the functions read
# its settings (PROJECT, REGION, GEN, SERVICE_ACCOUNT, deploy_env, flush_timeout_s, ...).
# shellcheck disable=SC2154  # those settings are deploy.sh's and _common.sh's

# The flush: flush_digests as an HTTP function only the service account may call, then the job.
# Sized like the triggers (--concurrency, --cpu, THREADS and the cap from the same options): one
# scheduler call a minute needs no concurrency, but it costs nothing, and a call that comes while a
# long flush still runs (safe: the flush claims what it sends) shares its instance, not a new one.
deploy_flush() {
  local name command
  name="$(function_name "$FLUSH")"
  command=(gcloud functions deploy "$name" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION"
    "--runtime=$RUNTIME" "--source=$NOTIFIER_ROOT" "--entry-point=$FLUSH_ENTRY_POINT" --trigger-http
    --no-allow-unauthenticated)
  [[ "$GEN" == 1 ]] || command+=("--concurrency=$CONCURRENCY")
  command+=("--service-account=$SERVICE_ACCOUNT" "${size_args[@]}" "--timeout=${flush_timeout_s}s"
    "--max-instances=$MAX_INSTANCES" "--env-vars-file=$deploy_env" "--set-secrets=SENDGRID_API_KEY=$SECRET:latest"
    "--update-build-env-vars=SOURCE_DATE_EPOCH=$BUILD_EPOCH" --quiet)
  run "${command[@]}"
  # Cloud Scheduler calls it with an OIDC token of the service account: allow exactly this function.
  if [[ "$GEN" == 2 ]]; then
    run gcloud functions add-invoker-policy-binding "$name" "--project=$PROJECT" "--region=$REGION" \
      "--member=serviceAccount:$SERVICE_ACCOUNT" --quiet
  else
    run gcloud functions add-iam-policy-binding "$name" "--project=$PROJECT" "--region=$REGION" \
      "--member=serviceAccount:$SERVICE_ACCOUNT" --role=roles/cloudfunctions.invoker --quiet
  fi
  ensure_flush_job "$name"
}

# SendGrid's Event Webhook: sendgrid_events as a PUBLIC HTTP function (--allow-unauthenticated).
# SendGrid cannot authenticate to Cloud Run; each batch's ECDSA signature, checked with the key in
# Secret Manager, is the authentication (notifier/feedback.py), and unsigned batches get 403.
# It never sends mail: no SENDGRID_API_KEY, so a bug on this public path cannot reach the Mail Send key.
# Sized like the triggers: SendGrid posts batches concurrently, each a short verify and write.
deploy_events() {
  local name command
  name="$(function_name "$EVENTS")"
  require_key_secret
  # setup.sh grants the service account the API key's secret only; this one is granted here.
  run gcloud secrets add-iam-policy-binding "$WEBHOOK_KEY_SECRET" "--project=$PROJECT" \
    "--member=serviceAccount:$SERVICE_ACCOUNT" --role=roles/secretmanager.secretAccessor --condition=None --quiet
  command=(gcloud functions deploy "$name" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION"
    "--runtime=$RUNTIME" "--source=$NOTIFIER_ROOT" "--entry-point=$EVENTS_ENTRY_POINT" --trigger-http
    --allow-unauthenticated)
  [[ "$GEN" == 1 ]] || command+=("--concurrency=$CONCURRENCY")
  command+=("--service-account=$SERVICE_ACCOUNT" "${size_args[@]}" "--timeout=${timeout_s}s"
    "--max-instances=$MAX_INSTANCES" "--env-vars-file=$deploy_env"
    "--set-secrets=SENDGRID_WEBHOOK_PUBLIC_KEY=$WEBHOOK_KEY_SECRET:latest"
    "--update-build-env-vars=SOURCE_DATE_EPOCH=$BUILD_EPOCH" --quiet)
  run "${command[@]}"
  events_url_hint "$name"
}

# The verification key's secret must exist before the deploy: a missing one would fail the deploy
# late, with a message that does not say where the key comes from. A describe that fails for another
# reason (no permission) stops too, with gcloud's own error.
require_key_secret() {
  local describe=(gcloud secrets describe "$WEBHOOK_KEY_SECRET" "--project=$PROJECT") error
  local create_line
  create_line="$(print_command gcloud secrets create "$WEBHOOK_KEY_SECRET" "--project=$PROJECT" \
    --replication-policy=automatic --data-file=-) < webhook-key.txt"
  local how="create it with the Event Webhook's verification key
(in SendGrid: Settings > Mail Settings > Event Webhook, turn on \"Signed Event Webhook\",
copy its Verification Key into webhook-key.txt), then deploy again:
  $create_line"
  if ((DRY_RUN)); then
    printf '%s >/dev/null || { echo %s >&2; exit 1; }\n' "$(print_command "${describe[@]}")" \
      "$(quote_literal "$(basename "$0"): could not read secret $WEBHOOK_KEY_SECRET (gcloud said why above); if it\
 does not exist, $how")"
    return 0
  fi
  printf '+ %s\n' "$(print_command "${describe[@]}")" >&2
  if error="$("${describe[@]}" 2>&1 >/dev/null)"; then return 0; fi
  if [[ "$error" == *") NOT_FOUND: "* ]]; then
    printf '%s: secret %s does not exist in project %s: %s\n' "$(basename "$0")" "$WEBHOOK_KEY_SECRET" "$PROJECT" \
      "$how" >&2
  else
    printf '%s\n%s: could not check that secret %s exists (above, what gcloud said); nothing deployed\n' \
      "$error" "$(basename "$0")" "$WEBHOOK_KEY_SECRET" >&2
  fi
  exit 1
}

# Where to paste the function's URL in SendGrid, and what to tick there.
events_url_hint() {
  local name="$1" field=url url
  [[ "$GEN" == 2 ]] || field=httpsTrigger.url
  local describe_url=(gcloud functions describe "$name" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION"
    "--format=value($field)")
  local where='In SendGrid, Settings > Mail Settings > Event Webhook: set the HTTP Post URL to'
  local what='Turn on "Signed Event Webhook" (its verification key is the secret '"$WEBHOOK_KEY_SECRET"') and tick'
  what+=' Processed, Delivered, Deferred, Bounced, Dropped and Spam Reports (Opened and Clicked if tracked).'
  if ((DRY_RUN)); then
    # shellcheck disable=SC2016  # printed for the user's shell to expand
    printf 'url=$(%s) && [ -n "$url" ] || { echo %s >&2; exit 1; }\n' "$(print_command "${describe_url[@]}")" \
      "$(quote_literal "could not read the URL of function $name")"
    # shellcheck disable=SC2016
    printf 'printf '\''%%s\\n'\'' %s "  $url" %s\n' "$(quote_literal "$where")" "$(quote_literal "$what")"
    return 0
  fi
  url="$(run "${describe_url[@]}")"
  [[ -n "$url" ]] || { echo "could not read the URL of function $name" >&2; exit 1; }
  printf '%s\n  %s\n%s\n' "$where" "$url" "$what"
}

# The Cloud Scheduler job calling the flush every minute: created, or updated to these settings.
ensure_flush_job() {
  local name="$1" field=url url uri_args flags
  [[ "$GEN" == 2 ]] || field=httpsTrigger.url
  local describe_url=(gcloud functions describe "$name" "$(gen_flag)" "--project=$PROJECT" "--region=$REGION"
    "--format=value($field)")
  if ((DRY_RUN)); then
    # shellcheck disable=SC2016  # printed for the user's shell to expand
    printf 'url=$(%s) && [ -n "$url" ] || { echo %s >&2; exit 1; }\n' "$(print_command "${describe_url[@]}")" \
      "$(quote_literal "could not read the URL of function $name")"
    uri_args=("${RAW}--uri=\"\$url\"")
  else
    url="$(run "${describe_url[@]}")"
    [[ -n "$url" ]] || { echo "could not read the URL of function $name" >&2; exit 1; }
    uri_args=("--uri=$url")
  fi
  flags=("--project=$PROJECT" "--location=$REGION" "--schedule=$FLUSH_SCHEDULE" "${uri_args[@]}" --http-method=POST
    "--oidc-service-account-email=$SERVICE_ACCOUNT" "${uri_args[@]/--uri=/--oidc-token-audience=}"
    "--attempt-deadline=${flush_timeout_s}s")
  local describe=(gcloud scheduler jobs describe "$name" "--project=$PROJECT" "--location=$REGION")
  local create=(gcloud scheduler jobs create http "$name" "${flags[@]}")
  local update=(gcloud scheduler jobs update http "$name" "${flags[@]}")
  if ((DRY_RUN)); then
    printf 'if %s >/dev/null 2>&1; then %s; else %s; fi\n' "$(print_command "${describe[@]}")" \
      "$(print_command "${update[@]}")" "$(print_command "${create[@]}")"
  elif "${describe[@]}" >/dev/null 2>&1; then
    run "${update[@]}"
  else
    run "${create[@]}"
  fi
}
