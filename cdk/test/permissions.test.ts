// Least privilege, checked against a table written here independently of lib/steps.ts: each step
// function's role grants exactly these actions, scoped as stated, and nothing in the template
// grants a wildcard action.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { AGENT_CHANNEL_ACTIONS } from '../lib/steps';

import {
  type Statement,
  REPO_ROOT,
  flatten,
  list,
  logicalIdOf,
  resourcesOf,
  roleGrants,
  synth,
} from './helpers';

const { template } = synth({ guardDutySeverity: 5 });
const json = template.toJSON();
const [stateMachine] = Object.values(resourcesOf(template, 'AWS::StepFunctions::StateMachine'));
const substitutions = stateMachine.Properties.DefinitionSubstitutions as Record<string, unknown>;

const LOGS = ['logs:CreateLogStream', 'logs:PutLogEvents'];
const S3_RW = ['s3:PutObject', 's3:GetObject', 's3:ListBucket', 'kms:GenerateDataKey', 'kms:Decrypt'];

/** The list, per step (plus the runtime's own log writes). */
const EXPECTED_ACTIONS: Record<string, string[]> = {
  MetadataFunctionArn: [
    'ec2:DescribeInstances', 'ec2:DescribeVolumes', 'ec2:DescribeSecurityGroups',
    'ec2:DescribeIamInstanceProfileAssociations', 'ec2:DescribeInstanceAttribute',
    'ec2:DescribeNetworkInterfaces',
    'autoscaling:DescribeAutoScalingInstances',
    'elasticloadbalancing:DescribeTargetGroups', 'elasticloadbalancing:DescribeTargetHealth',
    'ssm:DescribeInstanceInformation',
    ...S3_RW, ...LOGS,
  ],
  ScreenshotFunctionArn: ['ec2:GetConsoleScreenshot', 'ec2:GetConsoleOutput', ...S3_RW, ...LOGS],
  SnapshotFunctionArn: [
    'ec2:DescribeInstances', 'ec2:DescribeSnapshots', 'ec2:CreateSnapshots', 'ec2:CreateSnapshot',
    'ec2:CreateTags', 'ec2:LockSnapshot', 'ec2:DescribeLockedSnapshots', ...LOGS,
  ],
  TermprotectFunctionArn: [
    'ec2:DescribeInstances', 'ec2:DescribeInstanceAttribute', 'ec2:ModifyInstanceAttribute', 'ec2:CreateTags',
    'autoscaling:DescribeAutoScalingInstances', 'autoscaling:DetachInstances', 'ec2:StopInstances', ...LOGS,
  ],
  DetachProfileFunctionArn: [
    'ec2:DescribeIamInstanceProfileAssociations', 'ec2:DisassociateIamInstanceProfile',
    'ec2:AssociateIamInstanceProfile', 'iam:GetInstanceProfile', 'iam:ListRolePolicies', 'iam:GetRolePolicy',
    'iam:PutRolePolicy', 'iam:PassRole', 'ec2:DescribeInstances', 'ec2:ModifyInstanceMetadataOptions',
    // expired cordon-forensic-<instance> revocations on the shared forensic role (its policy quota)
    'iam:DeleteRolePolicy', ...LOGS,
  ],
  SsmCollectFunctionArn: [
    'ssm:DescribeInstanceInformation', 'ssm:SendCommand', 'ssm:ListCommands', 'ssm:GetCommandInvocation',
    // the budget's end: cancel the command before the channel is removed
    'ssm:CancelCommand',
    // read back and hash what the host uploaded; presign the host's uploads (signer's permissions)
    's3:ListBucket', 's3:GetObject', 'kms:Decrypt', 's3:PutObject', 'kms:GenerateDataKey', ...LOGS,
  ],
  QuarantineFunctionArn: [
    'ec2:DescribeInstances', 'ec2:DescribeSecurityGroups', 'ec2:DescribeNetworkInterfaces',
    'ec2:CreateSecurityGroup', 'ec2:CreateTags', 'ec2:AuthorizeSecurityGroupIngress',
    'ec2:AuthorizeSecurityGroupEgress', 'ec2:RevokeSecurityGroupIngress', 'ec2:RevokeSecurityGroupEgress',
    'ec2:ModifyNetworkInterfaceAttribute',
    'elasticloadbalancing:DescribeTargetGroups', 'elasticloadbalancing:DescribeTargetHealth',
    'elasticloadbalancing:DeregisterTargets',
    // connection-tracking support of the instance type; network ACL deny rules, and the collection
    // path's allow rules, which it removes again
    'ec2:DescribeInstanceTypes', 'ec2:CreateNetworkAclEntry', 'ec2:DeleteNetworkAclEntry',
    // the S3 gateway endpoint's prefix list (collection path)
    'ec2:DescribePrefixLists',
    // the containment table's network facts
    'ec2:DescribeRouteTables', 'ec2:DescribeNetworkAcls', 'ec2:DescribeNatGateways', 'ec2:DescribeVpcEndpoints',
    'ec2:DescribeTransitGatewayVpcAttachments', 'ec2:DescribeAddresses', 'elasticloadbalancing:DescribeLoadBalancers',
    ...LOGS,
  ],
  NotifyFunctionArn: ['sns:Publish', 'states:DescribeExecution', 'states:GetExecutionHistory', ...S3_RW, ...LOGS],
};

