// The edge cases docs/protocol.md states, checked by a client written from the document
// alone (Node.js, as node_publisher.js): sequence numbers (gap, restart, the wrap from
// 2^64-1 to 0), the limits (sensor characters, string bytes, array items, map keys, the
// status request size), labels (nil, boolean, late and unmatched), every dtype, the
// timestamp extension, prediction fields, and the status socket's REQ and DEALER forms
// with their error codes. Prints one JSON line per check that failed; exit status 0 when
// the agent does everything the document says.
//
//   node node_edges.js STATUS_ENDPOINT INGEST_ENDPOINT OUTPUT_ENDPOINT
"use strict";
const zmq = require("zeromq");
const { Encoder, Decoder, decode } = require("@msgpack/msgpack");

const [statusEndpoint, ingestEndpoint, outputEndpoint] = process.argv.slice(2);
const encoder = new Encoder({ useBigInt64: true });  // seq up to 2^64-1 as msgpack uint64
const encode = (obj) => encoder.encode(obj);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const failures = [];
const expect = (what, got, want) => {
  if (JSON.stringify(got) !== JSON.stringify(want)) failures.push({ what, got, want });
};

async function rawRequest(frames, kind = "req") {
  const sock = kind === "req" ? new zmq.Request({ receiveTimeout: 10000 })
    : new zmq.Dealer({ receiveTimeout: 10000 });
  sock.connect(statusEndpoint);
  await sock.send(kind === "req" ? frames : [Buffer.alloc(0), frames]);
  const reply = await sock.receive();
  sock.close();
  return reply;  // REQ: [map]; DEALER: [empty, map]
}

async function request(cmd, id = 7) {
  const [reply] = await rawRequest(encode({ v: 1, type: "request", cmd, id }));
  return decode(reply);
}

function bytesOf(dtype, size, value) {
  const width = { float32: 4, float64: 8, float16: 2, int8: 1, uint8: 1, int16: 2,
    uint16: 2, int32: 4 }[dtype];
  const buf = Buffer.alloc(size * width);
  for (let i = 0; i < size; i++) {
    const v = typeof value === "function" ? value(i) : value;
    switch (dtype) {
      case "float32": buf.writeFloatLE(v, i * 4); break;
      case "float64": buf.writeDoubleLE(v, i * 8); break;
      case "float16": buf.writeUInt16LE(0x3c00, i * 2); break;  // 1.0
      case "int8": buf.writeInt8(v % 100, i); break;
      case "uint8": buf.writeUInt8(Math.abs(v) % 200, i); break;
      case "int16": buf.writeInt16LE(v % 1000, i * 2); break;
      case "uint16": buf.writeUInt16LE(Math.abs(v) % 1000, i * 2); break;
      case "int32": buf.writeInt32LE(v % 1000, i * 4); break;
      default: throw new Error(dtype);
    }
  }
  return new Uint8Array(buf);
}

