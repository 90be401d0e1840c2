import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkAgentHello } from '../../../src/convert/p2v-agent-client.js';
import { P2V_PROTOCOL, helloProof, parseAgentUrl } from '../../../src/convert/p2v-protocol.js';
import { certFingerprint } from '../../../src/sites/cert-fingerprint.js';
import { pairingKeyFromToken } from '../../../src/sites/pairing-proof.js';
import { TLS_FILES, createSiteCa, issueSiteCert } from '../../../src/sites/site-ca.js';
import type { FuzzTarget } from '../fuzz-target.js';
import fc from 'fast-check';
import { applyOps, byteOps } from '../byte-mutations.js';
import { jsonInputs } from '../json-mutations.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';

const KEY = 'fuzz-agent-key-0123456789';
const NONCE = '00112233445566778899aabbccddeeff';

let agent: Promise<{ hello: string; leaf: Buffer }> | undefined;
/** A real agent's hello (its CA made with openssl as an agent makes it) and the TLS certificate it serves. */
function agentHello(): Promise<{ hello: string; leaf: Buffer }> {
  agent ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mamori-fuzz-p2v-'));
    try {
      await createSiteCa(dir, 'p2v-agent');
      await issueSiteCert(dir, { kind: 'server', siteName: 'p2v-agent', names: ['mamori-p2v-agent'] });
      const caCert = await readFile(join(dir, TLS_FILES.caCert), 'utf8');
      const leaf = new X509Certificate(await readFile(join(dir, TLS_FILES.serverCert))).raw;
      const hello = {
        protocol: P2V_PROTOCOL,
        device: '/dev/sda',
        sizeBytes: 21474836480,
        caCert,
        proof: helloProof(pairingKeyFromToken(KEY), certFingerprint(caCert), NONCE),
        filesystems: [{ mountPoint: '/', source: '/dev/sda1', fsType: 'ext4' }],
      };
      return { hello: JSON.stringify(hello, null, 1), leaf };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return agent;
}

/** The agent's hello as the converting site checks it (JSON.parse as https-json does, then checkAgentHello). */
export const p2vHelloTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'p2v-hello',
  seeds: async () => [textSeed('hello', (await agentHello()).hello)],
  inputs: (seeds) =>
    fc.oneof(
      { arbitrary: jsonInputs(seeds), weight: 2 },
      { arbitrary: caMutations(seeds[0]!), weight: 2 },
      {
        arbitrary: textInputs(seeds, [
          '"protocol"',
          '"caCert"',
          '"sizeBytes"',
          '-----BEGIN CERTIFICATE-----',
          '-----END CERTIFICATE-----',
          'MII',
          '==',
          '\\n',
          '1e400',
          'null',
          '[]',
          '{}',
        ]),
        weight: 1,
      },
    ),
  async run(input) {
    const { leaf } = await agentHello();
    let json: unknown;
    try {
      json = JSON.parse(input.text);
    } catch {
      return; // https-json hands the site no JSON then: nothing of the agent's is read
    }
    checkAgentHello(json, leaf, { host: 'agent.example', port: 10809, key: KEY, nonce: NONCE });
  },
};

/** The hello with its CA certificate's DER bytes mutated (what OpenSSL parses and the checks then use). */
function caMutations(seed: TextSeed): fc.Arbitrary<TextInput> {
  const hello = JSON.parse(seed.text) as { caCert: string };
  const der = new X509Certificate(hello.caCert).raw;
  return byteOps(der.length, [], { stream: true, maxOps: 3 }).map((ops) => {
    const body = applyOps(der, ops)
      .toString('base64')
      .replace(/(.{64})/g, '$1\n');
    return {
      seed: 'hello (CA DER mutated)',
      text: JSON.stringify({ ...hello, caCert: `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n` }),
    };
  });
}

/** `nbd://HOST:PORT` as a person pastes what the agent printed. */
export const p2vUrlTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'p2v-url',
  seeds: async () => [
    textSeed('ipv4', 'nbd://192.168.1.20:10809'),
    textSeed('ipv6', 'nbd://[fe80::1]:10809/'),
    textSeed('name', 'nbd://agent.example.com:65534'),
  ],
  inputs: (seeds) => textInputs(seeds, ['[', ']', ':', '/', '//', '0', '65535', '99999', '%', '@', 'nbd', 'https']),
  run(input) {
    parseAgentUrl(input.text);
  },
};
