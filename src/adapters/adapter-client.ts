import AjvModule, { type ValidateFunction } from 'ajv';
import { MamoriError } from '../core/mamori-error.js';
import { runAdapterProcess } from './adapter-process.js';
import {
  ADAPTER_COMMANDS,
  GENERIC_ERROR_CODES,
  PROTOCOL_VERSION,
  REQUIRED_COMMANDS,
  RESPONSE_SCHEMA,
  RESULT_SCHEMAS,
  type AdapterArguments,
  type AdapterCommand,
  type AdapterErrorBody,
  type AdapterResults,
} from './adapter-protocol.js';

/** The queries answer in seconds; data commands (a full first sync) may take hours. */
const QUERY_COMMANDS: readonly AdapterCommand[] = [
  'queryInfo',
  'queryCapabilities',
  'queryConnectionParameters',
  'queryErrorDefinitions',
  'discoverArrays',
  'discoverDevices',
  'queryReplicationSettings',
  'querySyncStatus',
];
export const DEFAULT_TIMEOUTS = { queryMs: 30_000, dataMs: 6 * 3600_000 };

// ajv is CommonJS: under ESM its class is the default export's default.
const Ajv = AjvModule.default ?? AjvModule;
const ajv = new Ajv({ allErrors: true, strict: false });
const validateResponse = ajv.compile(RESPONSE_SCHEMA);
const validators = new Map<AdapterCommand, ValidateFunction>(
  ADAPTER_COMMANDS.map((c) => [c, ajv.compile(RESULT_SCHEMAS[c])]),
);

/**
 * One adapter with one connection, as mamori talks to it: every call is a run of the
 * executable, every response is checked against the protocol's schema for its command, an
 * error code must be one the adapter declared, and a command it did not declare in
 * queryCapabilities is refused before it runs. What the adapter says about itself is
 * asked once and kept.
 */
export class AdapterClient {
  readonly path: string;
  #connection: Record<string, string>;
  #timeouts: { queryMs: number; dataMs: number };
  #capabilities: Promise<AdapterResults['queryCapabilities']> | null = null;
  #errors: Promise<Map<string, boolean>> | null = null;
  #onProgress: ((command: AdapterCommand, fraction: number | null, message: string) => void) | undefined;

  constructor(
    path: string,
    connection: Record<string, string>,
    opts: {
      timeouts?: Partial<typeof DEFAULT_TIMEOUTS>;
      onProgress?: (command: AdapterCommand, fraction: number | null, message: string) => void;
    } = {},
  ) {
    this.path = path;
    this.#connection = connection;
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    this.#onProgress = opts.onProgress;
  }

  capabilities(): Promise<AdapterResults['queryCapabilities']> {
    this.#capabilities ??= this.#run('queryCapabilities', {});
    this.#capabilities.catch(() => (this.#capabilities = null));
    return this.#capabilities;
  }

  /** Declared error codes and whether each is retryable (the generic ones are not). */
  errorDefinitions(): Promise<Map<string, boolean>> {
    this.#errors ??= this.#run('queryErrorDefinitions', {}).then(
      (r) => new Map(r.errors.map((e) => [e.code, e.retryable])),
    );
    this.#errors.catch(() => (this.#errors = null));
    return this.#errors;
  }

  async call<C extends AdapterCommand>(command: C, args: AdapterArguments<C>): Promise<AdapterResults[C]> {
    if (!REQUIRED_COMMANDS.includes(command)) {
      const caps = await this.capabilities();
      if (!caps.commands.includes(command)) {
        throw new MamoriError(
          'ADAPTER_UNSUPPORTED',
          `the adapter ${this.path} does not declare ${command} in queryCapabilities, so mamori does not send it; it declares: ${caps.commands.join(', ')}`,
          { details: { adapter: this.path, command } },
        );
      }
    }
    return this.#run(command, args);
  }

  async #run<C extends AdapterCommand>(
    command: C,
    args: AdapterArguments<C> | Record<string, never>,
  ): Promise<AdapterResults[C]> {
    const request = JSON.stringify({
      protocol: PROTOCOL_VERSION,
      command,
      connection: this.#connection,
      arguments: args,
    });
    const run = await runAdapterProcess(this.path, request, {
      command,
      timeoutMs: QUERY_COMMANDS.includes(command) ? this.#timeouts.queryMs : this.#timeouts.dataMs,
      onProgress: (f, m) => this.#onProgress?.(command, f, m),
    });
    const said = run.stderrTail.length > 0 ? `; its stderr ends: ${run.stderrTail.slice(-3).join(' / ')}` : '';
    const fail = (why: string): MamoriError =>
      new MamoriError('ADAPTER_FAILED', `the adapter ${this.path} failed ${command}: ${why}${said}`, {
        details: { adapter: this.path, command, exitCode: run.exitCode, signal: run.signal, stderr: run.stderrTail },
      });
    if (run.signal) throw fail(`it was killed by ${run.signal}`);
    if (run.exitCode !== 0) throw fail(`it exited ${run.exitCode}`);
    const r = decodeAdapterResponse(command, run.stdout);
    if ('broken' in r) throw fail(r.broken);
    if ('error' in r) {
      const declared = command === 'queryErrorDefinitions' ? new Map<string, boolean>() : await this.errorDefinitions();
      if (!declared.has(r.error.code) && !(GENERIC_ERROR_CODES as readonly string[]).includes(r.error.code)) {
        throw fail(
          `it answered with error code ${r.error.code}, which it does not declare in queryErrorDefinitions (${r.error.message})`,
        );
      }
      // The adapter's own code and whether it declared it retryable travel in details.
      throw new MamoriError(
        'ADAPTER_ERROR',
        `the adapter ${this.path} refused ${command}: ${r.error.message} [${r.error.code}]`,
        {
          details: {
            adapter: this.path,
            command,
            adapterCode: r.error.code,
            retryable: declared.get(r.error.code) ?? false,
            ...(r.error.details ? { adapterDetails: r.error.details } : {}),
          },
        },
      );
    }
    return r.result as AdapterResults[C];
  }
}

/**
 * An adapter's stdout as the protocol reads it: one JSON object holding the result of
 * `command` (checked against its schema) or an error; anything else is `broken`, with why.
 * Pure, so that what an adapter may write is fuzzed without running one (test/fuzz).
 */
export function decodeAdapterResponse(
  command: AdapterCommand,
  stdout: string,
): { result: unknown } | { error: AdapterErrorBody } | { broken: string } {
  let response: unknown;
  try {
    response = JSON.parse(stdout);
  } catch {
    return {
      broken:
        stdout.trim() === ''
          ? 'it wrote no response on stdout'
          : `its stdout is not one JSON object: ${JSON.stringify(stdout.slice(0, 200))}`,
    };
  }
  if (!validateResponse(response))
    return { broken: `its response breaks the protocol: ${ajv.errorsText(validateResponse.errors)}` };
  const r = response as { result?: unknown; error?: AdapterErrorBody };
  if (r.error) return { error: r.error };
  const validate = validators.get(command)!;
  if (!validate(r.result))
    return {
      broken: `its ${command} result breaks the protocol: ${ajv.errorsText(validate.errors, { dataVar: 'result' })}`,
    };
  return { result: r.result };
}
