#!/usr/bin/env node
// The CDK app entry point (cdk.json runs it with tsx). Settings come from context: see README.md.
import { createApp } from '../lib/app';

createApp();
