#!/usr/bin/env bash
# Run the official-SDK test suites against a tern binary:
#   * Python: `qstash` (tests/sdk/python, pytest, venv in tests/sdk/python/.venv)
#   * JS:     `@upstash/qstash` (tests/sdk/js, node --test, node_modules via npm ci)
#   * Go:     `github.com/upstash/qstash-go` (tests/sdk/go, go test, modules pinned by its
#             go.mod and go.sum and fetched through the Go module proxy)
#   * Workflow JS: `@upstash/workflow` (tests/sdk/workflow-js, node --test, node_modules via npm
#             ci; its tests import tests/sdk/js/harness.mjs, so the JS suite is installed too)
#   * Workflow Python: `upstash-workflow` (tests/sdk/workflow-python, pytest, venv in
#             tests/sdk/workflow-python/.venv; its tests import tests/sdk/python/tern_harness.py)
#
# Usage: scripts/sdk-tests.sh [--python-only | --js-only | --go-only | --workflow-js-only |
#                              --workflow-python-only] [--no-install] [--serial]
#   TERN_BIN   tern binary (default: target/debug/tern, relative to the repo root).
#              Build it with: cargo build -p tern-server --bin tern
#   PYTHON     python interpreter used to create the venvs (default: python3)
#   PYTEST_ARGS / NODE_TEST_ARGS / GO_TEST_ARGS / WORKFLOW_TEST_ARGS / WORKFLOW_PYTEST_ARGS
#              extra arguments for the runners (word-split; WORKFLOW_TEST_ARGS is node --test's
#              for the workflow JS suite, WORKFLOW_PYTEST_ARGS pytest's for the workflow Python one)
#
# Each suite starts its own `tern dev --port <free port> --data-dir <fresh temp dir>`;
# all network traffic stays on 127.0.0.1. Installs are idempotent: they rerun only when
# a requirements.txt / package-lock.json (or the interpreter version) changes; Go's module
# cache makes `go mod download` a no-op once the pinned modules are there.
# The suites run at the same time (most of their time is spent waiting for a cron tick and
# for deliveries), each into a log printed when it ends; --serial runs one after another
# with live output. Exits non-zero if any step or any test fails.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY_DIR="$ROOT/tests/sdk/python"
JS_DIR="$ROOT/tests/sdk/js"
GO_DIR="$ROOT/tests/sdk/go"
WFJS_DIR="$ROOT/tests/sdk/workflow-js"
WFPY_DIR="$ROOT/tests/sdk/workflow-python"
VENV="$PY_DIR/.venv"
WFPY_VENV="$WFPY_DIR/.venv"
PYTHON="${PYTHON:-python3}"

run_python=1
run_js=1
run_go=1
run_wfjs=1
run_wfpy=1
do_install=1
serial=0
for arg in "$@"; do
  case "$arg" in
    --python-only) run_js=0 run_go=0 run_wfjs=0 run_wfpy=0 ;;
    --js-only) run_python=0 run_go=0 run_wfjs=0 run_wfpy=0 ;;
    --go-only) run_python=0 run_js=0 run_wfjs=0 run_wfpy=0 ;;
    --workflow-js-only) run_python=0 run_js=0 run_go=0 run_wfpy=0 ;;
    --workflow-python-only) run_python=0 run_js=0 run_go=0 run_wfjs=0 ;;
    --no-install) do_install=0 ;;
    --serial) serial=1 ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "sdk-tests: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

log() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'sdk-tests: %s\n' "$*" >&2
  exit 2
}

hash_of() { # hash_of FILE EXTRA... -> stable fingerprint
  {
    cat "$1"
    shift
    printf '%s\n' "$@"
  } | sha256sum | cut -d' ' -f1
}

# Optional wall-clock guard per suite (coreutils timeout, if present).
guard() {
  if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=15 "${SDK_TESTS_TIMEOUT:-900}" "$@"
  else
    "$@"
  fi
}

