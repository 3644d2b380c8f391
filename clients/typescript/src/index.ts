/**
 * A typed client for Carebase: `paths` generated from the committed bundles
 * (generated/openapi/core.yaml and telemetry.yaml) by openapi-typescript, requests by
 * openapi-fetch, and the few helpers every caller needs — the problem document, ETag/If-Match
 * and Idempotency-Key. Regenerate with `make client`.
 */
import createClient, { type Client, type Middleware } from "openapi-fetch";

import type { components as CoreComponents, paths as CorePaths } from "./generated/core.js";
import type { paths as TelemetryPaths } from "./generated/telemetry.js";

export type { CorePaths, TelemetryPaths };
export type CoreSchemas = CoreComponents["schemas"];
/** Every error Carebase answers: RFC 9457, with `code`, `request_id` and, for validation, `errors`. */
export type Problem = CoreSchemas["Problem"];

export interface ClientOptions {
  baseUrl: string;
  /** A bearer token, or a function that returns the current one (after a refresh, say). */
  token?: string | (() => string | undefined);
  fetch?: typeof globalThis.fetch;
}

function bearer(token: ClientOptions["token"]): Middleware {
  return {
    onRequest({ request }) {
      const value = typeof token === "function" ? token() : token;
      if (value) request.headers.set("Authorization", `Bearer ${value}`);
      return request;
    },
  };
}

function client<Paths extends {}>(options: ClientOptions): Client<Paths> {
  const made = createClient<Paths>({
    baseUrl: options.baseUrl,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  made.use(bearer(options.token));
  return made;
}

/** The core API (organizations, patients, scheduling, forms, broadcasts, …). */
export function createCoreClient(options: ClientOptions): Client<CorePaths> {
  return client<CorePaths>(options);
}

/** The telemetry API (analytics, consent, media, pose, dashboards). */
export function createTelemetryClient(options: ClientOptions): Client<TelemetryPaths> {
  return client<TelemetryPaths>(options);
}

/** Whether an error body is Carebase's problem document. */
export function isProblem(value: unknown): value is Problem {
  if (typeof value !== "object" || value === null) return false;
  const fields = value as Record<string, unknown>;
  return (
    typeof fields.type === "string" &&
    typeof fields.title === "string" &&
    typeof fields.status === "number"
  );
}

/** A problem answer, thrown by `orThrow`. */
export class ProblemError extends Error {
  constructor(
    readonly problem: Problem,
    readonly response: Response,
  ) {
    super(`${problem.status} ${problem.code}: ${problem.detail ?? problem.title}`);
    this.name = "ProblemError";
  }
}

/** The data of a successful answer; a `ProblemError` otherwise. */
export function orThrow<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.error !== undefined || result.data === undefined) {
    if (isProblem(result.error)) throw new ProblemError(result.error, result.response);
    throw new Error(`HTTP ${result.response.status} without a problem document`);
  }
  return result.data;
}

/** The ETag of a single resource's answer, to send back as `If-Match` with a change. */
export function etagOf(response: Response): string {
  const etag = response.headers.get("ETag");
  if (!etag) throw new Error(`no ETag on ${response.url}`);
  return etag;
}

/** A fresh `Idempotency-Key` for a create: reuse it (with the same body) to retry safely. */
export function idempotencyKey(): string {
  return globalThis.crypto.randomUUID();
}
