// The SecurityResponse API talks to Step Functions directly (AWS service integrations), so its
// behaviour is these mapping templates (Velocity, API Gateway's $input/$util/$context:
// https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html)
// and the request model below.
//
// $util.escapeJavaScript escapes ' as \' (not valid JSON); the .replaceAll undoes that, as in the
// API Gateway documentation's Step Functions examples.

import * as apigw from 'aws-cdk-lib/aws-apigateway';

import { MIN_COLLECTION_BUDGET_SECONDS } from './config';

const JSON_STRING = (expr: string) => String.raw`"$util.escapeJavaScript(${expr}).replaceAll("\\'", "'")"`;

/**
 * What an incident id is: the execution name POST /incidents gives (the body's incident_id, or
 * the API request id, a UUID; EventBridge names the executions it starts with UUIDs too).
 * Unanchored, for Java's String.matches (whole string) in templates; anchored in the model.
 */
export const INCIDENT_ID = '[A-Za-z0-9][A-Za-z0-9._-]{0,79}';

/**
 * POST /incidents body. Anything else is 400 before Step Functions is called. The largest
 * collection budget a request may ask for is the deployment's (context collectionMaxBudgetSeconds);
 * "Validate input" checks the same bound for executions started without the API.
 */
export const incidentRequestSchema = (maxCollectionBudgetSeconds: number): apigw.JsonSchema => ({
  schema: apigw.JsonSchemaVersion.DRAFT4,
  title: 'IncidentRequest',
  type: apigw.JsonSchemaType.OBJECT,
  required: ['instance_id'],
  additionalProperties: false,
  properties: {
    instance_id: {
      type: apigw.JsonSchemaType.STRING,
      description: 'EC2 instance id, 8 or 17 hex digits',
      pattern: '^i-[0-9a-f]{8}([0-9a-f]{9})?$',
    },
    incident_id: {
      type: apigw.JsonSchemaType.STRING,
      description: 'Becomes the execution name (Step Functions allows 80 characters); the API request id when absent',
      pattern: `^${INCIDENT_ID}$`,
    },
    reason: { type: apigw.JsonSchemaType.STRING, maxLength: 1024 },
    requested_by: { type: apigw.JsonSchemaType.STRING, maxLength: 2048 },
    options: {
      type: apigw.JsonSchemaType.OBJECT,
      additionalProperties: false,
      properties: {
        collect: { type: apigw.JsonSchemaType.BOOLEAN },
        memory: { type: apigw.JsonSchemaType.BOOLEAN },
        revoke_sessions: { type: apigw.JsonSchemaType.STRING, enum: ['instance', 'role', 'none'] },
        network: { type: apigw.JsonSchemaType.STRING, enum: ['sg', 'sg+nacl'] },
        stop_after_evidence: { type: apigw.JsonSchemaType.BOOLEAN },
        // "before-containment" is accepted here so that "Validate input" refuses it with its own
        // InvalidInput message (not available in this version) rather than a bare schema error.
        collection_network: { type: apigw.JsonSchemaType.STRING, enum: ['endpoints', 'internet-443', 'before-containment'] },
        collection_budget_seconds: {
          type: apigw.JsonSchemaType.INTEGER,
          minimum: MIN_COLLECTION_BUDGET_SECONDS,
          maximum: maxCollectionBudgetSeconds,
        },
      },
    },
  },
});

/**
 * StartExecution request: the body is the execution input as it came, and the execution name is
 * the body's incident_id (already checked against the model's pattern) or the API request id.
 */
export function startExecutionRequest(stateMachineArn: string): string {
  return [
    String.raw`#set($incidentId = "$!input.path('$.incident_id')")`,
    '{',
    `  "stateMachineArn": "${stateMachineArn}",`,
    String.raw`  "name": "#if($incidentId != "")$incidentId#{else}$context.requestId#end",`,
    `  "input": ${JSON_STRING(String.raw`$input.json('$')`)}`,
    '}',
  ].join('\n');
}

/** StartExecution answer → {"incident_id", "execution_arn"}; the id is the execution name. */
export const startExecutionResponse = [
  String.raw`#set($arn = $input.path('$.executionArn'))`,
  String.raw`#set($nameStart = $arn.lastIndexOf(':') + 1)`,
  '{',
  String.raw`  "incident_id": "$arn.substring($nameStart)",`,
  String.raw`  "execution_arn": "$arn"`,
  '}',
].join('\n');

