// A publisher written from docs/protocol.md alone, in another language than the agent
// (Node.js with the zeromq and @msgpack/msgpack packages). It asks the status socket for
// the model's input shape, sends good samples (one- and two-frame, labelled and not, a
// late label), one message of every rejection kind, reads the predictions, and checks the
// agent's counters. Exit status 0 when everything matches the document.
//
//   node node_publisher.js STATUS_ENDPOINT INGEST_ENDPOINT OUTPUT_ENDPOINT [COUNT]
"use strict";
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");

const [statusEndpoint, ingestEndpoint, outputEndpoint, countArg] = process.argv.slice(2);
const COUNT = parseInt(countArg || "200", 10);
const SENSOR = "node-1";

async function request(cmd) {
  const req = new zmq.Request({ receiveTimeout: 10000 });
  req.connect(statusEndpoint);
  await req.send(encode({ v: 1, type: "request", cmd, id: 7 }));
  const [reply] = await req.receive();
  req.close();
  const msg = decode(reply);
  if (!msg.ok || msg.id !== 7) throw new Error(`bad reply to ${cmd}: ${JSON.stringify(msg)}`);
  return msg.result;
}

function float32Le(values) {
  const buf = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => buf.writeFloatLE(v, i * 4));
  return new Uint8Array(buf);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const status = await request("status");
  const before = status.samples;
  const { input_shape: shape, num_classes: classes } = status.model;
  const size = shape.reduce((a, b) => a * b, 1);

  const predictions = new zmq.Subscriber();
  predictions.connect(outputEndpoint);
  predictions.subscribe("pred/");
  let predicted = 0;
  (async () => {
    for await (const [topic, body] of predictions) {
      const p = decode(body);
      if (p.type === "prediction" && topic.toString() === `pred/${SENSOR}`) predicted++;
    }
  })();

  // XPUB: wait for the agent's subscription (0x01 + topic) so that nothing is dropped
  const pub = new zmq.XPublisher();
  pub.connect(ingestEndpoint);
  const [subscription] = await pub.receive();
  if (subscription[0] !== 1) throw new Error("first XPUB message is not a subscription");
  await sleep(200);  // the prediction subscriber's own subscription

  let seq = 0;
  const sample = (extra = {}) => ({
    v: 1, type: "sample", sensor: SENSOR, seq: seq++, ts: Date.now() / 1000,
    dtype: "float32", shape,
    data: float32Le(Array.from({ length: size }, (_, i) => Math.sin(0.1 * i + seq))),
    ...extra,
  });
  for (let i = 0; i < COUNT; i++) {
    await pub.send(encode(sample(i % 4 === 0 ? { label: i % classes } : {})));
  }
  const unlabelled = sample();
  await pub.send(encode(unlabelled));
  await pub.send(encode({ v: 1, type: "label", sensor: SENSOR, seq: unlabelled.seq, label: 1 }));
  const lastGood = sample();
  await pub.send(["any-topic", encode(lastGood)]);  // the two-frame form
  const good = COUNT + 2;

  const bad = {
    duplicate: encode({ ...lastGood }),
    msgpack: Buffer.from([0x89, 0xa1, 0x76]),  // a map of 9 pairs, cut short
    not_map: encode([1, 2, 3]),
    version: encode(sample({ v: 2 })),
    type: encode(sample({ type: "sampel" })),
    field: encode((({ sensor, ...rest }) => rest)(sample())),
    dtype: encode(sample({ dtype: "complex64" })),
    shape: encode(sample({ shape: [shape[0] + 1, ...shape.slice(1)] })),
    size: encode(sample({ data: new Uint8Array(8) })),
    nonfinite: encode(sample({ data: float32Le(Array.from({ length: size }, () => NaN)) })),
    label: encode(sample({ label: classes })),
    oversized: Buffer.alloc(2 << 20, 0x41),
  };
  for (const msg of Object.values(bad)) await pub.send(msg);
  await pub.send(["a", "b", encode(sample())]);  // three frames

  const want = { ...Object.fromEntries(Object.keys(bad).map((k) => [k, 1])), frames: 1 };
  let after;
  for (let tries = 0; tries < 100; tries++) {  // up to 20 s for the agent to catch up
    await sleep(200);
    after = (await request("status")).samples;
    if (after.accepted - before.accepted >= good && predicted >= good) break;
  }
  const rejected = Object.fromEntries(Object.keys(want).map(
    (k) => [k, (after.rejected[k] || 0) - (before.rejected[k] || 0)]));
  const report = {
    accepted: after.accepted - before.accepted, predicted, good,
    feedback: after.feedback - before.feedback, rejected,
  };
  console.log(JSON.stringify(report));
  const ok = report.accepted === good && predicted === good && report.feedback === 1 &&
    Object.entries(want).every(([k, v]) => rejected[k] === v);
  pub.close();
  predictions.close();
  return ok;
}

main().then((ok) => process.exit(ok ? 0 : 1), (err) => { console.error(err); process.exit(2); });