async function main() {
  const status = (await request("status")).result;
  const before = status.samples;
  const { input_shape: shape, num_classes: classes, label_names: names } = status.model;
  const size = shape.reduce((a, b) => a * b, 1);

  const predictions = new zmq.Subscriber();
  predictions.connect(outputEndpoint);
  predictions.subscribe("pred/edge-");
  const preds = [];
  (async () => {
    const decoder = new Decoder({ useBigInt64: true });  // seq beyond 2^53 stays exact
    for await (const [topic, body] of predictions) {
      preds.push([topic.toString(), decoder.decode(body)]);
    }
  })();
  const pub = new zmq.XPublisher();
  pub.connect(ingestEndpoint);
  await pub.receive();  // the agent's subscription: nothing sent before it is lost
  await sleep(200);

  const sample = (sensor, seq, extra = {}) => ({
    v: 1, type: "sample", sensor, seq, ts: 1732350000.25, dtype: "float32", shape,
    data: bytesOf("float32", size, (i) => Math.sin(0.1 * i)), ...extra,
  });
  let good = 0;
  let labelled = 0;
  const send = async (msg, ok = true) => {
    await pub.send(encode(msg));
    if (ok) good++;
    if (ok && msg.type === "sample" && msg.label != null) labelled++;
  };
  // sequence numbers: equal -> duplicate, +4 -> a gap of 3, smaller -> a restart
  await send(sample("edge-seq", 5));
  await send(sample("edge-seq", 5), false);
  await send(sample("edge-seq", 9));
  await send(sample("edge-seq", 3));
  // seq is 0..2^64-1; after 2^64-1 a publisher's next (0) is smaller: a restart
  await send(sample("edge-wrap", 2n ** 64n - 2n));
  await send(sample("edge-wrap", 2n ** 64n - 1n));
  await send(sample("edge-wrap", 0));
  await send(sample("edge-wrap", 1));
  // sensor: 1..64 characters, which may take 256 bytes of UTF-8
  await send(sample("edge-" + "\u{1F600}".repeat(59), 0));  // 64 characters, 241 bytes
  await send(sample("edge-" + "x".repeat(60), 0), false);  // 65 characters: field
  await send(sample("", 0), false);  // empty: field
  // labels: nil is no label; a boolean is no integer (a rejected sample keeps the seq)
  await send(sample("edge-lab", 0, { label: null }));
  await send(sample("edge-lab", 1, { label: true }), false);  // field
  await send(sample("edge-lab", 1, { label: classes - 1 }));
  // limits, unknown keys included: 256-byte strings, 4-item arrays, 32 keys
  await send(sample("edge-lim", 0, { note: "n".repeat(256), list: [1, 2, 3, 4] }));
  await send(sample("edge-lim", 1, { note: "n".repeat(257) }), false);  // msgpack
  await send(sample("edge-lim", 1, { list: [1, 2, 3, 4, 5] }), false);  // msgpack
  const keys = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
  await send(sample("edge-lim", 1, keys(32 - 8)));  // 8 keys of a sample + 24: 32
  await send(sample("edge-lim", 2, keys(33 - 8)), false);  // 33 keys: msgpack
  await send(sample("edge-lim", 2, { when: new Date() }), false);  // timestamp ext: msgpack
  await send(sample("edge-lim", 2, { v: true }), false);  // a boolean 1: version
  await send(sample("edge-lim", 2, { ts: 1732350000 }));  // ts may be an integer
  // every dtype; float64 beyond float32's range is non-finite
  const dtypes = ["float64", "float16", "int8", "uint8", "int16", "uint16", "int32"];
  for (const [i, dtype] of dtypes.entries()) {
    await send(sample("edge-dt", i, { dtype, data: bytesOf(dtype, size, (j) => j + 1) }));
  }
  await send(sample("edge-dt", 7, { dtype: "float64", data: bytesOf("float64", size, 1e39) }),
    false);  // nonfinite
  // a late label for a sample sent without one, and one for a sample never sent
  await send({ v: 1, type: "label", sensor: "edge-lab", seq: 0, label: 0 });
  await send({ v: 1, type: "label", sensor: "edge-lab", seq: 999, label: 0 });

  const samplesSent = good - 2;
  let after;
  for (let tries = 0; tries < 100; tries++) {
    await sleep(200);
    after = (await request("status")).result.samples;
    if (after.accepted - before.accepted >= samplesSent && preds.length >= samplesSent) break;
  }
  const delta = (k) => after[k] - before[k];
  const rejected = (k) => (after.rejected[k] || 0) - (before.rejected[k] || 0);
  expect("accepted", delta("accepted"), samplesSent);
  expect("accepted_labelled", delta("accepted_labelled"), labelled);
  expect("feedback", [delta("feedback"), delta("feedback_unmatched")], [2, 1]);
  expect("seq", [delta("seq_gaps"), delta("seq_missing"), delta("seq_restarts")], [1, 3, 2]);
  expect("rejected", ["duplicate", "field", "msgpack", "version", "nonfinite"].map(rejected),
    [1, 3, 4, 1, 1]);
  expect("predictions", preds.length, samplesSent);
  for (const [topic, p] of preds) {
    const fine = topic === `pred/${p.sensor}` && p.v === 1 && p.type === "prediction" &&
      names[p.class] === p.class_name && p.confidence >= 0 && p.confidence <= 1 &&
      /^[0-9a-f]{12}$/.test(p.model_version) && p.latency_ms >= 0 &&
      (p.sensor !== "edge-lab" || p.label === (p.seq === 1 ? classes - 1 : null));
    if (!fine) failures.push({ what: "prediction", got: p });
  }
  const wrapped = preds.filter(([, p]) => p.sensor === "edge-wrap").map(([, p]) => String(p.seq));
  expect("wrap seqs", wrapped, [String(2n ** 64n - 2n), String(2n ** 64n - 1n), "0", "1"]);

  // the status socket: DEALER (empty frame first), a string id, the error codes
  const [empty, body] = await rawRequest(encode({ v: 1, type: "request", cmd: "ping", id: "a" }),
    "dealer");
  const pong = decode(body);
  expect("dealer", [empty.length, pong.id, pong.result.pong], [0, "a", true]);
  const code = async (frame) => {
    const reply = decode((await rawRequest(frame))[0]);
    return reply.ok ? "ok" : reply.error.code;
  };
  expect("request codes", [
    await code(encode({ v: 1, type: "request", cmd: "dance" })),
    await code(encode({ v: 2, type: "request", cmd: "ping" })),
    await code(encode([1, 2])),
    await code(Buffer.from([0x81, 0xa1])),
    await code(encode({ v: 1, type: "request", cmd: "ping", pad: "p".repeat(250) })),
    await code(encode({ v: 1, type: "request", cmd: "ping", id: true })),
  ], ["field", "version", "not_map", "msgpack", "ok", "field"]);
  const big = encode({ v: 1, type: "request", cmd: "ping",
    ...Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`p${i}`, "p".repeat(250)])) });
  expect("request over 4096 bytes", [big.length > 4096, await code(big)], [true, "oversized"]);
  const control = (await request("status")).result.control.errors;
  expect("control.errors counted", ["field", "version", "not_map", "msgpack", "oversized"]
    .every((k) => control[k] >= 1), true);

  pub.close();
  predictions.close();
  for (const f of failures) console.log(JSON.stringify(f, (k, v) =>
    typeof v === "bigint" ? String(v) : v));
  return failures.length === 0;
}

main().then((ok) => process.exit(ok ? 0 : 1), (err) => { console.error(err); process.exit(2); });
