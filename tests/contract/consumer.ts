// A client written against the types openapi-typescript generates from the served
// /openapi.json (tests/test_contract.py writes generated/api.d.ts, then runs
// `tsc --noEmit` with --strict). It compiles only if operations are typed by their
// operationIds, bodies and answers have their real shapes (not Record<string, never>),
// and the headers the API promises are declared.
import type { components, operations, paths } from "./generated/api";

type Schemas = components["schemas"];
type Json<Op extends keyof operations, Status extends keyof operations[Op]["responses"]> =
  operations[Op]["responses"][Status] extends { content: { "application/json": infer Body } } ? Body : never;

// a request body typed field by field
const request: operations["generateShort"]["requestBody"] extends { content: { "application/json": infer B } }
  ? B : never = { platform: "tiktok", topic: "Why octopuses have three hearts", duration_seconds: 20 };
// @ts-expect-error an unknown platform is not a GenerateRequest
const wrongPlatform: Schemas["GenerateRequest"] = { platform: "myspace", topic: "anything at all" };

// answers typed per status
function queued(answer: Json<"generateShort", 202>): string {
  const id: string = answer.job_id;
  const left: number = answer.credits_remaining;
  return `${id} queued, ${left} credits left`;
}
function failed(answer: Json<"generateShort", 402>): string | undefined {
  return answer.upgrade_url ?? answer.detail;
}

// the features of a plan are a typed object, not a bare map
function resolution(plans: Json<"listPlans", 200>): string[] {
  return plans.plans.map((plan: Schemas["Plan"]) => {
    const features: Schemas["PlanFeatures"] = plan.features;
    const width: number = features.width;
    const apiAccess: boolean = features.api_keys;
    const firstHighlight: string | undefined = features.highlights[0];
    return `${plan.tier}: ${width}x${features.height}${apiAccess ? " + API" : ""} ${firstHighlight ?? ""}`;
  });
}
// @ts-expect-error features has no such field
const missing: number = ({} as Schemas["PlanFeatures"]).framerate;

// headers a client reads to pace itself
type TooMany = operations["generateShort"]["responses"][429]["headers"];
const retryAfter: TooMany["Retry-After"] = "30";
const remaining: operations["listJobs"]["responses"][200]["headers"]["RateLimit-Remaining"] = "57";
const location: operations["generateShort"]["responses"][202]["headers"]["Location"] = "/v1/jobs/0b8e";

// a webhook receiver types what it is sent, and an endpoint's events are a closed set
function onEvent(event: Schemas["WebhookEvent"]): string {
  const kind: "render.completed" | "render.failed" | "batch.completed" | "credits.low" | "credits.expiring"
    | "subscription.updated" | "payment.failed" | "webhook.test" = event.type;
  return `${kind} ${event.id} at ${event.created}`;
}
const endpoint: Schemas["WebhookEndpointCreate"] = { url: "https://hooks.example.org/in", event_types: ["render.completed"] };
// @ts-expect-error not an event type
const unknownEvent: Schemas["WebhookEndpointCreate"] = { url: "https://hooks.example.org/in", event_types: ["video.exploded"] };
function secretOnce(created: Json<"createWebhookEndpoint", 201>): string {
  return created.secret;
}

// query and path parameters by name
const page: NonNullable<operations["listJobs"]["parameters"]["query"]> = { limit: 20 };
const job: operations["getJob"]["parameters"]["path"] = { job_id: "0b8e6c1d-4f2a-4d7e-9c3b-5a1f2e8d7c60" };
// routes map to the same operations
const sameOperation: paths["/v1/shorts/generate"]["post"] = {} as operations["generateShort"];

export { request, wrongPlatform, queued, failed, resolution, missing, retryAfter, remaining, location, page, job,
  sameOperation, onEvent, endpoint, unknownEvent, secretOnce };
