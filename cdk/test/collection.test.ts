// The collection budget as deployed: one setting (context collectionBudgetSeconds, at most
// collectionMaxBudgetSeconds) that reaches, unchanged, the function that validates requests and
// the function that runs the collection, whose timeouts leave room for the end of a collection;
// the bounds are the ones the Rust side derives every collection timeout with
// (steps/common/src/collection.rs).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import {
  DEFAULT_COLLECTION_BUDGET_SECONDS,
  DEFAULT_COLLECTION_MAX_BUDGET_SECONDS,
  MAX_COLLECTION_BUDGET_SECONDS,
  MIN_COLLECTION_BUDGET_SECONDS,
} from '../lib/config';
import { REPO_ROOT, logicalIdOf, only, resourcesOf, synth } from './helpers';

/** A `pub const NAME: u32 = <n>;` of the Rust collection module. */
function rustConstant(name: string): number {
  const source = readFileSync(join(REPO_ROOT, 'steps', 'common', 'src', 'collection.rs'), 'utf8');
  const m = new RegExp(`pub const ${name}: u32 = ([0-9_]+);`).exec(source);
  assert.ok(m, `steps/common/src/collection.rs has no pub const ${name}: u32`);
  return Number(m[1].replace(/_/g, ''));
}

/** Seconds the budget's end may take after the budget: the deadline grace, then CancelCommand's wait. */
const CANCEL_WAIT_SECONDS = rustConstant('CANCEL_WAIT_SECONDS');
/** What an invocation needs besides waiting for the cancelled command: the calls, the evidence writes. */
const INVOCATION_MARGIN_SECONDS = 60;

function deployed(context: Record<string, unknown>) {
  const { template } = synth(context);
  const R = template.toJSON().Resources as Record<string, any>;
  const [, sm] = only(resourcesOf(template, 'AWS::StepFunctions::StateMachine'));
  const subs = sm.Properties.DefinitionSubstitutions as Record<string, unknown>;
  const fn = (placeholder: string) => R[logicalIdOf(subs[placeholder])].Properties;
  const [, model] = only(resourcesOf(template, 'AWS::ApiGateway::Model'));
  return {
    metadata: fn('MetadataFunctionArn'),
    ssmCollect: fn('SsmCollectFunctionArn'),
    // Placeholders by name ("${SsmCollectFunctionArn}" -> "SsmCollectFunctionArn").
    definition: JSON.parse(sm.Properties.DefinitionString.replace(/\$\{([A-Za-z0-9_]+)\}/g, '$1')),
    budgetOption: model.Properties.Schema.properties.options.properties.collection_budget_seconds,
  };
}

describe('the collection budget', () => {
  test('defaults: 1,200 s, at most 3,600 s; the bounds 300..3,600 are the Rust Budget\'s', () => {
    assert.equal(DEFAULT_COLLECTION_BUDGET_SECONDS, 1200);
    assert.equal(DEFAULT_COLLECTION_MAX_BUDGET_SECONDS, 3600);
    assert.equal(MIN_COLLECTION_BUDGET_SECONDS, rustConstant('MIN_BUDGET_SECONDS'));
    assert.equal(MAX_COLLECTION_BUDGET_SECONDS, rustConstant('MAX_BUDGET_SECONDS'));
    assert.ok(DEFAULT_COLLECTION_BUDGET_SECONDS <= DEFAULT_COLLECTION_MAX_BUDGET_SECONDS);
  });

  const cases: [string, Record<string, unknown>, number, number][] = [
    ['default', {}, 1200, 3600],
    ['collectionBudgetSeconds=600 collectionMaxBudgetSeconds=900', { collectionBudgetSeconds: '600', collectionMaxBudgetSeconds: '900' }, 600, 900],
    ['the smallest', { collectionBudgetSeconds: 300, collectionMaxBudgetSeconds: 300 }, 300, 300],
    ['the largest', { collectionBudgetSeconds: 3600 }, 3600, 3600],
  ];
  for (const [name, context, budget, max] of cases) {
    describe(name, () => {
      const d = deployed(context);

      test('the validating function and the collecting function get the same budget and maximum', () => {
        for (const fn of [d.metadata, d.ssmCollect]) {
          const env = fn.Environment.Variables;
          assert.equal(env.COLLECTION_BUDGET_SECONDS, String(budget));
          assert.equal(env.COLLECTION_MAX_BUDGET_SECONDS, String(max));
          assert.ok(Number(env.COLLECTION_BUDGET_SECONDS) <= Number(env.COLLECTION_MAX_BUDGET_SECONDS));
          assert.equal(env.COLLECTION_TIMEOUT_SECONDS, undefined, 'replaced by the budget');
        }
      });

      test('the API accepts a requested budget from the minimum to the deployment\'s maximum', () => {
        assert.deepEqual(d.budgetOption, { type: 'integer', minimum: MIN_COLLECTION_BUDGET_SECONDS, maximum: max });
      });

      test('an ssm-collect invocation can cancel at the deadline and wait for the end', () => {
        assert.ok(d.ssmCollect.Timeout >= CANCEL_WAIT_SECONDS + INVOCATION_MARGIN_SECONDS, `${d.ssmCollect.Timeout}`);
        assert.ok(d.ssmCollect.Timeout <= 900, 'the Lambda maximum');
      });

      test('the state machine does not cut the collection short', () => {
        // A Task timeout below the function's would end an invocation that is still cancelling or hashing.
        const tasks: any[] = [];
        const walk = (node: unknown): void => {
          if (Array.isArray(node)) node.forEach(walk);
          else if (node && typeof node === 'object') {
            if ((node as any).Type === 'Task') tasks.push(node);
            Object.values(node).forEach(walk);
          }
        };
        walk(d.definition);
        const collecting = tasks.filter((t) => (t.Parameters ?? t.Arguments)?.FunctionName === 'SsmCollectFunctionArn');
        assert.ok(collecting.length > 0, 'the definition invokes ssm-collect');
        for (const task of collecting.filter((t) => t.TimeoutSeconds !== undefined)) {
          assert.ok(task.TimeoutSeconds >= d.ssmCollect.Timeout, `${task.TimeoutSeconds}`);
        }
        // A whole-execution timeout, if the definition sets one, outlasts the longest collection:
        // the budget, the deadline grace, the cancel wait, and the invocations around it.
        if (d.definition.TimeoutSeconds !== undefined) {
          assert.ok(d.definition.TimeoutSeconds > max + CANCEL_WAIT_SECONDS + d.ssmCollect.Timeout);
        }
      });
    });
  }
});
