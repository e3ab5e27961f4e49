// Context switches: architecture, retention, email, API key mode, GuardDuty rule, real code, and
// the errors a bad value gives.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import {
  DEFAULT_MAX_CONCURRENT_RESPONSES,
  EC2_MUTATING_BUCKET,
  LAMBDA_UNRESERVED_MINIMUM,
  MUTATING_CALLS_PER_RESPONSE,
  totalReserved,
} from '../lib/concurrency';
import { build, flatten, logicalIdOf, only, resourcesOf, synth } from './helpers';

const BINARIES = [
  'cordon-metadata', 'cordon-screenshot', 'cordon-snapshot', 'cordon-termprotect',
  'cordon-detach-profile', 'cordon-ssm-collect', 'cordon-quarantine', 'cordon-notify',
];

describe('lambda architecture and code', () => {
  test('architecture=x86_64 builds every function for x86_64', () => {
    const { template } = synth({ architecture: 'x86_64' });
    for (const fn of Object.values(resourcesOf(template, 'AWS::Lambda::Function'))) {
      assert.deepEqual(fn.Properties.Architectures, ['x86_64']);
    }
  });

  test('without placeholderCode each function ships target/lambda/<binary>', () => {
    const lambdaDir = mkdtempSync(join(tmpdir(), 'cordon-lambda-'));
    for (const binary of BINARIES) {
      mkdirSync(join(lambdaDir, binary));
      writeFileSync(join(lambdaDir, binary, 'bootstrap'), `#!/bin/sh\necho ${binary}\n`, { mode: 0o755 });
    }
    const { template } = synth({ placeholderCode: false, lambdaDir });
    const keys = Object.values(resourcesOf(template, 'AWS::Lambda::Function')).map((fn) => fn.Properties.Code.S3Key);
    assert.equal(new Set(keys).size, 8, 'eight distinct code assets');
  });

  test('without placeholderCode and without a build, synth says to run cargo lambda build', () => {
    assert.throws(
      () => build({ placeholderCode: false, lambdaDir: '/nonexistent/target/lambda' }),
      /cordon-metadata\/bootstrap does not exist: run `cargo lambda build --release --arm64`/,
    );
  });
});

describe('evidence retention', () => {
  test('retentionMode=COMPLIANCE retentionDays=30', () => {
    const { template } = synth({ retentionMode: 'COMPLIANCE', retentionDays: '30' });
    template.hasResourceProperties('AWS::S3::Bucket', {
      ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Days: 30, Mode: 'COMPLIANCE' } } },
    });
  });
});

describe('notification email', () => {
  test('notificationEmail subscribes the address to the topic', () => {
    const { template } = synth({ notificationEmail: 'security@example.com' });
    const [topicId] = only(resourcesOf(template, 'AWS::SNS::Topic'));
    template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'security@example.com',
      TopicArn: { Ref: topicId },
    });
  });
});

describe('apiKey=true', () => {
  const { template } = synth({ apiKey: 'true' });
  const json = template.toJSON();

  test('every method requires x-api-key and IAM authorization is off', () => {
    const methods = Object.values(resourcesOf(template, 'AWS::ApiGateway::Method'));
    assert.equal(methods.length, 2);
    for (const m of methods) {
      assert.equal(m.Properties.ApiKeyRequired, true);
      assert.equal(m.Properties.AuthorizationType, 'NONE');
    }
  });

  test('an API key in a throttled usage plan on the stage, and the ApiKeyId output', () => {
    const [keyId] = only(resourcesOf(template, 'AWS::ApiGateway::ApiKey'));
    const [planId, plan] = only(resourcesOf(template, 'AWS::ApiGateway::UsagePlan'));
    assert.deepEqual(plan.Properties.Throttle, { BurstLimit: 20, RateLimit: 10 });
    const [stageId] = only(resourcesOf(template, 'AWS::ApiGateway::Stage'));
    assert.deepEqual(plan.Properties.ApiStages[0].Stage, { Ref: stageId });
    template.hasResourceProperties('AWS::ApiGateway::UsagePlanKey', {
      KeyId: { Ref: keyId },
      KeyType: 'API_KEY',
      UsagePlanId: { Ref: planId },
    });
    assert.deepEqual(json.Outputs.ApiKeyId.Value, { Ref: keyId });
  });
});