/** Actions for which the Service Authorization Reference lists no resource type: only these may be on "*". */
const NO_RESOURCE_TYPE = new Set([
  'ec2:DescribeInstances', 'ec2:DescribeVolumes', 'ec2:DescribeSecurityGroups',
  'ec2:DescribeIamInstanceProfileAssociations', 'ec2:DescribeSnapshots', 'ec2:DescribeLockedSnapshots', 'ec2:DescribeNetworkInterfaces',
  'autoscaling:DescribeAutoScalingInstances', 'elasticloadbalancing:DescribeTargetGroups',
  'elasticloadbalancing:DescribeTargetHealth', 'ssm:DescribeInstanceInformation', 'ssm:ListCommands',
  'ssm:GetCommandInvocation',
  'ec2:DescribeRouteTables', 'ec2:DescribeNetworkAcls', 'ec2:DescribeNatGateways', 'ec2:DescribeVpcEndpoints',
  'ec2:DescribeTransitGatewayVpcAttachments', 'ec2:DescribeAddresses', 'elasticloadbalancing:DescribeLoadBalancers',
  'ec2:DescribeInstanceTypes', 'ec2:DescribePrefixLists', 'ssm:CancelCommand',
]);

const roleOf = (placeholder: string): string => {
  const fnId = logicalIdOf(substitutions[placeholder]);
  return logicalIdOf(json.Resources[fnId].Properties.Role);
};
const allowed = (statements: Statement[]) => statements.filter((s) => s.Effect === 'Allow');
const actionsOf = (statements: Statement[]) => [...new Set(allowed(statements).flatMap((s) => list(s.Action)))].sort();
const statementsWith = (statements: Statement[], action: string) =>
  allowed(statements).filter((s) => list(s.Action).includes(action));
const resourcesOfStatement = (s: Statement) => list(s.Resource).map(flatten);

const INSTANCES = 'arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*';

/** What the SSM agent calls to register and take Run Command (the list, written out here). */
const FORENSIC_ACTIONS = [
  'ssm:UpdateInstanceInformation',
  'ssmmessages:CreateControlChannel', 'ssmmessages:CreateDataChannel', 'ssmmessages:OpenControlChannel', 'ssmmessages:OpenDataChannel',
  'ec2messages:AcknowledgeMessage', 'ec2messages:DeleteMessage', 'ec2messages:FailMessage', 'ec2messages:GetEndpoint',
  'ec2messages:GetMessages', 'ec2messages:SendReply',
];
const [, forensicProfile] = Object.entries(resourcesOf(template, 'AWS::IAM::InstanceProfile'))[0];
const forensicRoleId: string = forensicProfile.Properties.Roles[0].Ref;
const SNAPSHOTS = 'arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*';
const GROUPS = 'arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:security-group/*';

