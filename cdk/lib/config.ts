// Deployment settings, read once from CDK context (`cdk deploy -c key=value` or cdk.json) and
// checked before any resource is built, so a typo fails the synth instead of the deployment.

import type { Node } from 'constructs';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';

import { DEFAULT_MAX_CONCURRENT_RESPONSES } from './concurrency';

export type Architecture = 'arm64' | 'x86_64';
export type RetentionMode = 'GOVERNANCE' | 'COMPLIANCE';

export interface CordonConfig {
  /** Use a dummy `bootstrap` instead of the cargo-lambda build output (tests, lint, CI). */
  readonly placeholderCode: boolean;
  /** Lambda architecture; must match how the binaries were built (`--arm64` or `--x86-64`). */
  readonly architecture: Architecture;
  /** Directory holding `<binary>/bootstrap` for every step (cargo lambda's `target/lambda`). */
  readonly lambdaDir: string;
  /** Default Object Lock retention of every evidence object version. */
  readonly retentionDays: number;
  readonly retentionMode: RetentionMode;
  /** Email address subscribed to the notification topic (confirmation mail is sent on deploy). */
  readonly notificationEmail?: string;
  /** API key + usage plan instead of IAM (SigV4) authorization. */
  readonly apiKey: boolean;
  /** Start a response for every GuardDuty EC2 finding at or above this severity; off when unset. */
  readonly guardDutySeverity?: number;
  /**
   * Responses that may run at once: the reserved concurrency of every step function and the
   * number of executions the GuardDuty path lets run (the rest wait in its queue). Default sized
   * from EC2's request token buckets (lib/concurrency.ts).
   */
  readonly maxConcurrentResponses: number;
  /** Reserve that concurrency for the functions; off for accounts whose Lambda quota is too small. */
  readonly reservedConcurrency: boolean;
  /**
   * The collection budget B in seconds: the whole time an SSM collection may take, from SendCommand
   * to the poll deadline; the delivery and execution timeouts, the script's budgets and the poll
   * deadline are derived from it (cordon_common::collection::Budget). A request may ask for another
   * budget (options.collection_budget_seconds) up to `collectionMaxBudgetSeconds`.
   */
  readonly collectionBudgetSeconds: number;
  readonly collectionMaxBudgetSeconds: number;
  /**
   * Create (and retain) the region's API Gateway CloudWatch Logs role (AWS::ApiGateway::Account),
   * which access and execution logging need. Off when the account already manages one.
   */
  readonly apiGatewayCloudWatchRole: boolean;
  /** API stage name and its throttling (steady requests per second, burst). */
  readonly apiStageName: string;
  readonly apiRateLimit: number;
  readonly apiBurstLimit: number;
  /** Retention of the Lambda, state machine and API access log groups. */
  readonly logRetention: RetentionDays;
  /**
   * The one IAM role exempt from the evidence bucket's deny of retention bypass, retention and
   * Object Lock changes, version deletion and versioning changes; it may also decrypt evidence.
   * Unset: no principal of the account is exempt (README "Evidence").
   */
  readonly breakGlassRoleArn?: string;
  /** A role (besides Cordon's own and the break-glass role) that may decrypt evidence. */
  readonly investigatorRoleArn?: string;
}

/** The collection budget's bounds and defaults (context collectionBudgetSeconds, collectionMaxBudgetSeconds). */
export const MIN_COLLECTION_BUDGET_SECONDS = 300;
export const MAX_COLLECTION_BUDGET_SECONDS = 3600;
export const DEFAULT_COLLECTION_BUDGET_SECONDS = 1200;
export const DEFAULT_COLLECTION_MAX_BUDGET_SECONDS = 3600;

const ARCHITECTURES: readonly Architecture[] = ['arm64', 'x86_64'];
const RETENTION_MODES: readonly RetentionMode[] = ['GOVERNANCE', 'COMPLIANCE'];

