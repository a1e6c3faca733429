#!/usr/bin/env bash
# Offline infrastructure checks of template.yaml, in order, stopping at the first failure:
#   (a) cfn-lint template.yaml is clean, with the serverless rules (cfn-lint-serverless);
#       a true exception is ignored on its resource (Metadata.cfn-lint.config.ignore_checks,
#       with a comment saying why)
#   (b) sam validate --lint passes (dummy credentials, no AWS account or network needed)
#   (c) checkov (cloudformation, --skip-download) has no failed check; the checks that do
#       not apply are skipped by id, each with its reason, in infra/checkov.yaml
#   (d) .aws-sam/build/<Function>/bootstrap, an aarch64 ELF, exists for every
#       AWS::Serverless::Function in the template: by default from ONE cargo-lambda build
#       of every function's binary in the `ci` profile (one dependency build for all);
#       with CHECK_RELEASE_PROFILE=1 from `sam build` itself, as a deployment builds
#
# Usage: infra/check.sh [--skip-build]
#   --skip-build or CHECK_SKIP_BUILD=1   skip (d), the slow cross-build
#   CHECK_RELEASE_PROFILE=1              build (d) with `sam build` and the deployment's release
#                                        profile (fat LTO, one codegen unit), one function at a time
#   CARGO_TARGET_DIR                     cargo target dir for (d); default <repo>/target,
#                                        shared with local builds so compiled deps are reused
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

skip_build="${CHECK_SKIP_BUILD:-0}"
for arg in "$@"; do
    case "$arg" in
        --skip-build) skip_build=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

template=template.yaml
region=eu-west-1

# --- environment: project tools first, everything offline, no real credentials ---------
"$root/infra/venv.sh"
export PATH="$root/.venv/bin:$PATH"           # cfn-lint, sam, checkov, cargo-lambda, python3 -m ziglang
export SAM_CLI_TELEMETRY=0
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true     # checkov: no PyPI version check
export BC_SKIP_MAPPING=TRUE                   # checkov: no Prisma Cloud mapping download
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE # dummy values: nothing here talks to AWS
export AWS_SECRET_ACCESS_KEY=dummy-secret-key-not-used
export AWS_REGION="$region" AWS_DEFAULT_REGION="$region"
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL

# --- step runner ---------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
summary=()

step_start() { step_name="$1"; step_t0="$(now)"; echo "==> $step_name"; }
step_ok() {
    local d; d="$(elapsed "$step_t0")"
    echo "    ok ($d)"
    summary+=("$(printf '%-34s ok   %s' "$step_name" "$d")")
}
fail() {
    echo "check.sh: FAILED: $step_name -- $* ($(elapsed "$step_t0"))" >&2
    exit 1
}

total_t0="$(now)"

# (a) ---------------------------------------------------------------------------------
step_start "(a) cfn-lint (+ serverless rules)"
cfn-lint "$template" --append-rules cfn_lint_serverless.rules \
    || fail "cfn-lint reported the findings above"
step_ok

# (b) ---------------------------------------------------------------------------------
step_start "(b) sam validate --lint"
out="$(sam validate --lint --region "$region" --template-file "$template" 2>&1)" || {
    printf '%s\n' "$out" >&2
    fail "sam validate --lint rejected $template"
}
step_ok

# (c) ---------------------------------------------------------------------------------
step_start "(c) checkov"
checkov_config=infra/checkov.yaml
# Every skip must carry its reason: a trailing comment on each skip-check entry of
# infra/checkov.yaml, a comment on each Metadata.checkov.skip entry of a resource.
python3 - "$checkov_config" "$template" <<'PY' || fail "every checkov skip needs a one-line reason"
import re, sys
from samcli.yamlhelper import yaml_parse
config, template = sys.argv[1:3]
bad, in_skip = [], False
for line in open(config):
    if re.match(r"^\S", line):
        in_skip = line.startswith("skip-check:")
    elif in_skip and re.match(r"^\s*-\s*\S", line):
        m = re.match(r"^\s*-\s*([^\s#]+)\s*(?:#\s*(.*\S))?", line)
        if not (m and m.group(2)):
            bad.append(f"{config}: {m.group(1) if m else line.strip()}")
        else:
            print(f"    skipped: {m.group(1)}: {m.group(2)}")
t = yaml_parse(open(template).read())
for name, r in (t.get("Resources") or {}).items():
    for s in (((r.get("Metadata") or {}).get("checkov") or {}).get("skip") or []):
        if not str(s.get("comment") or "").strip():
            bad.append(f"{template}: {name}: {s.get('id')}")
        else:
            print(f"    skipped for {name}: {s.get('id')}: {s.get('comment')}")