describe('step function roles', () => {
  test('each of the eight functions has a role of its own', () => {
    const roles = Object.keys(EXPECTED_ACTIONS).map(roleOf);
    assert.equal(new Set(roles).size, 8);
  });

  for (const [placeholder, expected] of Object.entries(EXPECTED_ACTIONS)) {
    test(`${placeholder.replace('FunctionArn', '')} role grants exactly its step's actions`, () => {
      const { statements, managed } = roleGrants(template, roleOf(placeholder));
      assert.deepEqual(managed, [], 'no managed policies on a step role');
      assert.deepEqual(actionsOf(statements), [...new Set(expected)].sort());
    });
  }

  test('"*" resources carry only actions that have no resource type, held to the region', () => {
    for (const placeholder of Object.keys(EXPECTED_ACTIONS)) {
      for (const s of allowed(roleGrants(template, roleOf(placeholder)).statements)) {
        if (!list(s.Resource).includes('*')) continue;
        for (const action of list(s.Action)) {
          assert.ok(NO_RESOURCE_TYPE.has(action), `${placeholder}: ${action} is granted on "*"`);
        }
        assert.deepEqual(s.Condition, { StringEquals: { 'aws:RequestedRegion': { Ref: 'AWS::Region' } } });
      }
    }
  });

  test('log writes go only to the function\'s own log group', () => {
    for (const placeholder of Object.keys(EXPECTED_ACTIONS)) {
      const fn = json.Resources[logicalIdOf(substitutions[placeholder])];
      const logGroup = fn.Properties.LoggingConfig.LogGroup.Ref;
      const [s] = statementsWith(roleGrants(template, roleOf(placeholder)).statements, 'logs:PutLogEvents');
      assert.deepEqual(s.Resource, { 'Fn::GetAtt': [logGroup, 'Arn'] });
    }
  });

  test('evidence writes are create-only (If-None-Match) and KMS use is the bucket key via S3', () => {
    for (const placeholder of ['MetadataFunctionArn', 'ScreenshotFunctionArn', 'NotifyFunctionArn']) {
      const { statements } = roleGrants(template, roleOf(placeholder));
      const [put] = statementsWith(statements, 's3:PutObject');
      assert.match(resourcesOfStatement(put)[0], /^<EvidenceBucket\w+\.Arn>\/\*$/);
      assert.deepEqual(put.Condition, { StringEquals: { 's3:if-none-match': '*' } });
      const [list_] = statementsWith(statements, 's3:ListBucket');
      assert.match(resourcesOfStatement(list_)[0], /^<EvidenceBucket\w+\.Arn>$/);
      const key = statementsWith(statements, 'kms:GenerateDataKey').find((s) => /^<EvidenceKey\w+\.Arn>$/.test(resourcesOfStatement(s)[0]));
      assert.ok(key, `${placeholder}: no GenerateDataKey on the evidence key`);
      assert.deepEqual(list(key.Action).sort(), ['kms:Decrypt', 'kms:GenerateDataKey']);
      assert.equal(flatten(key.Condition?.StringEquals['kms:ViaService']), 's3.<AWS::Region>.amazonaws.com');
      assert.match(flatten(key.Condition?.StringEquals['kms:EncryptionContext:aws:s3:arn']), /^<EvidenceBucket\w+\.Arn>$/);
    }
  });

  test('snapshot: tags only on snapshots, at creation or with cordon: keys', () => {
    const { statements } = roleGrants(template, roleOf('SnapshotFunctionArn'));
    const tags = statementsWith(statements, 'ec2:CreateTags');
    assert.equal(tags.length, 2);
    for (const s of tags) assert.deepEqual(resourcesOfStatement(s), [SNAPSHOTS]);
    assert.deepEqual(tags.map((s) => s.Condition).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), [
      { 'ForAllValues:StringLike': { 'aws:TagKeys': ['cordon:*'] }, Null: { 'aws:TagKeys': 'false' } },
      { StringEquals: { 'ec2:CreateAction': ['CreateSnapshots', 'CreateSnapshot'] } },
    ]);
    const [create] = statementsWith(statements, 'ec2:CreateSnapshots');
    assert.ok(resourcesOfStatement(create).includes(SNAPSHOTS));
  });

  test('snapshot: locks snapshots only, never unlocks; the lock follows the evidence retention', () => {
    const { statements } = roleGrants(template, roleOf('SnapshotFunctionArn'));
    const locks = statementsWith(statements, 'ec2:LockSnapshot');
    assert.equal(locks.length, 1);
    assert.deepEqual(list(locks[0].Action), ['ec2:LockSnapshot']);
    assert.deepEqual(resourcesOfStatement(locks[0]), [SNAPSHOTS]);
    assert.equal(statementsWith(statements, 'ec2:UnlockSnapshot').length, 0);
    const [describe] = statementsWith(statements, 'ec2:DescribeLockedSnapshots');
    assert.deepEqual(list(describe.Action), ['ec2:DescribeLockedSnapshots']);
    assert.ok(describe.Condition?.StringEquals?.['aws:RequestedRegion']);
    const fn = Object.values(json.Resources as Record<string, any>).find(
      (r) => r.Type === 'AWS::Lambda::Function' && /snapshot every EBS volume/.test(r.Properties?.Description ?? ''),
    );
    assert.ok(fn, 'snapshot function');
    const env = fn.Properties.Environment.Variables;
    assert.equal(env.SNAPSHOT_LOCK_MODE, 'governance');
    assert.equal(env.SNAPSHOT_LOCK_DAYS, '365');
  });

  test('termprotect: tags only cordon: keys on instances; modifies instances only', () => {
    const { statements } = roleGrants(template, roleOf('TermprotectFunctionArn'));
    const [tag] = statementsWith(statements, 'ec2:CreateTags');
    assert.deepEqual(resourcesOfStatement(tag), [INSTANCES]);
    assert.deepEqual(tag.Condition?.['ForAllValues:StringLike'], { 'aws:TagKeys': ['cordon:*'] });
    const [modify] = statementsWith(statements, 'ec2:ModifyInstanceAttribute');
    assert.deepEqual(resourcesOfStatement(modify), [INSTANCES]);
    const [detach] = statementsWith(statements, 'autoscaling:DetachInstances');
    assert.match(resourcesOfStatement(detach)[0], /:autoscaling:<AWS::Region>:<AWS::AccountId>:autoScalingGroup:\*:autoScalingGroupName\/\*$/);
  });

  test('termprotect: stops only instances tagged cordon:incident-id, never terminates', () => {
    const { statements } = roleGrants(template, roleOf('TermprotectFunctionArn'));
    const [stop] = statementsWith(statements, 'ec2:StopInstances');
    assert.deepEqual(list(stop.Action), ['ec2:StopInstances']);
    assert.deepEqual(resourcesOfStatement(stop), [INSTANCES]);
    assert.deepEqual(stop.Condition, { Null: { 'aws:ResourceTag/cordon:incident-id': 'false' } });
    assert.equal(statementsWith(statements, 'ec2:TerminateInstances').length, 0);
  });

  test('detach-profile: disables instance metadata only on instances tagged cordon:incident-id', () => {
    const { statements } = roleGrants(template, roleOf('DetachProfileFunctionArn'));
    const [imds] = statementsWith(statements, 'ec2:ModifyInstanceMetadataOptions');
    assert.deepEqual(list(imds.Action), ['ec2:ModifyInstanceMetadataOptions']);
    assert.deepEqual(resourcesOfStatement(imds), [INSTANCES]);
    assert.deepEqual(imds.Condition, { Null: { 'aws:ResourceTag/cordon:incident-id': 'false' } });
    const [listPolicies] = statementsWith(statements, 'iam:ListRolePolicies');
    assert.deepEqual(resourcesOfStatement(listPolicies), ['arn:<AWS::Partition>:iam::<AWS::AccountId>:role/*']);
  });

  test('detach-profile: passes and attaches only the forensic role/profile, never edits Cordon roles but may revoke the forensic role', () => {
    const { statements } = roleGrants(template, roleOf('DetachProfileFunctionArn'));
    const [pass] = statementsWith(statements, 'iam:PassRole');
    assert.match(resourcesOfStatement(pass).join(), /^<ForensicRole\w+\.Arn>$/);
    assert.deepEqual(pass.Condition, { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } });
    const [associate] = statementsWith(statements, 'ec2:AssociateIamInstanceProfile');
    assert.deepEqual(resourcesOfStatement(associate), [INSTANCES]);
    assert.match(flatten(associate.Condition?.ArnEquals['ec2:NewInstanceProfile']), /^<ForensicInstanceProfile\w*\.Arn>$/);
    const [put] = statementsWith(statements, 'iam:PutRolePolicy');
    assert.deepEqual(resourcesOfStatement(put), ['arn:<AWS::Partition>:iam::<AWS::AccountId>:role/*']);
    const deny = statements.filter((s) => s.Effect === 'Deny');
    assert.equal(deny.length, 1);
    assert.deepEqual(list(deny[0].Action), ['iam:PutRolePolicy']);
    assert.deepEqual(resourcesOfStatement(deny[0]), ['arn:<AWS::Partition>:iam::<AWS::AccountId>:role/cordon/*']);
    // The forensic role's sessions are revoked by the same cordon-revoke policy after a
    // collection: its ARN (role/cordon-forensic/<name>) is under the Allow on role/* and not
    // under the Deny on role/cordon/*.
    const forensicPath = json.Resources[forensicRoleId].Properties.Path;
    assert.equal(forensicPath, '/cordon-forensic/');
    const forensicArn = `arn:aws:iam::123456789012:role${forensicPath}Cordon-ForensicRole`;
    const matches = (pattern: string, value: string) =>
      new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(value);
    const concrete = (r: string) => r.replace('<AWS::Partition>', 'aws').replace('<AWS::AccountId>', '123456789012');
    assert.ok(matches(concrete(resourcesOfStatement(put)[0]), forensicArn));
    assert.ok(!matches(concrete(resourcesOfStatement(deny[0])[0]), forensicArn));
    for (const action of ['iam:ListRolePolicies', 'iam:GetRolePolicy']) {
      assert.ok(statementsWith(statements, action).some((st) => resourcesOfStatement(st).some((r) => matches(concrete(r), forensicArn))), action);
    }
    // Deleting an inline policy: only on the forensic role (a compromised role's revocation stays).
    const deletes = statementsWith(statements, 'iam:DeleteRolePolicy');
    assert.equal(deletes.length, 1);
    assert.deepEqual(list(deletes[0].Action), ['iam:DeleteRolePolicy']);
    assert.deepEqual(resourcesOfStatement(deletes[0]), [`<${forensicRoleId}.Arn>`]);
  });

  test('every role of the stack lives under /cordon/ (so the Deny above covers them), except the forensic role', () => {
    for (const [id, role] of Object.entries(resourcesOf(template, 'AWS::IAM::Role'))) {
      // The account-wide API Gateway CloudWatch role is the construct's; the functions cannot assume it.
      if (id.startsWith('ApiCloudWatchRole')) continue;
      assert.equal(role.Properties.Path, id === forensicRoleId ? '/cordon-forensic/' : '/cordon/', id);
    }
  });

  test('ssm-collect: SendCommand only with the two AWS shell documents, on instances, no output bucket', () => {
    const { statements } = roleGrants(template, roleOf('SsmCollectFunctionArn'));
    const [send] = statementsWith(statements, 'ssm:SendCommand');
    const resources = resourcesOfStatement(send);
    assert.deepEqual(resources.filter((r) => r.includes(':document/')).sort(), [
      'arn:<AWS::Partition>:ssm:<AWS::Region>::document/AWS-RunPowerShellScript',
      'arn:<AWS::Partition>:ssm:<AWS::Region>::document/AWS-RunShellScript',
    ]);
    assert.ok(resources.includes(INSTANCES));
    // The command is sent without OutputS3BucketName: the bucket is not a SendCommand resource.
    assert.equal(resources.length, 3);
    assert.equal(send.Condition, undefined);
  });

  test('ssm-collect: cancels commands in its region; presigns PUTs only for collection output keys, with the bucket key via S3', () => {
    const { statements } = roleGrants(template, roleOf('SsmCollectFunctionArn'));
    const [cancel] = statementsWith(statements, 'ssm:CancelCommand');
    assert.deepEqual(list(cancel.Action), ['ssm:CancelCommand']);
    assert.deepEqual(list(cancel.Resource), ['*']);
    const puts = statementsWith(statements, 's3:PutObject');
    assert.equal(puts.length, 1);
    assert.deepEqual(list(puts[0].Action), ['s3:PutObject']);
    // Collection output only: never manifest.json, pre-incident-state.json or notifications/*.
    assert.deepEqual(resourcesOfStatement(puts[0]).map((r) => r.replace(/^<EvidenceBucket\w+\.Arn>/, '<bucket>')), ['<bucket>/*/i-*/ssm/*']);
    const key = statementsWith(statements, 'kms:GenerateDataKey');
    assert.equal(key.length, 1);
    assert.match(resourcesOfStatement(key[0]).join(), /^<EvidenceKey\w+\.Arn>$/);
    assert.deepEqual(list(key[0].Action).sort(), ['kms:Decrypt', 'kms:GenerateDataKey']);
    assert.equal(flatten(key[0].Condition?.StringEquals['kms:ViaService']), 's3.<AWS::Region>.amazonaws.com');
    assert.match(flatten(key[0].Condition?.StringEquals['kms:EncryptionContext:aws:s3:arn']), /^<EvidenceBucket\w+\.Arn>$/);
  });

  test('quarantine: creates only tagged groups and edits/uses only cordon:role groups', () => {
    const { statements } = roleGrants(template, roleOf('QuarantineFunctionArn'));
    const create = statementsWith(statements, 'ec2:CreateSecurityGroup');
    const onGroups = create.find((s) => resourcesOfStatement(s).includes(GROUPS));
    assert.deepEqual(onGroups?.Condition, { Null: { 'aws:RequestTag/cordon:role': 'false' } });
    for (const action of ['ec2:AuthorizeSecurityGroupIngress', 'ec2:AuthorizeSecurityGroupEgress', 'ec2:RevokeSecurityGroupIngress', 'ec2:RevokeSecurityGroupEgress']) {
      // Granted (quarantine empties a tampered isolation group), and only on cordon:role groups.
      assert.ok(statementsWith(statements, action).length > 0, `${action} is not granted`);
      for (const s of statementsWith(statements, action)) {
        assert.deepEqual(resourcesOfStatement(s), [GROUPS]);
        assert.deepEqual(s.Condition, { Null: { 'aws:ResourceTag/cordon:role': 'false' } });
      }
    }
    const tags = statementsWith(statements, 'ec2:CreateTags');
    const groupTag = tags.find((s) => resourcesOfStatement(s).includes(GROUPS));
    assert.deepEqual(groupTag?.Condition, { StringEquals: { 'ec2:CreateAction': 'CreateSecurityGroup' } });
    const instanceTag = tags.find((s) => resourcesOfStatement(s).includes(INSTANCES));
    assert.deepEqual(instanceTag?.Condition?.['ForAllValues:StringLike'], { 'aws:TagKeys': ['cordon:*'] });
    const moveToGroups = statementsWith(statements, 'ec2:ModifyNetworkInterfaceAttribute')
      .filter((s) => resourcesOfStatement(s).includes(GROUPS));
    assert.equal(moveToGroups.length, 1);
    assert.deepEqual(moveToGroups[0].Condition, { Null: { 'aws:ResourceTag/cordon:role': 'false' } });
  });

  test('quarantine: adds and removes network ACL entries, on network ACLs only, and never replaces one', () => {
    const { statements } = roleGrants(template, roleOf('QuarantineFunctionArn'));
    const entries = statementsWith(statements, 'ec2:CreateNetworkAclEntry');
    assert.equal(entries.length, 1);
    assert.deepEqual(resourcesOfStatement(entries[0]), [
      'arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-acl/*',
    ]);
    // Delete: the collection path's allow rules, removed when the collection ends.
    assert.deepEqual(list(entries[0].Action).sort(), ['ec2:CreateNetworkAclEntry', 'ec2:DeleteNetworkAclEntry']);
    assert.deepEqual(statementsWith(statements, 'ec2:DeleteNetworkAclEntry'), entries);
    for (const action of ['ec2:ReplaceNetworkAclEntry', 'ec2:ReplaceNetworkAclAssociation', 'ec2:DeleteNetworkAcl']) {
      assert.equal(statementsWith(statements, action).length, 0, action);
    }
  });

  test('quarantine: finds the endpoints and the S3 prefix list of the collection path, read-only and in its region', () => {
    const { statements } = roleGrants(template, roleOf('QuarantineFunctionArn'));
    for (const action of ['ec2:DescribeVpcEndpoints', 'ec2:DescribePrefixLists']) {
      const [s] = statementsWith(statements, action);
      assert.deepEqual(list(s.Resource), ['*'], action);
      assert.ok(s.Condition?.StringEquals?.['aws:RequestedRegion'], action);
    }
    // The ec2 actions that change something: none of them on "*".
    for (const s of allowed(statements)) {
      if (!list(s.Resource).includes('*')) continue;
      for (const action of list(s.Action)) assert.match(action, /:Describe/, action);
    }
  });

  test('notify: publishes only to the Cordon topic, with its key via SNS', () => {
    const { statements } = roleGrants(template, roleOf('NotifyFunctionArn'));
    const [publish] = statementsWith(statements, 'sns:Publish');
    assert.match(resourcesOfStatement(publish).join(), /^<Topic\w+>$/);
    const keys = statementsWith(statements, 'kms:Decrypt').map((s) => resourcesOfStatement(s).join());
    assert.ok(keys.some((k) => /^<TopicKey\w+\.Arn>$/.test(k)));
  });
});

