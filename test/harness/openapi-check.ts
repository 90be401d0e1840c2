import AjvModule from 'ajv';
import assert from 'node:assert/strict';

const Ajv = AjvModule.default ?? AjvModule;

type OpenApiDoc = {
  paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>>;
};

/**
 * Checks an injected response against the site's own OpenAPI document: the documented
 * status exists for that route and the body matches its schema. So the document cannot
 * drift from what the API really answers.
 */
export class OpenApiCheck {
  #ajv: InstanceType<typeof Ajv>;
  #doc: OpenApiDoc;

  constructor(doc: unknown) {
    this.#doc = doc as OpenApiDoc;
    this.#ajv = new Ajv({ strict: false, allErrors: true });
    this.#ajv.addFormat('binary', true);
    this.#ajv.addSchema(doc as object, 'openapi');
  }

  check(method: string, route: string, status: number, body: unknown): void {
    const op = this.#doc.paths[route]?.[method.toLowerCase()];
    assert.ok(op, `OpenAPI document has no ${method} ${route}`);
    const resp = op.responses?.[String(status)];
    assert.ok(resp, `OpenAPI document does not list status ${status} for ${method} ${route}`);
    if (!resp.content) return;
    const pointer = `openapi#/paths/${route.replace(/~/g, '~0').replace(/\//g, '~1')}/${method.toLowerCase()}/responses/${status}/content/application~1json/schema`;
    const validate = this.#ajv.compile({ $ref: pointer });
    assert.ok(
      validate(body),
      `${method} ${route} ${status} body does not match its schema: ${this.#ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`,
    );
  }
}
