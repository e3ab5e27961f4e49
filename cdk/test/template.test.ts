// The default deployment's resources and their properties, as the template says them.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Match } from 'aws-cdk-lib/assertions';

import { flatten, list, logicalIdOf, only, resourcesOf, synth } from './helpers';

const { template } = synth();
const json = template.toJSON();
const R = json.Resources as Record<string, any>;

const [evidenceBucketId, evidenceBucket] = only(
  Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::S3::Bucket')).filter(([, b]) => b.Properties.ObjectLockEnabled)),
);
const [stateMachineId, stateMachine] = only(resourcesOf(template, 'AWS::StepFunctions::StateMachine'));
const substitutions = stateMachine.Properties.DefinitionSubstitutions as Record<string, any>;
const STEP_PLACEHOLDERS = [
  'MetadataFunctionArn', 'ScreenshotFunctionArn', 'SnapshotFunctionArn', 'TermprotectFunctionArn',
  'DetachProfileFunctionArn', 'SsmCollectFunctionArn', 'QuarantineFunctionArn', 'NotifyFunctionArn',
];
const functionOf = (placeholder: string) => R[logicalIdOf(substitutions[placeholder])];
const methods = Object.values(resourcesOf(template, 'AWS::ApiGateway::Method'));
const post = methods.find((m) => m.Properties.HttpMethod === 'POST')!;
const get = methods.find((m) => m.Properties.HttpMethod === 'GET')!;

describe('evidence bucket', () => {
  test('versioned, Object Lock with 365 days GOVERNANCE by default', () => {
    assert.equal(evidenceBucket.Properties.ObjectLockEnabled, true);
    assert.deepEqual(evidenceBucket.Properties.ObjectLockConfiguration, {
      ObjectLockEnabled: 'Enabled',
      Rule: { DefaultRetention: { Days: 365, Mode: 'GOVERNANCE' } },
    });
    assert.deepEqual(evidenceBucket.Properties.VersioningConfiguration, { Status: 'Enabled' });
  });

  test('SSE-KMS with a customer-managed key that rotates, and an S3 Bucket Key', () => {
    const [rule] = evidenceBucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration;
    assert.equal(rule.ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
    assert.equal(rule.BucketKeyEnabled, true);
    const keyId = logicalIdOf(rule.ServerSideEncryptionByDefault.KMSMasterKeyID);
    assert.equal(R[keyId].Type, 'AWS::KMS::Key');
    assert.equal(R[keyId].Properties.EnableKeyRotation, true);
    assert.equal(R[keyId].DeletionPolicy, 'Retain', 'the key outlives the stack with the evidence');
  });

  test('all public access blocked', () => {
    assert.deepEqual(evidenceBucket.Properties.PublicAccessBlockConfiguration, {
      BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true,
    });
  });

  test('TLS enforced by the bucket policy', () => {
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: evidenceBucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  });

  test('server access logs go to a separate, private, encrypted log bucket', () => {
    const logBucketId = evidenceBucket.Properties.LoggingConfiguration.DestinationBucketName.Ref;
    assert.notEqual(logBucketId, evidenceBucketId);
    const logBucket = R[logBucketId];
    assert.equal(logBucket.Type, 'AWS::S3::Bucket');
    assert.equal(logBucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'AES256');
    assert.equal(logBucket.Properties.PublicAccessBlockConfiguration.RestrictPublicBuckets, true);
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: logBucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Allow', Principal: { Service: 'logging.s3.amazonaws.com' }, Action: 's3:PutObject' }),
        ]),
      },
    });
  });

  test('both buckets are retained when the stack is deleted', () => {
    for (const bucket of Object.values(resourcesOf(template, 'AWS::S3::Bucket'))) {
      assert.equal(bucket.DeletionPolicy, 'Retain');
      assert.equal(bucket.UpdateReplacePolicy, 'Retain');
    }
  });
});

