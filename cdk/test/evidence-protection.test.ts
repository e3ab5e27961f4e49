// Issue 12 items 4 and 7: the evidence bucket policy denies the ways of removing evidence to all
// but the break-glass role, the evidence key lets only Cordon's roles, the break-glass and the
// investigator role decrypt, and every log group is encrypted with a key for those groups only.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { configFromContext } from '../lib/config';
import { EVIDENCE_PROTECTED_ACTIONS } from '../lib/cordon-stack';
import { build, flatten, list, logicalIdOf, only, resourcesOf, synth, type Statement } from './helpers';

const BREAK_GLASS = 'arn:aws:iam::111122223333:role/admin/CordonBreakGlass';
const INVESTIGATOR = 'arn:aws:iam::111122223333:role/Investigator';

const plain = synth().template;
const named = synth({ breakGlassRoleArn: BREAK_GLASS, investigatorRoleArn: INVESTIGATOR }).template;

function evidenceBucketId(template: typeof plain): string {
  return only(Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::S3::Bucket')).filter(([, b]) => b.Properties.ObjectLockEnabled)))[0];
}

function bucketStatements(template: typeof plain): Statement[] {
  const id = evidenceBucketId(template);
  const [, policy] = only(Object.fromEntries(Object.entries(resourcesOf(template, 'AWS::S3::BucketPolicy')).filter(([, p]) => p.Properties.Bucket.Ref === id)));
  return policy.Properties.PolicyDocument.Statement;
}

function keyPolicy(template: typeof plain, keyId: string): Statement[] {
  return template.toJSON().Resources[keyId].Properties.KeyPolicy.Statement;
}

function evidenceKeyId(template: typeof plain): string {
  const bucket = template.toJSON().Resources[evidenceBucketId(template)];
  return logicalIdOf(bucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.KMSMasterKeyID);
}

const sorted = (v: unknown) => [...list(v as string | string[])].sort();

describe('evidence bucket policy: admins cannot quietly remove evidence', () => {
  for (const [label, template, condition] of [
    ['without a break-glass role', plain, undefined],
    ['with a break-glass role', named, { ArnNotEquals: { 'aws:PrincipalArn': BREAK_GLASS } }],
  ] as const) {
    test(`denies retention bypass and changes, version deletion and versioning to everyone ${label}`, () => {
      const deny = bucketStatements(template).find((s) => s.Sid === 'EvidenceCannotBeRemoved');
      assert.ok(deny, 'the EvidenceCannotBeRemoved statement');
      assert.equal(deny.Effect, 'Deny');
      assert.deepEqual(deny.Principal, { AWS: '*' });
      assert.deepEqual(sorted(deny.Action), [
        's3:BypassGovernanceRetention', 's3:DeleteObjectVersion', 's3:PutBucketObjectLockConfiguration',
        's3:PutBucketVersioning', 's3:PutObjectRetention',
      ]);
      assert.deepEqual(sorted(EVIDENCE_PROTECTED_ACTIONS), sorted(deny.Action));
      const id = evidenceBucketId(template);
      assert.deepEqual(list(deny.Resource as unknown[]).map(flatten).sort(), [`<${id}.Arn>`, `<${id}.Arn>/*`]);
      // No condition: nobody is exempt. With a break-glass role: exactly that role's ARN (all its sessions).
      assert.deepEqual(deny.Condition, condition);
    });
  }

  test('the deny is separate from every Allow: nothing in the policy grants the denied actions', () => {
    for (const s of bucketStatements(named)) {
      if (s.Effect !== 'Allow') continue;
      for (const a of list(s.Action)) assert.ok(!EVIDENCE_PROTECTED_ACTIONS.includes(a), `${a} allowed`);
    }
  });

  test('Object Lock and versioning are set at creation, before the policy exists (CloudFormation needs no denied action)', () => {
    const R = named.toJSON().Resources;
    const id = evidenceBucketId(named);
    assert.equal(R[id].Properties.ObjectLockEnabled, true);
    assert.deepEqual(R[id].Properties.VersioningConfiguration, { Status: 'Enabled' });
    assert.equal(R[id].DeletionPolicy, 'Retain', 'deleting the stack deletes no object version');
    // The policy refers to the bucket, so CloudFormation creates it after the bucket.
    const policy = Object.values(resourcesOf(named, 'AWS::S3::BucketPolicy')).find((p) => p.Properties.Bucket.Ref === id)!;
    assert.deepEqual(policy.Properties.Bucket, { Ref: id });
  });
});

describe('evidence key policy: who may decrypt', () => {
  test('keeps the account-root statement that delegates administration to IAM', () => {
    const root = keyPolicy(named, evidenceKeyId(named)).find((s) => s.Effect === 'Allow' && flatten((s.Principal as any)?.AWS).endsWith(':root'));
    assert.ok(root);
    assert.equal(root.Action, 'kms:*');
  });

  for (const [label, template, extra] of [
    ['default', plain, []],
    ['with break-glass and investigator roles', named, [BREAK_GLASS, INVESTIGATOR]],
  ] as const) {
    test(`denies Decrypt and ReEncryptFrom to everyone but Cordon's roles (${label})`, () => {
      const deny = keyPolicy(template, evidenceKeyId(template)).find((s) => s.Effect === 'Deny');
      assert.ok(deny);
      assert.deepEqual(deny.Principal, { AWS: '*' });
      assert.deepEqual(sorted(deny.Action), ['kms:Decrypt', 'kms:ReEncryptFrom']);
      assert.equal(deny.Resource, '*');
      assert.deepEqual(Object.keys(deny.Condition!), ['ArnNotLike']);
      const arns = list(deny.Condition!.ArnNotLike['aws:PrincipalArn'] as unknown[]).map(flatten);
      assert.deepEqual(arns, ['arn:<AWS::Partition>:iam::<AWS::AccountId>:role/cordon/*', ...extra]);
      // No kms:ViaService exemption: S3 decrypts with the reader's own credentials.
      assert.ok(!JSON.stringify(deny.Condition).includes('kms:ViaService'));
    });
  }

  test('every role of the stack that is granted kms:Decrypt on the evidence key lies under the exempt path', () => {
    const R = named.toJSON().Resources;
    const key = evidenceKeyId(named);
    let readers = 0;
    for (const role of Object.values(resourcesOf(named, 'AWS::IAM::Role'))) {
      const grants = list(role.Properties.Policies).flatMap((p: any) => p.PolicyDocument.Statement as Statement[]);
      const decrypts = grants.some((s) => s.Effect === 'Allow' && list(s.Action).includes('kms:Decrypt') && list(s.Resource as unknown[]).some((r: any) => r?.['Fn::GetAtt']?.[0] === key));
      if (!decrypts) continue;
      readers += 1;
      assert.equal(role.Properties.Path, '/cordon/');
    }
    assert.ok(readers >= 2, 'the evidence-reading steps');
    assert.ok(R[key]);
  });
});

describe('log groups: encrypted with a key for those groups only', () => {
  const R = named.toJSON().Resources;
  const groups = resourcesOf(named, 'AWS::Logs::LogGroup');

  test('every AWS::Logs::LogGroup has a KmsKeyId, the logs key', () => {
    assert.equal(Object.keys(groups).length, 10);
    const keys = new Set(Object.values(groups).map((g) => logicalIdOf(g.Properties.KmsKeyId)));
    assert.equal(keys.size, 1);
    const [keyId] = keys;
    assert.equal(R[keyId].Type, 'AWS::KMS::Key');
    assert.equal(R[keyId].Properties.EnableKeyRotation, true);
    assert.equal(R[keyId].DeletionPolicy, 'Retain');
  });

  test('the logs key admits CloudWatch Logs of this region for exactly these groups', () => {
    const keyId = logicalIdOf(Object.values(groups)[0].Properties.KmsKeyId);
    const statements = keyPolicy(named, keyId);
    const logs = statements.filter((s) => JSON.stringify(s.Principal).includes('logs.'));
    assert.equal(logs.length, 1);
    const [s] = logs;
    assert.equal(s.Effect, 'Allow');
    assert.equal(flatten((s.Principal as any).Service), 'logs.<AWS::Region>.amazonaws.com');
    assert.deepEqual(sorted(s.Action), ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:GenerateDataKeyWithoutPlaintext', 'kms:ReEncryptFrom', 'kms:ReEncryptTo']);
    const arns = list(s.Condition!.ArnEquals['kms:EncryptionContext:aws:logs:arn'] as unknown[]).map(flatten).sort();
    const expected = Object.values(groups)
      .map((g) => `arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:${g.Properties.LogGroupName}`)
      .sort();
    assert.deepEqual(arns, expected);
    // Only the root delegation besides: no other service or principal is admitted.
    assert.equal(statements.length, 2);
  });
});

describe('context: breakGlassRoleArn and investigatorRoleArn', () => {
  const cfg = (ctx: Record<string, unknown>) => configFromContext(build(ctx).app.node, '/tmp');
  test('role ARNs with a path are accepted', () => {
    const c = cfg({ breakGlassRoleArn: BREAK_GLASS, investigatorRoleArn: INVESTIGATOR });
    assert.equal(c.breakGlassRoleArn, BREAK_GLASS);
    assert.equal(c.investigatorRoleArn, INVESTIGATOR);
    assert.equal(cfg({}).breakGlassRoleArn, undefined);
  });
  for (const bad of [
    'arn:aws:sts::111122223333:assumed-role/CordonBreakGlass/alice',
    'arn:aws:iam::111122223333:user/alice',
    'arn:aws:iam::111122223333:role/*',
    'CordonBreakGlass',
  ]) {
    test(`rejects ${bad}`, () => {
      assert.throws(() => build({ breakGlassRoleArn: bad }), /breakGlassRoleArn must be an IAM role ARN/);
      assert.throws(() => build({ investigatorRoleArn: bad }), /investigatorRoleArn must be an IAM role ARN/);
    });
  }
});
