// gRPC-Web against the real clued with @connectrpc/connect-web's gRPC-Web transport under
// Node (its fetch: HTTP/1.1), messages built at run time from clued's descriptor set.
// Driven by test_grpc_web_node.py: CLUED_ADDR, CLUED_TOKEN, CLUED_DESCRIPTORS; NODE_PATH
// points at the installed packages. Prints "ok <name>" per check, exits non-zero on failure.

const fs = require("fs");
const assert = require("assert");
const { createClient, ConnectError, Code } = require("@connectrpc/connect");
const { createGrpcWebTransport } = require("@connectrpc/connect-web");
const { createFileRegistry, fromBinary } = require("@bufbuild/protobuf");
const { FileDescriptorSetSchema } = require("@bufbuild/protobuf/wkt");

const addr = process.env.CLUED_ADDR;
const token = process.env.CLUED_TOKEN;
const reg = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, fs.readFileSync(process.env.CLUED_DESCRIPTORS)),
);

const transport = (opts = {}) =>
  createGrpcWebTransport({ baseUrl: `http://${addr}`, useBinaryFormat: true, ...opts });
const auth = { headers: { authorization: `Bearer ${token}` } };

async function expectCode(code, fn) {
  try {
    await fn();
  } catch (e) {
    const ce = ConnectError.from(e);
    assert.strictEqual(ce.code, code, `wanted ${Code[code]}, got ${Code[ce.code]}: ${ce.message}`);
    return ce;
  }
  throw new Error(`wanted ${Code[code]}, the call succeeded`);
}

const checks = {
  async unary() {
    const health = createClient(reg.getService("grpc.health.v1.Health"), transport());
    const r = await health.check({ service: "" });
    assert.strictEqual(r.status, 1); // SERVING
  },

  async error_trailers() {
    const health = createClient(reg.getService("grpc.health.v1.Health"), transport());
    const e = await expectCode(Code.NotFound, () => health.check({ service: "no.such.Service" }));
    assert.ok(e.rawMessage.includes("no.such.Service"), e.rawMessage);
  },

  async unauthenticated() {
    const admin = createClient(reg.getService("clue.v1.AdminService"), transport());
    await expectCode(Code.Unauthenticated, () => admin.listUnits({}));
    const bad = { headers: { authorization: "Bearer ct_" + "0".repeat(64) } };
    await expectCode(Code.Unauthenticated, () => admin.listUnits({}, bad));
  },

  async authenticated() {
    const admin = createClient(reg.getService("clue.v1.AdminService"), transport());
    const r = await admin.listUnits({}, auth);
    assert.ok(r.units.some((u) => u.code === "ADM"), JSON.stringify(r.units.map((u) => u.code)));
  },

  async over_limit() {
    // clued runs with --max-message-bytes 65536 here.
    const admin = createClient(reg.getService("clue.v1.AdminService"), transport());
    const e = await expectCode(Code.ResourceExhausted, () =>
      admin.createUnit({ kind: 1, code: "RBIG", name: "x".repeat(100000) }, auth),
    );
    assert.ok(/limit/.test(e.rawMessage), e.rawMessage);
    // The connection and the server go on.
    await admin.listUnits({}, auth);
  },

  async deadline() {
    const admin = createClient(reg.getService("clue.v1.AdminService"), transport());
    const r = await admin.listUnits({}, { ...auth, timeoutMs: 5000 });
    assert.ok(r.units.length > 0);
  },

  async server_streaming() {
    const t = transport();
    const audit = createClient(reg.getService("clue.v1.AuditService"), t);
    const admin = createClient(reg.getService("clue.v1.AdminService"), t);
    const ac = new AbortController();
    const seen = [];
    const stream = audit.watchEvents({ afterSeq: 0n }, { ...auth, signal: ac.signal });
    let created = false;
    try {
      for await (const ev of stream) {
        seen.push(ev);
        // The bootstrap's events replayed; then one made now arrives live.
        if (!created && seen.length >= 3) {
          created = true;
          await admin.createUnit({ kind: 1, code: "RWEB", name: "room web" }, auth);
        }
        if (ev.action === "unit.create" && ev.detailsJson.includes("RWEB")) break;
      }
    } finally {
      ac.abort();
    }
    assert.ok(seen.length >= 4, `events seen: ${seen.length}`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i].seq > seen[i - 1].seq);
  },

  async json_refused() {
    // connect-web's other format is JSON (+json), which clued does not serve: a clear refusal.
    const health = createClient(reg.getService("grpc.health.v1.Health"), transport({ useBinaryFormat: false }));
    let failed = false;
    try {
      await health.check({ service: "" });
    } catch (e) {
      failed = true;
    }
    assert.ok(failed, "a +json call succeeded");
  },
};

(async () => {
  let failed = 0;
  for (const [name, fn] of Object.entries(checks)) {
    try {
      await fn();
      console.log(`ok ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    }
  }
  process.exit(failed ? 1 : 0);
})();