describe('other roles', () => {
  test('the state machine role invokes exactly the eight functions, unqualified', () => {
    const smRole = logicalIdOf(stateMachine.Properties.RoleArn);
    const { statements, managed } = roleGrants(template, smRole);
    assert.deepEqual(managed, []);
    const invoke = statementsWith(statements, 'lambda:InvokeFunction');
    assert.equal(invoke.length, 1);
    const expected = Object.keys(EXPECTED_ACTIONS).map((p) => substitutions[p]);
    assert.deepEqual(
      list(invoke[0].Resource).map((r) => JSON.stringify(r)).sort(),
      expected.map((r) => JSON.stringify(r)).sort(),
    );
    // Besides invoking: only the logging and tracing plumbing that the construct adds.
    const rest = actionsOf(statements).filter((a) => a !== 'lambda:InvokeFunction');
    for (const action of rest) assert.match(action, /^(logs|xray):(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups|PutTraceSegments|PutTelemetryRecords|GetSamplingRules|GetSamplingTargets)$/);
  });

  test('the forensic role: exactly the SSM agent\'s Run Command actions, inline, no managed policy', () => {
    const { statements, managed } = roleGrants(template, forensicRoleId);
    assert.deepEqual(managed, [], 'no managed policy (AmazonSSMManagedInstanceCore grants ssm:GetParameter* on "*")');
    assert.deepEqual(actionsOf(statements), [...FORENSIC_ACTIONS].sort());
    assert.deepEqual([...AGENT_CHANNEL_ACTIONS].sort(), [...FORENSIC_ACTIONS].sort(), 'lib/steps.ts AGENT_CHANNEL_ACTIONS');
    assert.equal(statements.filter((s) => s.Effect !== 'Allow').length, 0);
    const [register] = statementsWith(statements, 'ssm:UpdateInstanceInformation');
    assert.deepEqual(list(register.Action), ['ssm:UpdateInstanceInformation']);
    assert.deepEqual(resourcesOfStatement(register), [INSTANCES]);
    // ssmmessages and ec2messages have no resource type: "*" is the only valid resource.
    for (const s of allowed(statements)) {
      if (!list(s.Resource).includes('*')) continue;
      for (const action of list(s.Action)) assert.match(action, /^(ssmmessages|ec2messages):/, action);
    }
    assert.deepEqual(json.Resources[forensicRoleId].Properties.AssumeRolePolicyDocument.Statement[0].Principal, { Service: 'ec2.amazonaws.com' });
  });

  test('the forensic role can read nothing: no S3, no KMS, no SSM parameters, no wildcard action', () => {
    const { statements } = roleGrants(template, forensicRoleId);
    for (const action of statements.flatMap((s) => list(s.Action))) {
      assert.doesNotMatch(action, /^(s3|kms):/, action);
      assert.doesNotMatch(action, /^ssm:GetParameter/i, action);
      assert.ok(!action.includes('*'), action);
    }
    // No other policy of the template is attached to it.
    for (const policy of Object.values(resourcesOf(template, 'AWS::IAM::Policy'))) {
      assert.ok(!list(policy.Properties.Roles).some((r: any) => r.Ref === forensicRoleId));
    }
  });

  test('the forensic role\'s actions are exactly what the revocation leaves open to an instance under collection', () => {
    // steps/detach-profile: the cordon-revoke statement CordonRevokeExceptCollectionChannel denies
    // NotAction these actions; if the two lists differ, the agent either cannot take the command
    // with the compromised role's credentials, or can do more with them than the forensic role.
    const rustFiles: string[] = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else if (name.endsWith('.rs')) rustFiles.push(path);
      }
    };
    walk(join(REPO_ROOT, 'steps'));
    const channel = /"((?:ssm|ssmmessages|ec2messages):[A-Z][A-Za-z]+)"/g;
    const defining = rustFiles.filter((f) => /ssmmessages:CreateControlChannel/.test(readFileSync(f, 'utf8')) && !/[/\\]tests?(\.rs|[/\\])/.test(f));
    assert.ok(defining.length > 0, 'no Rust source under steps/ lists the agent\'s channel actions');
    for (const file of defining) {
      const listed = new Set(
      [...readFileSync(file, 'utf8').matchAll(channel)]
        .map((m) => m[1])
        // condition keys (ssm:SourceInstanceARN) and the calls ssm-collect itself makes are not channel actions
        .filter((a) => !/ARN$/.test(a) && !/^ssm:(SendCommand|CancelCommand|GetCommandInvocation|ListCommands|DescribeInstanceInformation)$/.test(a)),
    );
      assert.deepEqual([...listed].sort(), [...FORENSIC_ACTIONS].sort(), file);
    }
  });

  test('the API role starts this state machine and describes only its executions', () => {
    const [post] = Object.values(resourcesOf(template, 'AWS::ApiGateway::Method')).filter((m) => m.Properties.HttpMethod === 'POST');
    const roleId = logicalIdOf(post.Properties.Integration.Credentials);
    const { statements } = roleGrants(template, roleId);
    assert.deepEqual(actionsOf(statements), ['states:DescribeExecution', 'states:StartExecution']);
    assert.match(flatten(statementsWith(statements, 'states:StartExecution')[0].Resource), /^<StateMachine\w+>$/);
    assert.match(
      flatten(statementsWith(statements, 'states:DescribeExecution')[0].Resource),
      /^arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<StateMachine\w+\.Name>:\*$/,
    );
  });

  test('the GuardDuty rule has no role: only this rule may send to the findings queue', () => {
    const [ruleId, rule] = Object.entries(resourcesOf(template, 'AWS::Events::Rule')).filter(([id]) => id.startsWith('GuardDutyRule'))[0];
    const [target] = rule.Properties.Targets;
    assert.equal(target.RoleArn, undefined);
    const queueId = logicalIdOf(target.Arn);
    const [policy] = Object.values(resourcesOf(template, 'AWS::SQS::QueuePolicy')).filter((p) =>
      list(p.Properties.Queues).some((q: any) => q.Ref === queueId),
    );
    const allows = (policy.Properties.PolicyDocument.Statement as Statement[]).filter((st) => st.Effect === 'Allow');
    assert.equal(allows.length, 1);
    assert.deepEqual(allows[0].Principal, { Service: 'events.amazonaws.com' });
    assert.ok(list(allows[0].Action).includes('sqs:SendMessage'));
    assert.deepEqual(allows[0].Condition, { ArnEquals: { 'aws:SourceArn': { 'Fn::GetAtt': [ruleId, 'Arn'] } } });
  });

  test('the dispatcher counts and starts executions of this state machine, and reads only the findings queue', () => {
    const [, mapping] = Object.entries(resourcesOf(template, 'AWS::Lambda::EventSourceMapping'))[0];
    const fn = json.Resources[logicalIdOf(mapping.Properties.FunctionName)];
    const { statements, managed } = roleGrants(template, logicalIdOf(fn.Properties.Role));
    assert.deepEqual(managed, []);
    assert.deepEqual(actionsOf(statements), [
      ...LOGS,
      'sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage',
      'states:ListExecutions', 'states:StartExecution',
    ].sort());
    for (const action of ['states:ListExecutions', 'states:StartExecution']) {
      const [st] = statementsWith(statements, action);
      assert.deepEqual(resourcesOfStatement(st).map((r) => r.replace(/^<(StateMachine)\w+>$/, '$1')), ['StateMachine'], action);
      assert.equal(st.Condition, undefined, action);
    }
    for (const action of ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ChangeMessageVisibility']) {
      for (const st of statementsWith(statements, action)) {
        assert.deepEqual(list(st.Resource), [mapping.Properties.EventSourceArn], action);
      }
    }
  });
});

