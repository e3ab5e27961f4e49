#!/usr/bin/env bash
# Synthesizes the stack with placeholder Lambda code (no Rust build, no AWS account, no network)
# and lints every template with cfn-lint. CFN_LINT names the cfn-lint to run (the Makefile passes
# the project venv's); `cfn-lint` on PATH otherwise. Extra arguments go to cdk synth (-c ...).
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT="${CFN_LINT:-cfn-lint}"
if ! command -v "$CFN_LINT" >/dev/null 2>&1; then
  echo "lint:cfn: cfn-lint not found (set CFN_LINT=/path/to/cfn-lint, or pip install cfn-lint)" >&2
  exit 127
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

export CDK_DISABLE_CLI_TELEMETRY=true
# The default deployment, then every optional part switched on.
npx cdk synth --no-notices -q -o "$out/default" -c placeholderCode=true "$@"
npx cdk synth --no-notices -q -o "$out/all-options" -c placeholderCode=true \
  -c apiKey=true -c guardDutySeverity=7 -c notificationEmail=security@example.com \
  -c architecture=x86_64 -c retentionMode=COMPLIANCE -c retentionDays=30 \
  -c breakGlassRoleArn=arn:aws:iam::111122223333:role/admin/CordonBreakGlass \
  -c investigatorRoleArn=arn:aws:iam::111122223333:role/Investigator "$@"

templates=("$out"/*/*.template.json)
"$CFN_LINT" --version
# W3005 ("DependsOn already enforced by a GetAtt"): the Lambda and Step Functions constructs add an
# explicit DependsOn on the role they are given (so that its default policy exists first); it is
# redundant where the role's policies are inline, and harmless. Everything else must be clean.
"$CFN_LINT" --ignore-checks W3005 -- "${templates[@]}"
echo "lint:cfn: ${#templates[@]} templates clean"