/** Reads and validates the context. `defaultLambdaDir` is `<CARGO_TARGET_DIR or repo/target>/lambda`. */
export function configFromContext(node: Node, defaultLambdaDir: string): CordonConfig {
  const ctx = (key: string): unknown => node.tryGetContext(key);

  const architecture = stringOf(ctx('architecture'), 'architecture') ?? 'arm64';
  if (!ARCHITECTURES.includes(architecture as Architecture)) {
    throw new Error(`context architecture must be one of ${ARCHITECTURES.join(', ')}, got "${architecture}"`);
  }
  const retentionMode = (stringOf(ctx('retentionMode'), 'retentionMode') ?? 'GOVERNANCE').toUpperCase();
  if (!RETENTION_MODES.includes(retentionMode as RetentionMode)) {
    throw new Error(`context retentionMode must be GOVERNANCE or COMPLIANCE, got "${retentionMode}"`);
  }
  const retentionDays = integerOf(ctx('retentionDays'), 'retentionDays', 1, 36500) ?? 365;

  const notificationEmail = stringOf(ctx('notificationEmail'), 'notificationEmail');
  if (notificationEmail !== undefined && notificationEmail !== '' && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(notificationEmail)) {
    throw new Error(`context notificationEmail is not an email address: "${notificationEmail}"`);
  }

  const severity = ctx('guardDutySeverity');
  let guardDutySeverity: number | undefined;
  if (severity !== undefined && severity !== null && severity !== '') {
    guardDutySeverity = Number(severity);
    // GuardDuty severities run from 1.0 (low) to 10.0 (critical).
    if (!Number.isFinite(guardDutySeverity) || guardDutySeverity < 1 || guardDutySeverity > 10) {
      throw new Error(`context guardDutySeverity must be a number from 1 to 10, got "${String(severity)}"`);
    }
  }

  // 300 s at least: the delivery timeout is clamp(B/5, 60, 600) and the script keeps 60 s of the
  // execution timeout for itself, so a smaller budget leaves the script almost nothing. 3,600 s at
  // most: the collection holds the compromised instance's command channel open (the revocation
  // exemption) and the forensic profile attached, and an hour is the longest Cordon allows that.
  const collectionBudgetSeconds =
    integerOf(ctx('collectionBudgetSeconds'), 'collectionBudgetSeconds', MIN_COLLECTION_BUDGET_SECONDS, MAX_COLLECTION_BUDGET_SECONDS) ??
    DEFAULT_COLLECTION_BUDGET_SECONDS;
  const collectionMaxBudgetSeconds =
    integerOf(ctx('collectionMaxBudgetSeconds'), 'collectionMaxBudgetSeconds', MIN_COLLECTION_BUDGET_SECONDS, MAX_COLLECTION_BUDGET_SECONDS) ??
    DEFAULT_COLLECTION_MAX_BUDGET_SECONDS;
  if (collectionBudgetSeconds > collectionMaxBudgetSeconds) {
    throw new Error(
      `context collectionBudgetSeconds (${collectionBudgetSeconds}) must not exceed collectionMaxBudgetSeconds (${collectionMaxBudgetSeconds}): ` +
        'the deployment default is itself a budget that a request could ask for',
    );
  }

  const apiStageName = stringOf(ctx('apiStageName'), 'apiStageName') ?? 'v1';
  if (!/^[A-Za-z0-9_]{1,128}$/.test(apiStageName)) {
    throw new Error(`context apiStageName may hold only letters, digits and underscores, got "${apiStageName}"`);
  }

  const logRetentionDays = integerOf(ctx('logRetentionDays'), 'logRetentionDays', 1, 3653) ?? 365;
  const logRetention = logRetentionDays as RetentionDays;
  if (!Object.values(RetentionDays).includes(logRetention)) {
    throw new Error(`context logRetentionDays must be a CloudWatch Logs retention (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...), got ${logRetentionDays}`);
  }

  const breakGlassRoleArn = roleArnOf(ctx('breakGlassRoleArn'), 'breakGlassRoleArn');
  const investigatorRoleArn = roleArnOf(ctx('investigatorRoleArn'), 'investigatorRoleArn');

  return {
    placeholderCode: booleanOf(ctx('placeholderCode'), 'placeholderCode'),
    architecture: architecture as Architecture,
    lambdaDir: stringOf(ctx('lambdaDir'), 'lambdaDir') ?? defaultLambdaDir,
    retentionDays,
    retentionMode: retentionMode as RetentionMode,
    notificationEmail: notificationEmail === '' ? undefined : notificationEmail,
    apiKey: booleanOf(ctx('apiKey'), 'apiKey'),
    apiGatewayCloudWatchRole: booleanOf(ctx('apiGatewayCloudWatchRole') ?? true, 'apiGatewayCloudWatchRole'),
    guardDutySeverity,
    maxConcurrentResponses:
      integerOf(ctx('maxConcurrentResponses'), 'maxConcurrentResponses', 1, 1000) ?? DEFAULT_MAX_CONCURRENT_RESPONSES,
    reservedConcurrency: booleanOf(ctx('reservedConcurrency') ?? true, 'reservedConcurrency'),
    collectionBudgetSeconds,
    collectionMaxBudgetSeconds,
    apiStageName,
    apiRateLimit: integerOf(ctx('apiRateLimit'), 'apiRateLimit', 1, 10000) ?? 10,
    apiBurstLimit: integerOf(ctx('apiBurstLimit'), 'apiBurstLimit', 1, 5000) ?? 20,
    logRetention,
    breakGlassRoleArn,
    investigatorRoleArn,
  };
}

// An IAM role ARN with its path, exactly as aws:PrincipalArn carries it for the role's sessions
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn:
// for an assumed-role session the key holds the ARN of the role, not of the session). Names and
// paths as IAM allows them (https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html).
const ROLE_ARN = /^arn:aws(-[a-z]+)*:iam::\d{12}:role\/([\w+=,.@-]+\/)*[\w+=,.@-]{1,64}$/;

function roleArnOf(value: unknown, key: string): string | undefined {
  const arn = stringOf(value, key);
  if (arn === undefined || arn === '') return undefined;
  if (!ROLE_ARN.test(arn)) {
    throw new Error(`context ${key} must be an IAM role ARN (arn:aws:iam::<account>:role/<path/><name>), not a session or user ARN, got "${arn}"`);
  }
  return arn;
}

// Context given with `-c key=value` always arrives as a string; cdk.json and tests may give
// real booleans and numbers. Both are accepted.

function stringOf(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new Error(`context ${key} must be a string`);
  }
  return String(value);
}

function booleanOf(value: unknown, key: string): boolean {
  if (value === undefined || value === null || value === false || value === 'false' || value === '') return false;
  if (value === true || value === 'true') return true;
  throw new Error(`context ${key} must be true or false, got "${String(value)}"`);
}

function integerOf(value: unknown, key: string, min: number, max: number): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`context ${key} must be a whole number from ${min} to ${max}, got "${String(value)}"`);
  }
  return n;
}