describe('no wildcard actions', () => {
  const documents: { where: string; statements: Statement[] }[] = [];
  for (const [id, r] of Object.entries(json.Resources as Record<string, any>)) {
    const p = r.Properties ?? {};
    for (const policy of list(p.Policies)) documents.push({ where: `${id} inline`, statements: (policy as any).PolicyDocument.Statement });
    for (const key of ['PolicyDocument', 'KeyPolicy']) {
      if (p[key]?.Statement) documents.push({ where: `${id} ${key}`, statements: p[key].Statement });
    }
  }

  test('the template has identity and resource policies to check', () => {
    assert.ok(documents.length >= 15, `${documents.length} policy documents`);
  });

  test('no identity policy statement has a "*" or "service:*" action', () => {
    for (const { where, statements } of documents.filter((d) => !d.where.endsWith('KeyPolicy'))) {
      for (const s of statements) {
        for (const action of list(s.Action)) {
          const denyTls = s.Effect === 'Deny' && /aws:SecureTransport|s3:TlsVersion/.test(JSON.stringify(s.Condition ?? {}));
          if (denyTls) continue; // enforceSSL / minimumTLSVersion: deny every action without TLS 1.2
          assert.ok(!action.includes('*'), `${where}: ${s.Effect} ${action}`);
        }
      }
    }
  });

  test('key policies: only the account root statement (delegation to IAM) uses kms:*', () => {
    for (const { where, statements } of documents.filter((d) => d.where.endsWith('KeyPolicy'))) {
      for (const s of statements) {
        if (!list(s.Action).some((a) => a.includes('*'))) continue;
        assert.deepEqual(list(s.Action), ['kms:*'], where);
        assert.match(flatten((s.Principal as any).AWS), /^arn:<AWS::Partition>:iam::<AWS::AccountId>:root$/, where);
      }
    }
  });
});