describe('notification topic', () => {
  test('encrypted with a rotating customer-managed key, TLS enforced, no subscription by default', () => {
    const [topicId, topic] = only(resourcesOf(template, 'AWS::SNS::Topic'));
    const keyId = logicalIdOf(topic.Properties.KmsMasterKeyId);
    assert.equal(R[keyId].Properties.EnableKeyRotation, true);
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: topicId }],
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
    template.resourceCountIs('AWS::SNS::Subscription', 0);
  });
});

describe('step functions', () => {
  test('eight functions, one per placeholder of the state machine', () => {
    template.resourceCountIs('AWS::Lambda::Function', 8);
    const ids = STEP_PLACEHOLDERS.map((p) => logicalIdOf(substitutions[p]));
    assert.equal(new Set(ids).size, 8);
    for (const id of ids) assert.equal(R[id].Type, 'AWS::Lambda::Function');
  });

  for (const placeholder of STEP_PLACEHOLDERS) {
    // ssm-collect: cancel at the deadline, wait for the end, hash a memory image (lib/steps.ts).
    const timeout = placeholder === 'SsmCollectFunctionArn' ? 900 : 60;
    test(`${placeholder.replace('FunctionArn', '')}: provided.al2023, arm64, bootstrap, 256 MB, ${timeout} s, JSON logs to its own group`, () => {
      const fn = functionOf(placeholder).Properties;
      assert.equal(fn.Runtime, 'provided.al2023');
      assert.deepEqual(fn.Architectures, ['arm64']);
      assert.equal(fn.Handler, 'bootstrap');
      assert.equal(fn.MemorySize, 256);
      assert.equal(fn.Timeout, timeout);
      assert.equal(fn.LoggingConfig.LogFormat, 'JSON');
      const logGroup = R[fn.LoggingConfig.LogGroup.Ref];
      assert.equal(logGroup.Type, 'AWS::Logs::LogGroup');
      assert.equal(logGroup.Properties.RetentionInDays, 365);
      // Placeholder code: an asset zip, never an inline ZipFile.
      assert.match(fn.Code.S3Key, /\.zip$/);
    });
  }

  test('every function has its own log group', () => {
    const groups = STEP_PLACEHOLDERS.map((p) => functionOf(p).Properties.LoggingConfig.LogGroup.Ref);
    assert.equal(new Set(groups).size, 8);
  });

  test('environment: EVIDENCE_BUCKET everywhere, TOPIC_ARN for notify, FORENSIC_INSTANCE_PROFILE_ARN for detach-profile, the snapshot lock for snapshot, the collection budget for metadata and ssm-collect', () => {
    for (const placeholder of STEP_PLACEHOLDERS) {
      const vars = functionOf(placeholder).Properties.Environment.Variables;
      const expected: Record<string, unknown> = { EVIDENCE_BUCKET: { Ref: evidenceBucketId } };
      if (placeholder === 'NotifyFunctionArn') expected.TOPIC_ARN = { Ref: only(resourcesOf(template, 'AWS::SNS::Topic'))[0] };
      if (placeholder === 'DetachProfileFunctionArn') {
        expected.FORENSIC_INSTANCE_PROFILE_ARN = { 'Fn::GetAtt': [only(resourcesOf(template, 'AWS::IAM::InstanceProfile'))[0], 'Arn'] };
      }
      if (placeholder === 'SnapshotFunctionArn') Object.assign(expected, { SNAPSHOT_LOCK_MODE: 'governance', SNAPSHOT_LOCK_DAYS: '365' });
      if (placeholder === 'MetadataFunctionArn' || placeholder === 'SsmCollectFunctionArn') {
        Object.assign(expected, { COLLECTION_BUDGET_SECONDS: '1200', COLLECTION_MAX_BUDGET_SECONDS: '3600' });
      }
      assert.deepEqual(vars, expected, placeholder);
    }
  });
});

describe('forensic instance profile', () => {
  test('an instance profile under /cordon/ for the forensic role, which lives under /cordon-forensic/', () => {
    const [, profile] = only(resourcesOf(template, 'AWS::IAM::InstanceProfile'));
    assert.equal(profile.Properties.Path, '/cordon/');
    const role = R[profile.Properties.Roles[0].Ref];
    assert.equal(role.Type, 'AWS::IAM::Role');
    // Outside /cordon/: detach-profile may revoke its sessions, and the evidence key refuses it Decrypt.
    assert.equal(role.Properties.Path, '/cordon-forensic/');
  });
});

