// Context switches: architecture, retention, email, API key mode, GuardDuty rule, real code, and
// the errors a bad value gives.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';

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
  // The failure-announcement rule is always there; this is the GuardDuty one.
  const [, rule] = only(
    Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::Events::Rule')).filter(([id]) => id.startsWith('GuardDutyRule'))),
  );
  const [stateMachineId] = only(resourcesOf(template, 'AWS::StepFunctions::StateMachine'));

  test('matches GuardDuty findings on instances at or above the severity', () => {
    assert.deepEqual(rule.Properties.EventPattern, {
      source: ['aws.guardduty'],
      'detail-type': ['GuardDuty Finding'],
      detail: { resource: { resourceType: ['Instance'] }, severity: [{ numeric: ['>=', 7] }] },
    });
    assert.equal(rule.Properties.State, 'ENABLED');
  });

  test('starts the state machine with {instance_id, reason, requested_by: guardduty}', () => {
    const [target] = rule.Properties.Targets;
    assert.deepEqual(target.Arn, { Ref: stateMachineId });
    assert.deepEqual(target.InputTransformer.InputPathsMap, {
      'detail-resource-instanceDetails-instanceId': '$.detail.resource.instanceDetails.instanceId',
      'detail-type': '$.detail.type',
    });
    assert.deepEqual(JSON.parse(target.InputTransformer.InputTemplate.replace(/<([\w-]+)>/g, '"$1"')), {
      instance_id: 'detail-resource-instanceDetails-instanceId',
      reason: 'detail-type',
      requested_by: 'guardduty',
    });
  });

  test('failed deliveries are retried and then kept in an encrypted dead-letter queue', () => {
    const [target] = rule.Properties.Targets;
    assert.equal(target.RetryPolicy.MaximumRetryAttempts, 8);
    const queueId = logicalIdOf(target.DeadLetterConfig.Arn);
    const queue = template.toJSON().Resources[queueId];
    assert.equal(queue.Type, 'AWS::SQS::Queue');
    assert.equal(queue.Properties.SqsManagedSseEnabled, true);
  });

  test('absent or empty means no rule', () => {
    const rules = resourcesOf(synth({ guardDutySeverity: '' }).template, 'AWS::Events::Rule');
    assert.deepEqual(Object.keys(rules).filter((id) => id.startsWith('GuardDutyRule')), []);
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
  ];
  for (const [context, message] of cases) {
    test(JSON.stringify(context), () => {
      assert.throws(() => build(context), message);
    });
  }
});
