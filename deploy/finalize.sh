#!/usr/bin/env bash
# Deploy the finalize trigger: same code and entry point as every trigger. Options: deploy.sh --help.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/deploy.sh" finalize "$@"