describe('state machine', () => {
  test('Standard, logging ALL with execution data, X-Ray tracing', () => {
    assert.equal(stateMachine.Properties.StateMachineType, 'STANDARD');
    const logging = stateMachine.Properties.LoggingConfiguration;
    assert.equal(logging.Level, 'ALL');
    assert.equal(logging.IncludeExecutionData, true);
    const logGroupId = logicalIdOf(logging.Destinations[0].CloudWatchLogsLogGroup.LogGroupArn);
    assert.equal(R[logGroupId].Type, 'AWS::Logs::LogGroup');
    assert.deepEqual(stateMachine.Properties.TracingConfiguration, { Enabled: true });
  });

  test('the definition is inline (not an S3 asset) and substitutions hold every value', () => {
    assert.equal(typeof stateMachine.Properties.DefinitionString, 'string');
    assert.equal(stateMachine.Properties.DefinitionS3Location, undefined);
    for (const p of STEP_PLACEHOLDERS) assert.equal(R[logicalIdOf(substitutions[p])].Type, 'AWS::Lambda::Function');
    // The collection timing is the functions' (COLLECTION_BUDGET_SECONDS), not the definition's.
    assert.equal(substitutions.CollectionWaitSeconds, undefined);
    assert.equal(substitutions.CollectionMaxPolls, undefined);
    assert.deepEqual(substitutions.EvidenceBucket, { Ref: evidenceBucketId });
    assert.equal(R[logicalIdOf(substitutions.TopicArn)].Type, 'AWS::SNS::Topic');
    assert.equal(R[logicalIdOf(substitutions.ForensicInstanceProfileArn)].Type, 'AWS::IAM::InstanceProfile');
  });
});

