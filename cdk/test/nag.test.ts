// cdk-nag AwsSolutions: no unacknowledged finding in any mode, every acknowledgement has a written
// reason, and every acknowledgement answers a finding that really occurs (none is stale).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Validations, type App } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';

import { build } from './helpers';

const MODES: Record<string, Record<string, unknown>> = {
  default: {},
  'apiKey + GuardDuty + email + x86_64 + COMPLIANCE + no account CloudWatch role': {
    apiKey: true,
    apiGatewayCloudWatchRole: false,
    guardDutySeverity: 4,
    notificationEmail: 'security@example.com',
    architecture: 'x86_64',
    retentionMode: 'COMPLIANCE',
  },
};

interface Ack { path: string; id: string; reason: string }

function acknowledgements(app: App): Ack[] {
  const out: Ack[] = [];
  for (const c of app.node.findAll()) {
    for (const entry of c.node.metadata) {
      if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
      for (const [qualified, reason] of Object.entries(entry.data as Record<string, string>)) {
        out.push({ path: c.node.path, id: qualified.replace(/^annotation::/i, ''), reason });
      }
    }
  }
  return out;
}

/** The findings with every acknowledgement switched off (Validations.acknowledge made a no-op). */
function rawFindings(context: Record<string, unknown>): { rule: string; path: string }[] {
  const original = Validations.prototype.acknowledge;
  Validations.prototype.acknowledge = () => undefined;
  try {
    const { app } = build(context);
    const report = new AwsSolutionsChecks().validateScope(app);
    return report.violations.flatMap((v) => v.violatingResources.map((r) => ({ rule: v.ruleName, path: r.constructPath ?? '' })));
  } finally {
    Validations.prototype.acknowledge = original;
  }
}

for (const [mode, context] of Object.entries(MODES)) {
  describe(`cdk-nag AwsSolutions (${mode})`, () => {
    const { app } = build(context);
    const acks = acknowledgements(app);

    test('zero unacknowledged findings', () => {
      const report = new AwsSolutionsChecks().validateScope(app);
      const findings = report.violations.map((v) => `${v.ruleName} @ ${v.violatingResources.map((r) => r.constructPath).join(', ')}`);
      assert.deepEqual(findings, []);
      assert.equal(report.success, true);
    });

    test('every acknowledgement carries a written justification', () => {
      assert.ok(acks.length > 0);
      for (const ack of acks) {
        assert.ok(ack.reason.trim().length >= 60, `${ack.path} ${ack.id}: reason too short: "${ack.reason}"`);
      }
    });

    test('every acknowledgement answers a finding that occurs on that construct', () => {
      const raw = rawFindings(context);
      assert.ok(raw.length > 0, 'the checks do find something without acknowledgements');
      for (const ack of acks) {
        const answered = raw.some((f) => f.rule === ack.id && (f.path === ack.path || f.path.startsWith(`${ack.path}/`)));
        assert.ok(answered, `stale acknowledgement ${ack.id} on ${ack.path}`);
      }
    });
  });
}
