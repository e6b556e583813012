#!/usr/bin/env node
// Exercise a JobService endpoint with Google's official Node client
// (@google-cloud/aiplatform v1.JobServiceClient) over plaintext gRPC.
// Prints `OK <step> ...` or `FAIL <step> <error>` per step; exits 1 on any FAIL.
//
//   node node_client.js --host 127.0.0.1:PORT [--wait] [--project P] [--location L]
//                       [--input gs://...] [--output gs://...]
'use strict';

// No credentials are used on a plaintext channel; stop google-auth-library
// from probing the GCE metadata server (an off-machine address) for them.
process.env.METADATA_SERVER_DETECTION = process.env.METADATA_SERVER_DETECTION || 'none';

const {v1} = require('@google-cloud/aiplatform');
const grpc = require('@grpc/grpc-js');

const MODEL = 'publishers/google/models/gemini-2.0-flash-001';
const TERMINAL = new Set([
  'JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED',
  'JOB_STATE_EXPIRED', 'JOB_STATE_PARTIALLY_SUCCEEDED',
]);
const NOT_FOUND = 5;

function parseArgs(argv) {
  const a = {
    host: null, project: 'local-project', location: 'us-central1',
    input: 'gs://vertex-batch-demo/input/prompts.jsonl',
    output: 'gs://vertex-batch-demo/output', wait: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const eq = k.indexOf('=');
    const key = (eq >= 0 ? k.slice(0, eq) : k).replace(/^--/, '');
    if (key === 'wait') { a.wait = true; continue; }
    if (key === 'help' || key === 'h') {
      console.log('usage: node node_client.js --host 127.0.0.1:PORT [--wait] [--project P] ' +
        '[--location L] [--input gs://..] [--output gs://..]');
      process.exit(0);
    }
    if (!(key in a)) throw new Error(`unknown flag ${k}`);
    a[key] = eq >= 0 ? k.slice(eq + 1) : argv[++i];
  }
  if (!a.host) throw new Error('--host 127.0.0.1:PORT is required');
  return a;
}