describe('guardDutySeverity', () => {
  const { template } = synth({ guardDutySeverity: '7' });
  const R = template.toJSON().Resources as Record<string, any>;
  // The failure-announcement rule is always there; this is the GuardDuty one.
  const [, rule] = only(
    Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::Events::Rule')).filter(([id]) => id.startsWith('GuardDutyRule'))),
  );
  const [stateMachineId] = only(resourcesOf(template, 'AWS::StepFunctions::StateMachine'));
  const [mappingId, mapping] = only(resourcesOf(template, 'AWS::Lambda::EventSourceMapping'));
  const queueId = logicalIdOf(mapping.Properties.EventSourceArn);
  const queue = R[queueId];
  const dispatcher = R[logicalIdOf(mapping.Properties.FunctionName)];

  test('matches GuardDuty findings on instances at or above the severity', () => {
    assert.deepEqual(rule.Properties.EventPattern, {
      source: ['aws.guardduty'],
      'detail-type': ['GuardDuty Finding'],
      detail: { resource: { resourceType: ['Instance'] }, severity: [{ numeric: ['>=', 7] }] },
    });
    assert.equal(rule.Properties.State, 'ENABLED');
  });

  test('queues {finding_id, instance_id, reason, requested_by: guardduty} in one message group of the findings queue', () => {
    const [target] = rule.Properties.Targets;
    assert.equal(logicalIdOf(target.Arn), queueId, 'the rule targets the queue the dispatcher reads, not the state machine');
    assert.notEqual(logicalIdOf(target.Arn), stateMachineId);
    assert.equal(target.RoleArn, undefined, 'an SQS target is authorized by the queue policy');
    assert.deepEqual(target.SqsParameters, { MessageGroupId: 'guardduty' });
    assert.deepEqual(target.InputTransformer.InputPathsMap, {
      'detail-id': '$.detail.id',
      'detail-resource-instanceDetails-instanceId': '$.detail.resource.instanceDetails.instanceId',
      'detail-type': '$.detail.type',
    });
    assert.deepEqual(JSON.parse(target.InputTransformer.InputTemplate.replace(/<([\w-]+)>/g, '"$1"')), {
      finding_id: 'detail-id',
      instance_id: 'detail-resource-instanceDetails-instanceId',
      reason: 'detail-type',
      requested_by: 'guardduty',
    });
  });

  test('the findings queue: FIFO with content-based deduplication, encrypted, 14 days, a FIFO dead-letter queue after 1,000 receives', () => {
    const p = queue.Properties;
    assert.equal(p.FifoQueue, true);
    assert.equal(p.ContentBasedDeduplication, true, 'EventBridge requires it of a FIFO target');
    assert.equal(p.SqsManagedSseEnabled, true);
    assert.equal(p.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(p.RedrivePolicy.maxReceiveCount, 1000);
    const dlq = R[logicalIdOf(p.RedrivePolicy.deadLetterTargetArn)];
    assert.equal(dlq.Properties.FifoQueue, true);
    assert.equal(dlq.Properties.SqsManagedSseEnabled, true);
    assert.ok(p.VisibilityTimeout >= 6 * dispatcher.Properties.Timeout, 'six times the function timeout');
  });

  test('failed deliveries are retried and then kept in an encrypted dead-letter queue', () => {
    const [target] = rule.Properties.Targets;
    assert.equal(target.RetryPolicy.MaximumRetryAttempts, 8);
    const dlqId = logicalIdOf(target.DeadLetterConfig.Arn);
    const dlq = R[dlqId];
    assert.equal(dlq.Type, 'AWS::SQS::Queue');
    assert.equal(dlq.Properties.SqsManagedSseEnabled, true);
    assert.equal(dlq.Properties.FifoQueue, undefined, 'an EventBridge dead-letter queue is a standard queue');
  });

  test('the dispatcher reads the queue one batch of up to 10 at a time and reports partial failures', () => {
    assert.ok(mappingId);
    assert.equal(mapping.Properties.BatchSize, 10);
    assert.deepEqual(mapping.Properties.FunctionResponseTypes, ['ReportBatchItemFailures']);
    assert.deepEqual(mapping.Properties.ScalingConfig, { MaximumConcurrency: 2 });
    assert.ok(dispatcher.Properties.ReservedConcurrentExecutions >= 2, 'not below the mapping\'s maximum concurrency');
    const env = dispatcher.Properties.Environment.Variables;
    assert.deepEqual(env.STATE_MACHINE_ARN, { Ref: stateMachineId });
    assert.deepEqual(env.QUEUE_URL, { Ref: queueId });
    assert.equal(env.MAX_RUNNING_RESPONSES, '6');
    assert.equal(env.RETRY_DELAY_SECONDS, '20');
    assert.equal(dispatcher.Properties.Runtime, 'provided.al2023');
    assert.equal(dispatcher.Properties.LoggingConfig.LogFormat, 'JSON');
  });

  test('an alarm on both dead-letter queues publishes to the topic', () => {
    const [topicId] = only(resourcesOf(template, 'AWS::SNS::Topic'));
    const [, alarm] = only(
      Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::CloudWatch::Alarm')).filter(([id]) => id.startsWith('GuardDuty'))),
    );
    assert.deepEqual(alarm.Properties.AlarmActions, [{ Ref: topicId }]);
    const queues = alarm.Properties.Metrics.filter((m: any) => m.MetricStat).map((m: any) => {
      assert.equal(m.MetricStat.Metric.MetricName, 'ApproximateNumberOfMessagesVisible');
      return logicalIdOf(m.MetricStat.Metric.Dimensions[0].Value);
    });
    const [target] = rule.Properties.Targets;
    assert.deepEqual(
      queues.sort(),
      [logicalIdOf(target.DeadLetterConfig.Arn), logicalIdOf(queue.Properties.RedrivePolicy.deadLetterTargetArn)].sort(),
    );
    assert.equal(alarm.Properties.Threshold, 1);
  });

  test('absent or empty means no rule, no queue, no dispatcher', () => {
    const none = synth({ guardDutySeverity: '' }).template;
    assert.deepEqual(Object.keys(resourcesOf(none, 'AWS::Events::Rule')).filter((id) => id.startsWith('GuardDutyRule')), []);
    assert.deepEqual(Object.keys(resourcesOf(none, 'AWS::Lambda::EventSourceMapping')), []);
    assert.equal(Object.keys(resourcesOf(none, 'AWS::Lambda::Function')).length, 8);
  });
});

describe('maxConcurrentResponses and reservedConcurrency', () => {
  const reserved = (template: ReturnType<typeof synth>['template']) =>
    Object.fromEntries(
      Object.entries(resourcesOf(template, 'AWS::Lambda::Function')).map(([id, fn]) => [id, fn.Properties.ReservedConcurrentExecutions]),
    );

  test('default: 6 (EC2 mutating bucket 50 / 8 CreateNetworkAclEntry per response) for every step function and the GuardDuty bound', () => {
    assert.equal(DEFAULT_MAX_CONCURRENT_RESPONSES, Math.floor(EC2_MUTATING_BUCKET.capacity / MUTATING_CALLS_PER_RESPONSE));
    assert.equal(DEFAULT_MAX_CONCURRENT_RESPONSES, 6);
    const { template } = synth({ guardDutySeverity: '5' });
    const values = Object.entries(reserved(template));
    assert.equal(values.length, 9);
    for (const [id, value] of values) assert.equal(value, id.startsWith('Dispatch') ? 2 : 6, id);
    const [, dispatcher] = only(
      Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::Lambda::Function')).filter(([id]) => id.startsWith('Dispatch'))),
    );
    assert.equal(dispatcher.Properties.Environment.Variables.MAX_RUNNING_RESPONSES, '6');
  });

  test('the default leaves the 100 unreserved that Lambda requires, of the default 1,000', () => {
    assert.ok(totalReserved(DEFAULT_MAX_CONCURRENT_RESPONSES, 8, true) + LAMBDA_UNRESERVED_MINIMUM <= 1000);
  });

  test('maxConcurrentResponses=3 sets both', () => {
    const { template } = synth({ guardDutySeverity: '5', maxConcurrentResponses: '3' });
    for (const [id, value] of Object.entries(reserved(template))) assert.equal(value, id.startsWith('Dispatch') ? 2 : 3, id);
    const [, mapping] = only(resourcesOf(template, 'AWS::Lambda::EventSourceMapping'));
    const dispatcher = template.toJSON().Resources[logicalIdOf(mapping.Properties.FunctionName)];
    assert.equal(dispatcher.Properties.Environment.Variables.MAX_RUNNING_RESPONSES, '3');
  });

  test('reservedConcurrency=false reserves nothing and keeps the GuardDuty bound', () => {
    const { template } = synth({ guardDutySeverity: '5', reservedConcurrency: 'false' });
    for (const [id, value] of Object.entries(reserved(template))) assert.equal(value, undefined, id);
    const [, mapping] = only(resourcesOf(template, 'AWS::Lambda::EventSourceMapping'));
    const dispatcher = template.toJSON().Resources[logicalIdOf(mapping.Properties.FunctionName)];
    assert.equal(dispatcher.Properties.Environment.Variables.MAX_RUNNING_RESPONSES, '6');
  });
});

describe('stack name and stage', () => {
  test('stackName and apiStageName from context', () => {
    const { stack, template } = synth({ stackName: 'CordonTest', apiStageName: 'prod' });
    assert.equal(stack.stackName, 'CordonTest');
    const [, stage] = only(resourcesOf(template, 'AWS::ApiGateway::Stage'));
    assert.equal(stage.Properties.StageName, 'prod');
    assert.match(flatten(template.toJSON().Outputs.APIBaseURI.Value), /\/<ApiDeploymentStageprod\w+>\/$/);
  });
});

describe('API Gateway CloudWatch role', () => {
  test('apiGatewayCloudWatchRole=false leaves the account setting alone (logging stays configured)', () => {
    const { template } = synth({ apiGatewayCloudWatchRole: 'false' });
    template.resourceCountIs('AWS::ApiGateway::Account', 0);
    const [, stage] = only(resourcesOf(template, 'AWS::ApiGateway::Stage'));
    assert.ok(stage.Properties.AccessLogSetting.DestinationArn);
  });
});

describe('bad context fails the synth with a clear message', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ architecture: 'sparc' }, /architecture must be one of arm64, x86_64/],
    [{ retentionMode: 'FOREVER' }, /retentionMode must be GOVERNANCE or COMPLIANCE/],
    [{ retentionDays: '0' }, /retentionDays must be a whole number/],
    [{ retentionDays: '1.5' }, /retentionDays must be a whole number/],
    [{ guardDutySeverity: 'high' }, /guardDutySeverity must be a number from 1 to 10/],
    [{ guardDutySeverity: '11' }, /guardDutySeverity must be a number from 1 to 10/],
    [{ notificationEmail: 'security' }, /notificationEmail is not an email address/],
    [{ apiKey: 'yes' }, /apiKey must be true or false/],
    [{ logRetentionDays: '42' }, /logRetentionDays must be a CloudWatch Logs retention/],
    [{ apiStageName: 'v 1' }, /apiStageName may hold only/],
    [{ maxConcurrentResponses: '0' }, /maxConcurrentResponses must be a whole number from 1 to 1000/],
    [{ maxConcurrentResponses: '1001' }, /maxConcurrentResponses must be a whole number from 1 to 1000/],
    [{ reservedConcurrency: 'no' }, /reservedConcurrency must be true or false/],
    [{ collectionBudgetSeconds: '299' }, /collectionBudgetSeconds must be a whole number from 300 to 3600/],
    [{ collectionBudgetSeconds: '3601' }, /collectionBudgetSeconds must be a whole number from 300 to 3600/],
    [{ collectionBudgetSeconds: '600.5' }, /collectionBudgetSeconds must be a whole number from 300 to 3600/],
    [{ collectionBudgetSeconds: 'twenty minutes' }, /collectionBudgetSeconds must be a whole number from 300 to 3600/],
    [{ collectionMaxBudgetSeconds: '200' }, /collectionMaxBudgetSeconds must be a whole number from 300 to 3600/],
    [{ collectionMaxBudgetSeconds: '7200' }, /collectionMaxBudgetSeconds must be a whole number from 300 to 3600/],
    [{ collectionMaxBudgetSeconds: '900' }, /collectionBudgetSeconds \(1200\) must not exceed collectionMaxBudgetSeconds \(900\)/],
    [{ collectionBudgetSeconds: '1800', collectionMaxBudgetSeconds: '1500' }, /collectionBudgetSeconds \(1800\) must not exceed collectionMaxBudgetSeconds \(1500\)/],
  ];
  for (const [context, message] of cases) {
    test(JSON.stringify(context), () => {
      assert.throws(() => build(context), message);
    });
  }
});
