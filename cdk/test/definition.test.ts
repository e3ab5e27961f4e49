// The state machine definition: read from the repository at synth time, every placeholder
// substituted, and a placeholder the stack does not provide fails the synth.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { loadDefinition } from '../lib/definition';
import { build, REPO_ROOT, only, resourcesOf, synth } from './helpers';

/** The placeholders the issue names; the stack must provide every one. */
const ISSUE_PLACEHOLDERS = [
  'MetadataFunctionArn', 'ScreenshotFunctionArn', 'SnapshotFunctionArn', 'TermprotectFunctionArn',
  'DetachProfileFunctionArn', 'SsmCollectFunctionArn', 'QuarantineFunctionArn', 'NotifyFunctionArn',
  'ForensicInstanceProfileArn', 'EvidenceBucket', 'TopicArn',
];

const placeholdersIn = (text: string) => [...new Set([...text.matchAll(/\$\{([A-Za-z0-9_]+)\}/g)].map((m) => m[1]))];

function definitionFile(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-asl-'));
  const path = join(dir, 'statemachine.asl.json');
  writeFileSync(path, body);
  return path;
}

function stateMachineOf(template: ReturnType<typeof synth>['template']) {
  return only(resourcesOf(template, 'AWS::StepFunctions::StateMachine'))[1].Properties;
}

describe('the repository\'s statemachine.asl.json', () => {
  const file = readFileSync(join(REPO_ROOT, 'statemachine.asl.json'), 'utf8');
  const { template } = synth();
  const sm = stateMachineOf(template);

  test('is the definition, as read from the file at synth time', () => {
    assert.equal(sm.DefinitionString, file);
  });

  test('has every placeholder substituted', () => {
    const used = placeholdersIn(file);
    assert.ok(used.length > 0, 'the file uses placeholders');
    for (const name of used) assert.ok(name in sm.DefinitionSubstitutions, `\${${name}} has no substitution`);
  });

  test('every Task is a lambda:invoke of one of the eight functions (all the state machine role allows)', () => {
    const tasks: Record<string, any>[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node && typeof node === 'object') {
        if ((node as any).Type === 'Task') tasks.push(node as any);
        Object.values(node).forEach(walk);
      }
    };
    walk(JSON.parse(file));
    assert.ok(tasks.length > 0);
    const functions = ISSUE_PLACEHOLDERS.filter((p) => p.endsWith('FunctionArn')).map((p) => `\${${p}}`);
    for (const task of tasks) {
      assert.equal(task.Resource, 'arn:aws:states:::lambda:invoke');
      assert.ok(functions.includes(task.Parameters.FunctionName), `Task FunctionName ${task.Parameters.FunctionName}`);
    }
  });

  test('leaves no ${ once the substitutions are applied', () => {
    let substituted: string = sm.DefinitionString;
    for (const name of Object.keys(sm.DefinitionSubstitutions)) substituted = substituted.split(`\${${name}}`).join('SUBSTITUTED');
    assert.equal(substituted.indexOf('${'), -1);
    JSON.parse(substituted);
  });
});

describe('substitutions', () => {
  test('the stack provides every placeholder the issue names', () => {
    const { template } = synth();
    const provided = Object.keys(stateMachineOf(template).DefinitionSubstitutions).sort();
    assert.deepEqual(provided, [...ISSUE_PLACEHOLDERS].sort());
  });

  test('a definition using all of them synthesizes and substitutes each', () => {
    const body = JSON.stringify({
      StartAt: 'Done',
      States: {
        Done: {
          Type: 'Pass',
          Parameters: Object.fromEntries(ISSUE_PLACEHOLDERS.map((n) => [n, `\${${n}}`])),
          End: true,
        },
      },
    });
    const { template } = synth({}, { definitionPath: definitionFile(body) });
    const sm = stateMachineOf(template);
    assert.deepEqual(placeholdersIn(sm.DefinitionString).sort(), [...ISSUE_PLACEHOLDERS].sort());
  });

  test('a placeholder may stand where a number goes', () => {
    const path = definitionFile('{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":${N},"End":true}}}');
    assert.deepEqual(loadDefinition(path, ['N']).placeholders, ['N']);
  });

  test('the collection timing is not in the definition: the budget is the functions\' (COLLECTION_BUDGET_SECONDS)', () => {
    const { template } = synth({ collectionBudgetSeconds: 600 });
    const subs = stateMachineOf(template).DefinitionSubstitutions;
    assert.equal(subs.CollectionWaitSeconds, undefined);
    assert.equal(subs.CollectionMaxPolls, undefined);
  });
});

describe('a definition the stack cannot satisfy fails the synth', () => {
  test('an unknown placeholder', () => {
    const path = definitionFile('{"StartAt":"A","States":{"A":{"Type":"Pass","Result":"${Bogus}","End":true}}}');
    assert.throws(() => build({}, { definitionPath: path }), /uses \$\{Bogus\}, which the stack does not substitute/);
  });

  test('a file that is not JSON', () => {
    const path = definitionFile('{"StartAt": "A", "States": {');
    assert.throws(() => build({}, { definitionPath: path }), /is not valid JSON/);
  });

  test('a stray ${ that is not a placeholder', () => {
    const path = definitionFile('{"StartAt":"A","States":{"A":{"Type":"Pass","Result":"${not valid}","End":true}}}');
    assert.throws(() => build({}, { definitionPath: path }), /has a "\$\{" that is not a \$\{Name\} placeholder/);
  });

  test('a missing file', () => {
    assert.throws(() => build({}, { definitionPath: '/nonexistent/statemachine.asl.json' }), /cannot read the state machine definition/);
  });
});