let failures = 0;
async function step(name, fn) {
  try {
    const [detail, value] = await fn();
    console.log(`OK ${name} ${detail}`);
    return value;
  } catch (e) {
    failures++;
    console.log(`FAIL ${name} ${(e && e.stack ? e.message : String(e)).replace(/\n/g, ' ')}` +
      (e && e.code !== undefined ? ` (code ${e.code})` : ''));
    return undefined;
  }
}
function check(cond, msg) { if (!cond) throw new Error(msg); }
const sleep = ms => new Promise(r => setTimeout(r, ms));
const num = v => (v && v.numberValue !== undefined ? v.numberValue : undefined);

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const idx = args.host.lastIndexOf(':');
  const apiEndpoint = args.host.slice(0, idx);
  const port = Number(args.host.slice(idx + 1));
  const parent = `projects/${args.project}/locations/${args.location}`;
  const client = new v1.JobServiceClient({
    apiEndpoint, port, sslCreds: grpc.credentials.createInsecure(),
    // gax asks auth for the universe domain before every stub; naming it here
    // keeps google-auth-library from looking for ADC / the metadata server.
    universeDomain: 'googleapis.com',
  });

  const newJob = displayName => ({
    displayName,
    model: MODEL,
    inputConfig: {instancesFormat: 'jsonl', gcsSource: {uris: [args.input]}},
    outputConfig: {predictionsFormat: 'jsonl', gcsDestination: {outputUriPrefix: args.output}},
    // google.protobuf.Value in protobufjs object form (not plain JSON).
    modelParameters: {structValue: {fields: {
      temperature: {numberValue: 0.2}, maxOutputTokens: {numberValue: 200},
    }}},
    labels: {tool: 'wire-node', team: 'vertex-batch'},
  });

  try {
    // 1. create
    const job = await step('create', async () => {
      const [j] = await client.createBatchPredictionJob({parent, batchPredictionJob: newJob('wire-node')});
      check(j.name.startsWith(parent + '/batchPredictionJobs/'), `name ${j.name}`);
      check(/^\d+$/.test(j.name.split('/').pop()), `non-numeric id in ${j.name}`);
      check(j.displayName === 'wire-node', `displayName ${j.displayName}`);
      check(j.model === MODEL, `model ${j.model}`);
      check(j.labels.tool === 'wire-node' && j.labels.team === 'vertex-batch',
        `labels ${JSON.stringify(j.labels)}`);
      check(j.inputConfig.gcsSource.uris[0] === args.input, 'input uris not echoed');
      check(j.outputConfig.gcsDestination.outputUriPrefix === args.output, 'output prefix not echoed');
      const f = ((j.modelParameters || {}).structValue || {}).fields || {};
      check(num(f.temperature) === 0.2 && num(f.maxOutputTokens) === 200,
        `modelParameters ${JSON.stringify(j.modelParameters)}`);
      check(j.createTime && Number(j.createTime.seconds) > 0, 'createTime unset');
      return [`name=${j.name} state=${j.state}`, j];
    });
    if (!job) {
      console.log('FAIL abort create failed; nothing else to do');
      return 1;
    }
    const name = job.name;

    // 2. get
    await step('get', async () => {
      const [j] = await client.getBatchPredictionJob({name});
      check(j.name === name, `got ${j.name}`);
      return [`state=${j.state}`];
    });

    // 2b. wait until terminal
    if (args.wait) {
      await step('wait', async () => {
        const deadline = Date.now() + 60000;
        for (;;) {
          const [j] = await client.getBatchPredictionJob({name});
          if (TERMINAL.has(j.state)) {
            let extra = '';
            const oi = j.outputInfo || {};
            if (oi.gcsOutputDirectory) extra += ` output=${oi.gcsOutputDirectory}`;
            const cs = j.completionStats || {};
            extra += ` stats=${cs.successfulCount || 0}/${cs.failedCount || 0}/${cs.incompleteCount || 0}`;
            if (j.error && j.error.message) extra += ` error=${JSON.stringify(j.error.message)}`;
            return [`state=${j.state}${extra}`];
          }
          if (Date.now() > deadline) throw new Error(`still ${j.state} after 60 s`);
          await sleep(1000);
        }
      });
    }

    // 3. list: one page of 2 (autoPaginate off), then everything (auto-paginated)
    await step('list_page', async () => {
      const [jobs, nextRequest, raw] = await client.listBatchPredictionJobs(
        {parent, pageSize: 2}, {autoPaginate: false});
      check(jobs.length <= 2, `pageSize=2 returned ${jobs.length}`);
      return [`first_page=${jobs.length} next_page_token=${JSON.stringify(raw.nextPageToken)} ` +
        `next_request=${nextRequest ? 'yes' : 'no'}`];
    });
    await step('list_all', async () => {
      // The async iterator follows next_page_token itself (pages of 2).
      const names = [];
      for await (const j of client.listBatchPredictionJobsAsync({parent, pageSize: 2}, {autoPaginate: false})) names.push(j.name);
      check(names.includes(name), `${name} missing from list`);
      check(new Set(names).size === names.length, 'duplicate names across pages');
      return [`total=${names.length}`];
    });
    await step('list_filter', async () => {
      const [jobs] = await client.listBatchPredictionJobs({parent, filter: 'state=JOB_STATE_SUCCEEDED'});
      const bad = jobs.filter(j => j.state !== 'JOB_STATE_SUCCEEDED').map(j => j.name);
      check(bad.length === 0, `non-SUCCEEDED jobs returned: ${bad}`);
      return [`succeeded=${jobs.length} includes_first=${jobs.some(j => j.name === name)}`];
    });

    // 4. cancel a second job, created for the purpose
    await step('cancel', async () => {
      const [j2] = await client.createBatchPredictionJob({parent, batchPredictionJob: newJob('wire-node-cancel')});
      await client.cancelBatchPredictionJob({name: j2.name});
      const [after] = await client.getBatchPredictionJob({name: j2.name});
      check(after.state === 'JOB_STATE_CANCELLING' || after.state === 'JOB_STATE_CANCELLED',
        `state after cancel ${after.state}`);
      return [`name=${j2.name} state=${after.state}`];
    });

    // 5. delete the first job (an LRO)
    await step('delete', async () => {
      const [operation] = await client.deleteBatchPredictionJob({name});
      const timeout = new Promise((_, rej) => setTimeout(() => rej(new Error('LRO timeout (30 s)')), 30000));
      const [result, metadata, final] = await Promise.race([operation.promise(), timeout]);
      try {
        await client.getBatchPredictionJob({name});
        throw new Error('job still there after delete');
      } catch (e) {
        if (e.code !== NOT_FOUND) throw e;
      }
      const mdType = metadata && metadata.constructor ? metadata.constructor.name : String(metadata);
      return [`operation=${operation.name} done=${final && final.done} ` +
        `result=${result && result.constructor ? result.constructor.name : String(result)} metadata=${mdType}`];
    });

    // 6. unknown id -> NOT_FOUND
    await step('get_unknown', async () => {
      try {
        await client.getBatchPredictionJob({name: `${parent}/batchPredictionJobs/999999999999999999`});
      } catch (e) {
        if (e.code === NOT_FOUND) return [`NOT_FOUND ${JSON.stringify(e.details)}`];
        throw e;
      }
      throw new Error('expected NOT_FOUND, got a job');
    });
  } finally {
    await client.close();
  }
  return failures ? 1 : 0;
}

main().then(code => process.exit(code), e => {
  console.log(`FAIL main ${e.message}`);
  process.exit(1);
});
