// A minimal OTLP/HTTP trace receiver for tests: `POST /v1/traces` with the JSON encoding
// (OTEL_EXPORTER_OTLP_PROTOCOL=http/json), as the OTLP specification defines it
// (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding: trace and span ids as hex
// strings, enums as integers, 64-bit integers as strings or numbers). Every span received is
// kept, flattened, for a test to read.

import http from "node:http";

/** An OTLP `AnyValue` as a plain JavaScript value. */
function plain(value = {}) {
  if ("stringValue" in value) return value.stringValue;
  if ("boolValue" in value) return value.boolValue;
  if ("intValue" in value) return Number(value.intValue);
  if ("doubleValue" in value) return Number(value.doubleValue);
  if ("arrayValue" in value) return (value.arrayValue.values ?? []).map(plain);
  if ("kvlistValue" in value) return attributes(value.kvlistValue.values);
  return null;
}

/** OTLP `KeyValue`s as an object. */
function attributes(list = []) {
  return Object.fromEntries(list.map(({ key, value }) => [key, plain(value)]));
}

/** One `ExportTraceServiceRequest` as flat spans. */
function spansOf(request) {
  const spans = [];
  for (const resourceSpans of request.resourceSpans ?? []) {
    const resource = attributes(resourceSpans.resource?.attributes);
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        spans.push({
          service: resource["service.name"],
          scope: scopeSpans.scope?.name,
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId || "",
          name: span.name,
          kind: span.kind,
          start: BigInt(span.startTimeUnixNano ?? 0),
          end: BigInt(span.endTimeUnixNano ?? 0),
          attributes: attributes(span.attributes),
          events: (span.events ?? []).map((event) => ({ name: event.name, attributes: attributes(event.attributes) })),
        });
      }
    }
  }
  return spans;
}

/** Starts the receiver on a free loopback port: `url` (the OTLP base), `spans`, `close()`. */
export async function startOtlpReceiver() {
  const spans = [];
  const refused = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const type = req.headers["content-type"] ?? "";
      if (req.method !== "POST" || req.url !== "/v1/traces" || !type.startsWith("application/json")) {
        refused.push(`${req.method} ${req.url} ${type}`);
        res.writeHead(req.url === "/v1/traces" ? 415 : 404).end();
        return;
      }
      try {
        spans.push(...spansOf(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
      } catch (error) {
        refused.push(`unreadable: ${error.message}`);
        res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ message: error.message }));
        return;
      }
      // An empty ExportTraceServiceResponse: everything accepted.
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    spans,
    refused,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
