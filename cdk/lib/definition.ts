// The state machine definition is the file at the repository root, read at synth time and kept
// inline in the template (DefinitionString + DefinitionSubstitutions, so CloudFormation does the
// substitution). The placeholders are whatever the file uses: none is listed here, and a
// placeholder that the stack does not provide fails the synth.

import { readFileSync } from 'node:fs';

/** `${Name}` as DefinitionSubstitutions understands it. */
const PLACEHOLDER = /\$\{([A-Za-z0-9_]+)\}/g;

export interface Definition {
  readonly path: string;
  readonly body: string;
  /** Placeholder names, in order of first use. */
  readonly placeholders: readonly string[];
}

export function placeholdersOf(body: string): string[] {
  const seen = new Set<string>();
  for (const match of body.matchAll(PLACEHOLDER)) seen.add(match[1]);
  return [...seen];
}

/**
 * Reads the definition and checks it against the substitutions the stack provides: every
 * placeholder must have a value, and the file must be JSON once they are filled in.
 */
export function loadDefinition(path: string, provided: readonly string[]): Definition {
  let body: string;
  try {
    body = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the state machine definition ${path}: ${(err as Error).message}`);
  }
  const placeholders = placeholdersOf(body);
  const missing = placeholders.filter((name) => !provided.includes(name));
  if (missing.length > 0) {
    throw new Error(
      `${path} uses ${missing.map((n) => '${' + n + '}').join(', ')}, which the stack does not substitute ` +
        `(it provides: ${provided.join(', ')}); add it to the stack's definitionSubstitutions`,
    );
  }
  // A placeholder may stand where a number goes (outside quotes), so check with a number in place.
  try {
    JSON.parse(body.replace(PLACEHOLDER, '0'));
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  const stray = body.replace(PLACEHOLDER, '').indexOf('${');
  if (stray >= 0) {
    throw new Error(`${path} has a "\${" that is not a \${Name} placeholder at offset ${stray}`);
  }
  return { path, body, placeholders };
}
