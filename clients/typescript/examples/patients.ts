/**
 * Sign in, list patients, create one with an idempotency key (and retry it safely), change it
 * with If-Match, and meet the 412 problem a stale ETag gets. Type-checked in CI; run against a
 * live server by tests/integration/test_typescript_client.py:
 *
 *   CAREBASE_URL=http://localhost:9000 CAREBASE_EMAIL=… CAREBASE_PASSWORD=… \
 *     node dist/examples/patients.js
 */
import { createCoreClient, etagOf, idempotencyKey, isProblem, orThrow } from "../src/index.js";

const baseUrl = process.env.CAREBASE_URL ?? "http://localhost:9000";
const email = process.env.CAREBASE_EMAIL ?? "";
const password = process.env.CAREBASE_PASSWORD ?? "";

let token: string | undefined;
const core = createCoreClient({ baseUrl, token: () => token });

const session = orThrow(await core.POST("/v1/auth/login", { body: { email, password } }));
token = session.access_token;

const listed = orThrow(
  await core.GET("/v1/patients", { params: { query: { page: 1, page_size: 10 } } }),
);

const key = idempotencyKey();
const body = { given_name: "Ana", family_name: "Kovač" };
const created = await core.POST("/v1/patients", {
  params: { header: { "Idempotency-Key": key } },
  body,
});
const patient = orThrow(created);
// A retry with the same key and body is the same answer, not a second patient.
const retried = orThrow(
  await core.POST("/v1/patients", { params: { header: { "Idempotency-Key": key } }, body }),
);

const etag = etagOf(created.response);
const changed = await core.PATCH("/v1/patients/{patient_id}", {
  params: { path: { patient_id: patient.id }, header: { "If-Match": etag } },
  body: { family_name: "Horvat" },
});
const updated = orThrow(changed);

// The first ETag is stale now: the server answers 412 with a problem document.
const stale = await core.PATCH("/v1/patients/{patient_id}", {
  params: { path: { patient_id: patient.id }, header: { "If-Match": etag } },
  body: { family_name: "Babić" },
});
if (stale.response.status !== 412 || !isProblem(stale.error)) {
  throw new Error(`expected a 412 problem, got ${stale.response.status}`);
}

console.log(
  JSON.stringify({
    listed: listed.meta.total,
    created: patient.id,
    same_on_retry: retried.id === patient.id,
    family_name: updated.family_name,
    stale: { status: stale.error.status, code: stale.error.code },
  }),
);