# --- the binary --------------------------------------------------------------
TERN_BIN="${TERN_BIN:-target/debug/tern}"
case "$TERN_BIN" in
  /*) ;;
  *) TERN_BIN="$ROOT/$TERN_BIN" ;;
esac
[ -x "$TERN_BIN" ] || die "tern binary not found or not executable: $TERN_BIN (build it with: cargo build -p tern-server --bin tern, or set TERN_BIN)"
export TERN_BIN

# Deliveries and SDK calls go to 127.0.0.1 only: keep any configured proxy away from loopback.
for var in NO_PROXY no_proxy; do
  cur="${!var:-}"
  export "$var=${cur:+$cur,}127.0.0.1,localhost,::1"
done
# Never let the JS SDK switch to dev mode (it would try to download its own server).
unset QSTASH_DEV QSTASH_DEV_PORT QSTASH_REGION QSTASH_URL QSTASH_TOKEN \
  QSTASH_CURRENT_SIGNING_KEY QSTASH_NEXT_SIGNING_KEY 2>/dev/null || true

# --- Python and workflow Python: venv + pip install -r requirements.txt ---------------
# setup_venv DIR VENV NAME IMPORTS: the venv VENV with DIR/requirements.txt, unless it is
# there for this requirements.txt and interpreter and can import IMPORTS (comma-separated)
setup_venv() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
  local dir="$1" venv="$2" name="$3" imports="$4" py_version stamp want
  py_version="$("$PYTHON" -c 'import sys; print(sys.version)')" || die "$PYTHON does not run"

  # a venv whose interpreter no longer runs (python upgraded/moved) is rebuilt
  if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "removing broken venv $venv"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    log "creating venv $venv"
    if ! "$PYTHON" -m venv "$venv" >/dev/null 2>&1; then
      # e.g. Debian without python3-venv (no ensurepip): venv without pip, then let the
      # host pip install into it.
      rm -rf "$venv"
      "$PYTHON" -m venv --without-pip "$venv" || die "cannot create a venv with $PYTHON"
    fi
  fi

  stamp="$venv/.sdk-tests-stamp"
  want="$(hash_of "$dir/requirements.txt" "$py_version")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    "$venv/bin/python" -c "import $imports" >/dev/null 2>&1; then
    echo "$name deps up to date"
    return 0
  fi
  log "pip install -r tests/sdk/$name/requirements.txt"
  if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$dir/requirements.txt" ||
      die "pip install failed"
  else
    "$PYTHON" -m pip --python "$venv/bin/python" install --quiet --disable-pip-version-check \
      -r "$dir/requirements.txt" || die "pip install (via host pip) failed"
  fi
  printf '%s\n' "$want" >"$stamp"
}
setup_python() { setup_venv "$PY_DIR" "$VENV" python "qstash, pytest"; }
# The workflow suite imports tests/sdk/python/tern_harness.py, which needs only the standard
# library at import time: its own venv is enough.
setup_workflow_python() {
  setup_venv "$WFPY_DIR" "$WFPY_VENV" workflow-python "upstash_workflow, qstash, fastapi, uvicorn, pytest"
}

# --- JS and workflow JS: npm ci ------------------------------------------------------
npm_ci() { # npm_ci DIR NAME PACKAGE: npm ci in DIR unless its lock file and node are unchanged
  command -v node >/dev/null 2>&1 || die "node not found"
  command -v npm >/dev/null 2>&1 || die "npm not found"
  local dir="$1" name="$2" package="$3" major stamp want
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 20 ] 2>/dev/null || die "node >= 20 required (found $(node --version))"

  stamp="$dir/node_modules/.sdk-tests-stamp"
  want="$(hash_of "$dir/package-lock.json" "$(node --version)")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$dir/node_modules/$package" ]; then
    echo "$name deps up to date"
    return 0
  fi
  log "npm ci (tests/sdk/$name)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  printf '%s\n' "$want" >"$stamp"
}
setup_js() { npm_ci "$JS_DIR" js @upstash/qstash; }
# The workflow suite imports tests/sdk/js/harness.mjs, whose `@upstash/qstash` import Node
# resolves from tests/sdk/js/node_modules: install both.
setup_workflow_js() {
  [ "$run_js" = 1 ] || setup_js
  npm_ci "$WFJS_DIR" workflow-js @upstash/workflow
}

# --- Go: go mod download --------------------------------------------------------
# go.mod and go.sum pin every module; `go test -mod=readonly` uses exactly them (and fails
# rather than edit them), so the only thing to fetch is the pinned modules, from the proxy.
setup_go() {
  command -v go >/dev/null 2>&1 || die "go not found (the Go toolchain runs tests/sdk/go)"
  log "go mod download (tests/sdk/go, $(go env GOVERSION))"
  (cd "$GO_DIR" && go mod download) || die "go mod download failed"
}

if [ "$do_install" = 1 ]; then
  [ "$run_python" = 1 ] && setup_python
  [ "$run_js" = 1 ] && setup_js
  [ "$run_go" = 1 ] && setup_go
  [ "$run_wfjs" = 1 ] && setup_workflow_js
  [ "$run_wfpy" = 1 ] && setup_workflow_python
fi

# --- run ---------------------------------------------------------------------------
run_suite() { # run_suite NAME: runs one suite in the foreground
  case "$1" in
    python)
      log "pytest tests/sdk/python (TERN_BIN=$TERN_BIN)"
      # shellcheck disable=SC2086
      (cd "$PY_DIR" && guard "$VENV/bin/python" -m pytest ${PYTEST_ARGS:-})
      ;;
    js)
      log "node --test tests/sdk/js (TERN_BIN=$TERN_BIN)"
      # shellcheck disable=SC2086
      (cd "$JS_DIR" && guard node --test --test-concurrency=1 ${NODE_TEST_ARGS:-} ./*.test.mjs)
      ;;
    go)
      log "go test tests/sdk/go (TERN_BIN=$TERN_BIN)"
      # shellcheck disable=SC2086
      (cd "$GO_DIR" && guard go test -mod=readonly -count=1 -timeout "$((${SDK_TESTS_TIMEOUT:-900} - 30))s" ${GO_TEST_ARGS:-} ./...)
      ;;
    workflow-js)
      log "node --test tests/sdk/workflow-js (TERN_BIN=$TERN_BIN)"
      # shellcheck disable=SC2086
      (cd "$WFJS_DIR" && guard node --test --test-concurrency=1 ${WORKFLOW_TEST_ARGS:-} ./*.test.mjs)
      ;;
    workflow-python)
      log "pytest tests/sdk/workflow-python (TERN_BIN=$TERN_BIN)"
      # shellcheck disable=SC2086
      (cd "$WFPY_DIR" && guard "$WFPY_VENV/bin/python" -m pytest ${WORKFLOW_PYTEST_ARGS:-})
      ;;
  esac
}

suites=()
[ "$run_python" = 1 ] && suites+=(python)
[ "$run_js" = 1 ] && suites+=(js)
[ "$run_go" = 1 ] && suites+=(go)
[ "$run_wfjs" = 1 ] && suites+=(workflow-js)
[ "$run_wfpy" = 1 ] && suites+=(workflow-python)
declare -A rc=([python]=skipped [js]=skipped [go]=skipped [workflow-js]=skipped [workflow-python]=skipped)

if [ "$serial" = 1 ] || [ "${#suites[@]}" -le 1 ]; then
  for suite in "${suites[@]}"; do
    run_suite "$suite"
    rc[$suite]=$?
  done
else
  logs="$(mktemp -d)"
  trap 'rm -rf "$logs"' EXIT
  declare -A pid
  started=$SECONDS
  for suite in "${suites[@]}"; do
    run_suite "$suite" >"$logs/$suite.log" 2>&1 &
    pid[$suite]=$!
  done
  log "running the ${suites[*]} suites at the same time; each log follows when it ends"
  for suite in "${suites[@]}"; do
    wait "${pid[$suite]}"
    rc[$suite]=$?
    cat "$logs/$suite.log"
    log "$suite suite: exit ${rc[$suite]} ($((SECONDS - started)) s since the start)"
  done
fi

log "sdk-tests: python=${rc[python]} js=${rc[js]} go=${rc[go]} workflow-js=${rc[workflow-js]} workflow-python=${rc[workflow-python]}"
for suite in python js go workflow-js workflow-python; do
  if [ "${rc[$suite]}" != skipped ] && [ "${rc[$suite]}" != 0 ]; then
    exit 1
  fi
done
exit 0
