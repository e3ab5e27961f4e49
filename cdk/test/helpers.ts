// Shared by the tests: the app as `cdk synth` builds it (cdk.json's feature flags), with the
// placeholder Lambda code so that no Rust is built.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Template } from 'aws-cdk-lib/assertions';

import { createApp, type CordonAppOptions } from '../lib/app';

export const REPO_ROOT = join(__dirname, '..', '..');

const cdkJson = JSON.parse(readFileSync(join(__dirname, '..', 'cdk.json'), 'utf8')) as {
  context: Record<string, unknown>;
};

export function build(context: Record<string, unknown> = {}, options: Omit<CordonAppOptions, 'context'> = {}) {
  return createApp({
    // CDK's built-in CloudFormation validation (WASM) costs seconds per synth; `npm run lint:cfn`
    // lints the same templates with cfn-lint.
    builtinCloudFormationValidation: false,
    ...options,
    context: { ...cdkJson.context, placeholderCode: true, ...context },
  });
}

/** Synthesizes (cdk-nag runs as a validation plugin: any unacknowledged finding throws here). */
export function synth(context: Record<string, unknown> = {}, options: Omit<CordonAppOptions, 'context'> = {}) {
  const { app, stack } = build(context, options);
  return { app, stack, template: Template.fromStack(stack) };
}

export interface Resource {
  Type: string;
  Properties: Record<string, any>;
  [key: string]: any;
}

export function resourcesOf(template: Template, type: string): Record<string, Resource> {
  return template.findResources(type) as Record<string, Resource>;
}

export function only<T>(record: Record<string, T>): [string, T] {
  const entries = Object.entries(record);
  if (entries.length !== 1) throw new Error(`expected exactly one, found ${entries.length}: ${entries.map((e) => e[0]).join(', ')}`);
  return entries[0];
}

export interface Statement {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Action: string | string[];
  Resource?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
  Principal?: unknown;
}

export const list = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);

/**
 * Every statement that applies to a role: its inline policies, any AWS::IAM::Policy attached to
 * it, and the ARNs of its managed policies.
 */
export function roleGrants(template: Template, roleId: string): { statements: Statement[]; managed: unknown[] } {
  const role = template.toJSON().Resources[roleId] as Resource;
  if (role?.Type !== 'AWS::IAM::Role') throw new Error(`${roleId} is not a role`);
  const statements: Statement[] = [];
  for (const policy of list(role.Properties.Policies)) statements.push(...(policy as any).PolicyDocument.Statement);
  for (const policy of Object.values(resourcesOf(template, 'AWS::IAM::Policy'))) {
    if (list(policy.Properties.Roles).some((r: any) => r.Ref === roleId)) {
      statements.push(...policy.Properties.PolicyDocument.Statement);
    }
  }
  return { statements, managed: list(role.Properties.ManagedPolicyArns) };
}

/** The logical id behind `{ "Fn::GetAtt": [id, "Arn"] }` or `{ "Ref": id }`. */
export function logicalIdOf(value: any): string {
  if (value?.['Fn::GetAtt']) return value['Fn::GetAtt'][0];
  if (value?.Ref) return value.Ref;
  throw new Error(`not a reference: ${JSON.stringify(value)}`);
}

/** An Fn::Join / Ref / GetAtt expression as a flat string (`arn:<AWS::Partition>:...`). */
export function flatten(value: any): string {
  if (typeof value === 'string') return value;
  if (value?.Ref) return `<${value.Ref}>`;
  if (value?.['Fn::GetAtt']) return `<${value['Fn::GetAtt'].join('.')}>`;
  if (value?.['Fn::Join']) return value['Fn::Join'][1].map(flatten).join(value['Fn::Join'][0]);
  return JSON.stringify(value);
}
