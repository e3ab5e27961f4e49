// Builds the Cordon app: one environment-agnostic stack (synth needs no AWS account or network),
// with cdk-nag's AwsSolutions checks registered as a validation plugin, so `cdk synth` and
// `cdk deploy` fail on any finding that is not acknowledged in code with a reason.

import { join, resolve } from 'node:path';

import { App, type AppProps, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';

import { configFromContext } from './config';
import { CordonStack } from './cordon-stack';

/** The repository root (this file is cdk/lib/app.ts). */
export const REPO_ROOT = resolve(__dirname, '..', '..');

export interface CordonAppOptions extends AppProps {
  /** Defaults to statemachine.asl.json at the repository root. */
  readonly definitionPath?: string;
  /** Stack name; "Cordon" unless context stackName says otherwise. */
  readonly stackName?: string;
}

export function createApp(options: CordonAppOptions = {}): { app: App; stack: CordonStack } {
  const { definitionPath, stackName, ...appProps } = options;
  const app = new App(appProps);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

  // cargo lambda writes target/lambda/<binary>/bootstrap under CARGO_TARGET_DIR when it is set
  // (the Makefile exports it), else under the repository's target/.
  const targetDir = process.env.CARGO_TARGET_DIR || join(REPO_ROOT, 'target');
  const config = configFromContext(app.node, join(targetDir, 'lambda'));

  const name = stackName ?? (app.node.tryGetContext('stackName') as string | undefined) ?? 'Cordon';
  const stack = new CordonStack(app, name, {
    stackName: name,
    description: 'Cordon: automated first response for a suspected compromised EC2 instance',
    config,
    definitionPath: definitionPath ?? join(REPO_ROOT, 'statemachine.asl.json'),
  });
  return { app, stack };
}