if bad:
    print("checkov skips without a reason: " + ", ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
checkov -f "$template" --framework cloudformation --skip-download --quiet --compact \
        --config-file "$checkov_config" \
    || fail "checkov failed checks (fix the template, or skip by id with a reason in $checkov_config)"
step_ok

# (d) ---------------------------------------------------------------------------------
if [ "$skip_build" = 1 ] || [ "$skip_build" = true ]; then
    echo "==> (d) sam build: skipped (--skip-build / CHECK_SKIP_BUILD)"
    summary+=("$(printf '%-34s skipped' "(d) sam build")")
else
    step_start "(d) rustup target aarch64"
    command -v cargo >/dev/null || fail "cargo not found (install Rust with rustup)"
    if command -v rustup >/dev/null; then
        if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
            rustup target add aarch64-unknown-linux-gnu || fail "rustup target add aarch64-unknown-linux-gnu"
        fi
    else
        echo "    rustup not found; assuming the aarch64-unknown-linux-gnu std is installed"
    fi
    command -v cargo-lambda >/dev/null || fail "cargo-lambda not on PATH (infra/requirements.txt)"
    python3 -c 'import ziglang' 2>/dev/null || fail "zig (PyPI ziglang) missing from .venv"
    step_ok

    # sam build runs `cargo lambda build --release --arm64 --bin <Binary>` in the source dir
    # (CodeUri: ., the workspace root), in place rather than in a scratch copy, once per
    # function. An explicit CARGO_TARGET_DIR is passed through; pinning it to <repo>/target
    # keeps every run on the same dir, so a second build only recompiles what changed.
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
    case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$root/$CARGO_TARGET_DIR" ;; esac

    # Every rust-cargolambda function of the template and its binary, "Function Binary" a line.
    builds="$(python3 - "$template" <<'PY'
import sys
from samcli.yamlhelper import yaml_parse
t = yaml_parse(open(sys.argv[1]).read())
for name, r in (t.get("Resources") or {}).items():
    if r.get("Type") == "AWS::Serverless::Function":
        m = r.get("Metadata") or {}
        binary = (m.get("BuildProperties") or {}).get("Binary")
        if m.get("BuildMethod") != "rust-cargolambda" or not binary:
            sys.exit(f"{name}: expected Metadata BuildMethod rust-cargolambda with BuildProperties.Binary")
        print(name, binary)
PY
)" || fail "could not read the functions' builds from $template"

    mkdir -p .aws-sam
    log=.aws-sam/check-build.log
    if [ "${CHECK_RELEASE_PROFILE:-0}" = 1 ]; then
        # The deployment's build: sam build, release profile (fat LTO), one function at a time.
        step_start "(d) sam build (release profile)"
        if ! sam build --template-file "$template" >"$log" 2>&1; then
            tail -n 80 "$log" >&2
            fail "sam build failed (last 80 lines above; full log: $log)"
        fi
        step_ok
    else
        # The check proves that every function builds to an aarch64 bootstrap; it needs
        # neither the deployment's fat LTO nor sam's one cargo invocation per function,
        # each resolving features for its own package. So: one cargo-lambda build of every
        # function's binary in the `ci` profile (Cargo.toml: no LTO, 16 codegen units,
        # opt-level 0), sharing one dependency build, placed where sam build would put it.
        step_start "(d) cargo lambda build --arm64 --profile ci (every function at once)"
        lambda_dir="$CARGO_TARGET_DIR/lambda-ci"
        args=()
        while read -r _fn binary; do args+=(-p "$binary" --bin "$binary"); done <<<"$builds"
        if ! cargo lambda build --arm64 --profile ci --lambda-dir "$lambda_dir" "${args[@]}" >"$log" 2>&1; then
            # The cause first (a reader of a truncated CI log sees it), then the end.
            grep -v -E '^ +(Compiling|Checking|Downloaded|Downloading) ' "$log" | tail -n 40 >&2
            echo "    disk: $(df -h "$CARGO_TARGET_DIR" | tail -n 1)" >&2
            echo "    memory: $(free -m 2>/dev/null | sed -n 2p)" >&2
            fail "cargo lambda build failed (its output without the Compiling lines above; full log: $log)"
        fi
        while read -r fn binary; do
            [ -f "$lambda_dir/$binary/bootstrap" ] || fail "no bootstrap for $binary in $lambda_dir"
            mkdir -p ".aws-sam/build/$fn"
            cp "$lambda_dir/$binary/bootstrap" ".aws-sam/build/$fn/bootstrap"
        done <<<"$builds"
        step_ok
    fi

    step_start "(d) bootstrap binaries are aarch64"
    functions="$(python3 - "$template" <<'PY'
import sys
from samcli.yamlhelper import yaml_parse
t = yaml_parse(open(sys.argv[1]).read())
for name, r in (t.get("Resources") or {}).items():
    if r.get("Type") == "AWS::Serverless::Function":
        print(name)
PY
)" || fail "could not read the functions of $template"
    [ -n "$functions" ] || fail "no AWS::Serverless::Function in $template"
    for fn in $functions; do
        bin=".aws-sam/build/$fn/bootstrap"
        [ -f "$bin" ] || fail "$bin is missing"
        if command -v file >/dev/null; then
            desc="$(file -b "$bin")"
            case "$desc" in
                *ELF\ 64-bit\ LSB*ARM\ aarch64*) ;;
                *) fail "$bin is not an aarch64 ELF: $desc" ;;
            esac
        else
            # e_ident: 7f 'E' 'L' 'F', EI_CLASS=2 (64-bit), EI_DATA=1 (LE); e_machine at 18 = 183 (EM_AARCH64)
            python3 - "$bin" <<'PY' || fail "$bin is not an aarch64 ELF"
import struct, sys
h = open(sys.argv[1], "rb").read(20)
ok = len(h) == 20 and h[:4] == b"\x7fELF" and h[4] == 2 and h[5] == 1 and struct.unpack_from("<H", h, 18)[0] == 183
sys.exit(0 if ok else 1)
PY
            desc="ELF 64-bit LSB, e_machine EM_AARCH64"
        fi
        echo "    $fn: $bin ($(du -h "$bin" | cut -f1)) $desc"
    done
    step_ok
fi

echo
echo "infra checks passed in $(elapsed "$total_t0"):"
printf '  %s\n' "${summary[@]}"