describe('SecurityResponse API', () => {
  test('a regional REST API named SecurityResponse', () => {
    template.hasResourceProperties('AWS::ApiGateway::RestApi', {
      Name: 'SecurityResponse',
      EndpointConfiguration: { Types: ['REGIONAL'] },
    });
  });

  test('POST /incidents starts an execution directly: states StartExecution, IAM auth, validated model', () => {
    assert.equal(R[post.Properties.ResourceId.Ref].Properties.PathPart, 'incidents');
    assert.equal(post.Properties.AuthorizationType, 'AWS_IAM');
    assert.equal(post.Properties.ApiKeyRequired, undefined);
    const integration = post.Properties.Integration;
    assert.equal(integration.Type, 'AWS');
    assert.equal(integration.IntegrationHttpMethod, 'POST');
    assert.equal(flatten(integration.Uri), 'arn:<AWS::Partition>:apigateway:<AWS::Region>:states:action/StartExecution');
    assert.equal(integration.PassthroughBehavior, 'NEVER');

    const validator = R[post.Properties.RequestValidatorId.Ref];
    assert.equal(validator.Type, 'AWS::ApiGateway::RequestValidator');
    assert.equal(validator.Properties.ValidateRequestBody, true);
    const model = R[post.Properties.RequestModels['application/json'].Ref];
    assert.equal(model.Type, 'AWS::ApiGateway::Model');
    assert.equal(model.Properties.ContentType, 'application/json');
  });

  test('the request model is the issue\'s schema', () => {
    const model = R[post.Properties.RequestModels['application/json'].Ref];
    const schema = model.Properties.Schema;
    assert.equal(schema.$schema, 'http://json-schema.org/draft-04/schema#');
    assert.equal(schema.type, 'object');
    assert.deepEqual(schema.required, ['instance_id']);
    assert.equal(schema.additionalProperties, false);
    assert.deepEqual(schema.properties.instance_id, { type: 'string', description: schema.properties.instance_id.description, pattern: '^i-[0-9a-f]{8}([0-9a-f]{9})?$' });
    assert.equal(schema.properties.incident_id.pattern, '^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$');
    assert.deepEqual(schema.properties.reason, { type: 'string', maxLength: 1024 });
    assert.deepEqual(schema.properties.requested_by, { type: 'string', maxLength: 2048 });
    assert.deepEqual(schema.properties.options, {
      type: 'object',
      additionalProperties: false,
      properties: {
        collect: { type: 'boolean' },
        memory: { type: 'boolean' },
        revoke_sessions: { type: 'string', enum: ['instance', 'role', 'none'] },
        network: { type: 'string', enum: ['sg', 'sg+nacl'] },
        stop_after_evidence: { type: 'boolean' },
        collection_network: { type: 'string', enum: ['endpoints', 'internet-443', 'before-containment'] },
        collection_budget_seconds: { type: 'integer', minimum: 300, maximum: 3600 },
      },
    });
    assert.deepEqual(Object.keys(schema.properties).sort(), ['incident_id', 'instance_id', 'options', 'reason', 'requested_by']);
  });

  test('the schema accepts and rejects what it should (checked with the same patterns)', () => {
    const schema = R[post.Properties.RequestModels['application/json'].Ref].Properties.Schema;
    const instance = new RegExp(schema.properties.instance_id.pattern);
    const incident = new RegExp(schema.properties.incident_id.pattern);
    for (const ok of ['i-0123abcd', 'i-0123456789abcdef0']) assert.ok(instance.test(ok), ok);
    for (const bad of ['i-0123abc', 'i-0123456789ABCDEF0', 'i-0123456789abcdef', 'x-0123abcd', 'i-0123abcd ']) assert.ok(!instance.test(bad), bad);
    for (const ok of ['INC-1', 'a', 'x'.repeat(80), '2024.10_01-a']) assert.ok(incident.test(ok), ok);
    for (const bad of ['', '-x', '.x', 'x'.repeat(81), 'a b', 'a:b', 'a/b']) assert.ok(!incident.test(bad), bad);
  });

  test('the StartExecution request template: state machine ARN, body as input, incident_id or request id as name', () => {
    const requestTemplate = flatten(post.Properties.Integration.RequestTemplates['application/json']);
    assert.match(requestTemplate, new RegExp(`"stateMachineArn": "<${stateMachineId}>"`));
    assert.match(requestTemplate, /"input": "\$util\.escapeJavaScript\(\$input\.json\('\$'\)\)/);
    assert.match(requestTemplate, /\$!input\.path\('\$\.incident_id'\)/);
    assert.match(requestTemplate, /"name": "#if\(\$incidentId != ""\)\$incidentId#\{else\}\$context\.requestId#end"/);
  });

  test('StartExecution responses: {incident_id, execution_arn}, ExecutionAlreadyExists is 409', () => {
    const responses = post.Properties.Integration.IntegrationResponses as any[];
    const ok = responses.find((r) => r.SelectionPattern === undefined);
    assert.equal(ok.StatusCode, '202');
    const okTemplate = ok.ResponseTemplates['application/json'];
    assert.match(okTemplate, /"incident_id":/);
    assert.match(okTemplate, /"execution_arn": "\$arn"/);
    const clientError = responses.find((r) => r.SelectionPattern === '4\\d{2}');
    const errorTemplate = clientError.ResponseTemplates['application/json'];
    assert.match(errorTemplate, /#if\(\$type\.endsWith\('ExecutionAlreadyExists'\)\)\n#set\(\$context\.responseOverride\.status = 409\)/);
    assert.match(errorTemplate, /IncidentAlreadyExists/);
    const declared = (post.Properties.MethodResponses as any[]).map((r) => r.StatusCode).sort();
    assert.deepEqual(declared, ['202', '400', '409', '429', '500']);
  });

  test('GET /incidents/{id} describes the execution of that name', () => {
    assert.equal(R[get.Properties.ResourceId.Ref].Properties.PathPart, '{id}');
    assert.equal(get.Properties.AuthorizationType, 'AWS_IAM');
    assert.deepEqual(get.Properties.RequestParameters, { 'method.request.path.id': true });
    const integration = get.Properties.Integration;
    assert.equal(flatten(integration.Uri), 'arn:<AWS::Partition>:apigateway:<AWS::Region>:states:action/DescribeExecution');
    const requestTemplate = flatten(integration.RequestTemplates['application/json']);
    // Only an id that can be an incident id (the model's incident_id pattern) goes into the ARN, as
    // is; any other id gets a request with no ARN (InvalidArn -> 400 InvalidIncidentId, below).
    const schema = R[post.Properties.RequestModels['application/json'].Ref].Properties.Schema;
    assert.equal(
      requestTemplate,
      [
        "#set($id = $input.params('id'))",
        `#if($id.matches('${schema.properties.incident_id.pattern.slice(1, -1)}'))`,
        `{"executionArn": "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<${stateMachineId}.Name>:$id"}`,
        '#else',
        '{"executionArn": "not-an-incident-id"}',
        '#end',
      ].join('\n'),
    );
    assert.match(schema.properties.incident_id.pattern, /^\^.*\$$/);
    const ok = (integration.IntegrationResponses as any[]).find((r) => r.SelectionPattern === undefined);
    assert.match(ok.ResponseTemplates['application/json'], /"status": "\$e\.status"/);
    assert.match(ok.ResponseTemplates['application/json'], /"output": /);
    const notFound = (integration.IntegrationResponses as any[]).find((r) => r.SelectionPattern === '4\\d{2}');
    assert.match(notFound.ResponseTemplates['application/json'], /ExecutionDoesNotExist'\)\)\n#set\(\$context\.responseOverride\.status = 404\)/);
    assert.match(notFound.ResponseTemplates['application/json'], /#elseif\(\$type\.endsWith\('InvalidArn'\)\)\n\{"error": "InvalidIncidentId"/);
  });

  test('every $util.escapeJavaScript in a mapping template is made valid JSON (\\\' back to \')', () => {
    // escapeJavaScript escapes ' as \', which JSON does not allow; the API Gateway reference's fix
    // is .replaceAll("\\'", "'") on its result.
    // https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html
    const templates: string[] = [];
    for (const method of [post, get]) {
      const integration = method.Properties.Integration;
      templates.push(...Object.values(integration.RequestTemplates as Record<string, unknown>).map(flatten));
      for (const r of integration.IntegrationResponses as any[]) templates.push(...(Object.values(r.ResponseTemplates ?? {}) as string[]));
    }
    let calls = 0;
    for (const text of templates) {
      for (const m of text.matchAll(/\$util\.escapeJavaScript\(/g)) {
        calls += 1;
        let depth = 0;
        let end = m.index! + m[0].length - 1;
        for (; end < text.length; end += 1) {
          if (text[end] === '(') depth += 1;
          if (text[end] === ')' && --depth === 0) break;
        }
        assert.ok(text.startsWith(`.replaceAll("\\\\'", "'")`, end + 1), text.slice(m.index!, end + 30));
      }
    }
    assert.ok(calls >= 5, `${calls}`);
  });

  test('stage: access logs to a log group, throttling, X-Ray, execution logs without bodies', () => {
    const [, stage] = only(resourcesOf(template, 'AWS::ApiGateway::Stage'));
    assert.equal(stage.Properties.StageName, 'v1');
    assert.equal(stage.Properties.TracingEnabled, true);
    const destination = flatten(stage.Properties.AccessLogSetting.DestinationArn);
    const groupId = /:log-group:<(\w+)>$/.exec(destination)?.[1];
    assert.equal(R[groupId!].Type, 'AWS::Logs::LogGroup');
    const format = JSON.parse(stage.Properties.AccessLogSetting.Format);
    assert.equal(format.requestId, '$context.requestId');
    assert.equal(format.userArn, '$context.identity.userArn');
    assert.deepEqual(stage.Properties.MethodSettings, [
      {
        DataTraceEnabled: false,
        HttpMethod: '*',
        LoggingLevel: 'INFO',
        MetricsEnabled: true,
        ResourcePath: '/*',
        ThrottlingBurstLimit: 20,
        ThrottlingRateLimit: 10,
      },
    ]);
    // The region's API Gateway CloudWatch role setting outlives the stack: other APIs rely on it.
    const [, account] = only(resourcesOf(template, 'AWS::ApiGateway::Account'));
    assert.equal(account.DeletionPolicy, 'Retain');
    assert.equal(R[logicalIdOf(account.Properties.CloudWatchRoleArn)].DeletionPolicy, 'Retain');
  });

  test('no API key, usage plan or GuardDuty rule by default', () => {
    template.resourceCountIs('AWS::ApiGateway::ApiKey', 0);
    template.resourceCountIs('AWS::ApiGateway::UsagePlan', 0);
    // Only the failure-announcement rule.
    assert.deepEqual(
      Object.keys(resourcesOf(template, 'AWS::Events::Rule')).map((id) => id.replace(/[0-9A-F]{8}$/, '')),
      ['FailureRule'],
    );
  });

  test('failures are announced from outside the execution: status-change rule to notify, its DLQ, an alarm', () => {
    const [, rule] = only(resourcesOf(template, 'AWS::Events::Rule'));
    assert.deepEqual(rule.Properties.EventPattern.source, ['aws.states']);
    assert.deepEqual(rule.Properties.EventPattern['detail-type'], ['Step Functions Execution Status Change']);
    assert.deepEqual(rule.Properties.EventPattern.detail.status, ['FAILED', 'TIMED_OUT', 'ABORTED']);
    const [target] = rule.Properties.Targets;
    assert.match(JSON.stringify(target.Arn), /NotifyFunction/);
    assert.ok(target.DeadLetterConfig?.Arn, 'a dead-letter queue');
    assert.equal(target.RetryPolicy.MaximumRetryAttempts, 8);
    const [, alarm] = only(resourcesOf(template, 'AWS::CloudWatch::Alarm'));
    assert.match(JSON.stringify(alarm.Properties.AlarmActions), /Topic/);
    const names = alarm.Properties.Metrics.filter((m: any) => m.MetricStat).map((m: any) => m.MetricStat.Metric.MetricName).sort();
    assert.deepEqual(names, ['ExecutionsAborted', 'ExecutionsFailed', 'ExecutionsTimedOut']);
  });
});

describe('outputs', () => {
  test('APIBaseURI, StateMachineArn, EvidenceBucketName, TopicArn (no ApiKeyId without apiKey)', () => {
    assert.deepEqual(Object.keys(json.Outputs).sort(), ['APIBaseURI', 'EvidenceBucketName', 'StateMachineArn', 'TopicArn']);
    assert.match(flatten(json.Outputs.APIBaseURI.Value), /^https:\/\/<Api\w+>\.execute-api\.<AWS::Region>\.<AWS::URLSuffix>\/<ApiDeploymentStagev1\w+>\/$/);
    assert.deepEqual(json.Outputs.StateMachineArn.Value, { Ref: stateMachineId });
    assert.deepEqual(json.Outputs.EvidenceBucketName.Value, { Ref: evidenceBucketId });
  });
});

describe('retention of records', () => {
  test('every log group has a retention and is kept with the stack\'s records', () => {
    const groups = Object.values(resourcesOf(template, 'AWS::Logs::LogGroup'));
    assert.equal(groups.length, 10); // 8 functions, the state machine, API access logs
    for (const g of groups) {
      assert.equal(g.Properties.RetentionInDays, 365);
      assert.equal(g.DeletionPolicy, 'Retain');
    }
  });

  test('no removal policy would delete evidence: buckets and the evidence key are Retain', () => {
    const retained = Object.entries(R).filter(([, r]) => r.DeletionPolicy === 'Retain').map(([, r]) => r.Type);
    assert.equal(retained.filter((t) => t === 'AWS::S3::Bucket').length, 2);
    assert.ok(retained.includes('AWS::KMS::Key'));
    assert.ok(list(Object.values(R)).every((r: any) => r.Type !== 'Custom::S3AutoDeleteObjects'));
  });
});
