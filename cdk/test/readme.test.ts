// The main README's least-privilege table names every action that lib/steps.ts grants each step.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { DISPATCH, STEPS } from '../lib/steps';

const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
const arns = {
  evidenceBucketArn: 'bucket', evidenceKeyArn: 'key', topicArn: 'topic', topicKeyArn: 'topickey',
  forensicRoleArn: 'role', forensicInstanceProfileArn: 'profile', executionsArn: 'executions',
};

for (const step of STEPS) {
  test(`README least-privilege row for ${step.name} lists its actions`, () => {
    const row = readme.split('\n').find((line) => line.startsWith(`| ${step.name} |`));
    assert.ok(row, `no row for ${step.name}`);
    const actions = new Set(step.statements(arns).filter((s) => s.effect !== 'Deny').flatMap((s) => s.actions));
    for (const action of actions) assert.ok(row.includes(`\`${action}\``), `${step.name}: ${action} missing`);
  });
}

test('README least-privilege row for the GuardDuty dispatcher lists its actions', () => {
  const row = readme.split('\n').find((line) => line.startsWith(`| ${DISPATCH.name} |`));
  assert.ok(row, 'no row for dispatch');
  const actions = new Set(DISPATCH.statements({ stateMachineArn: 'sm', findingsQueueArn: 'queue' }).flatMap((s) => s.actions));
  for (const action of actions) assert.ok(row.includes(`\`${action}\``), `dispatch: ${action} missing`);
});