/**
 * Step Functions reports client errors, throttling included, as HTTP 400 with a __type: an
 * incident id that was already used (with another body, or by a finished execution) is 409.
 * A repeat of the same body while the first execution runs is not an error: StartExecution is
 * idempotent then and answers with the same execution.
 */
export const startExecutionError = [
  String.raw`#set($type = "$!input.path('$.__type')")`,
  String.raw`#if($type.endsWith('ExecutionAlreadyExists'))`,
  String.raw`#set($context.responseOverride.status = 409)`,
  String.raw`{"error": "IncidentAlreadyExists", "message": "an incident with this incident_id already exists (started with a different body, or already finished); GET /incidents/{id} shows it, or choose a new incident_id"}`,
  String.raw`#elseif($type.endsWith('ThrottlingException'))`,
  String.raw`#set($context.responseOverride.status = 429)`,
  String.raw`{"error": "TooManyRequests", "message": "Step Functions is throttling StartExecution; retry with backoff"}`,
  String.raw`#elseif($type.endsWith('InvalidName') || $type.endsWith('InvalidExecutionInput'))`,
  `{"error": "InvalidRequest", "message": ${JSON_STRING(String.raw`$input.path('$.message')`)}}`,
  '#else',
  String.raw`#set($context.responseOverride.status = 500)`,
  `{"error": "StartFailed", "message": "Step Functions did not start the response", "type": ${JSON_STRING('$type')}}`,
  '#end',
].join('\n');

/**
 * DescribeExecution request for the execution named by the path: `<prefix><id>`.
 *
 * Only an id that can be an incident id becomes part of the ARN; it has no character that JSON or
 * an ARN would need escaped. Any other id names no execution of Cordon: the request then carries
 * no ARN at all, Step Functions answers InvalidArn, and the error template answers 400
 * InvalidIncidentId. (Escaping the id into the ARN was wrong: $util.escapeJavaScript turns ' into
 * \', which is not valid JSON, so an id with a single quote got a 500.)
 */
export function describeExecutionRequest(executionArnPrefix: string): string {
  return [
    String.raw`#set($id = $input.params('id'))`,
    `#if($id.matches('${INCIDENT_ID}'))`,
    `{"executionArn": "${executionArnPrefix}$id"}`,
    '#else',
    '{"executionArn": "not-an-incident-id"}',
    '#end',
  ].join('\n');
}

/** DescribeExecution answer → status and, once finished, output (as JSON) or error and cause. */
export const describeExecutionResponse = [
  String.raw`#set($e = $input.path('$'))`,
  '{',
  `  "incident_id": ${JSON_STRING('$e.name')},`,
  String.raw`  "execution_arn": "$e.executionArn",`,
  String.raw`  "status": "$e.status",`,
  String.raw`  "start_date": $input.json('$.startDate'),`,
  String.raw`  "stop_date": #if("$!e.stopDate" != "")$input.json('$.stopDate')#{else}null#end,`,
  // The execution output is JSON text already: it is embedded as JSON, not as a string.
  String.raw`  "output": #if("$!e.output" != "")$e.output#{else}null#end,`,
  `  "error": #if("$!e.error" != "")${JSON_STRING('$e.error')}#{else}null#end,`,
  `  "cause": #if("$!e.cause" != "")${JSON_STRING('$e.cause')}#{else}null#end`,
  '}',
].join('\n');

export const describeExecutionError = [
  String.raw`#set($type = "$!input.path('$.__type')")`,
  String.raw`#if($type.endsWith('ExecutionDoesNotExist'))`,
  String.raw`#set($context.responseOverride.status = 404)`,
  String.raw`{"error": "IncidentNotFound", "message": "no incident with this id"}`,
  String.raw`#elseif($type.endsWith('InvalidArn'))`,
  String.raw`{"error": "InvalidIncidentId", "message": "an incident id is 1 to 80 letters, digits, '.', '_' or '-'"}`,
  String.raw`#elseif($type.endsWith('ThrottlingException'))`,
  String.raw`#set($context.responseOverride.status = 429)`,
  String.raw`{"error": "TooManyRequests", "message": "Step Functions is throttling DescribeExecution; retry with backoff"}`,
  '#else',
  String.raw`#set($context.responseOverride.status = 500)`,
  `{"error": "DescribeFailed", "message": "Step Functions did not describe the response", "type": ${JSON_STRING('$type')}}`,
  '#end',
].join('\n');
