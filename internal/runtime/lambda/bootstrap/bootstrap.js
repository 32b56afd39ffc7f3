'use strict';
// Nimbus managed Node.js runtime.
//
// Speaks the AWS Lambda Runtime API at AWS_LAMBDA_RUNTIME_API with the standard
// library only: loads the handler named by _HANDLER ("file.function") from
// LAMBDA_TASK_ROOT, then calls it for each event, awaiting a returned promise
// or waiting for the callback of a (event, context, callback) handler.

const fs = require('fs');
const http = require('http');
const path = require('path');
const url = require('url');

const BASE = '/2018-06-01/runtime';
const addr = process.env.AWS_LAMBDA_RUNTIME_API || '';
const sep = addr.lastIndexOf(':');
const host = addr.slice(0, sep);
const port = Number(addr.slice(sep + 1));
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function call(method, p, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: BASE + p, agent, headers: headers || {} }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function postJSON(p, doc, extra) {
  const body = Buffer.from(JSON.stringify(doc));
  return call('POST', p, body, Object.assign({ 'Content-Type': 'application/json', 'Content-Length': body.length }, extra || {}));
}

function errorDoc(err) {
  if (err instanceof Error) {
    return {
      errorType: err.name || (err.constructor && err.constructor.name) || 'Error',
      errorMessage: err.message,
      stackTrace: String(err.stack || '').split('\n').slice(1).map((l) => l.trim()).filter(Boolean),
    };
  }
  if (typeof err === 'string') return { errorType: 'string', errorMessage: err };
  let msg;
  try { msg = JSON.stringify(err); } catch (e) { msg = String(err); }
  return { errorType: typeof err, errorMessage: msg };
}

class InitError extends Error {
  constructor(type, message, cause) {
    super(message);
    this.errorType = type;
    this.cause = cause;
  }
}

// location finds "file line N" in the report of a syntax error.
function location(err) {
  const m = /^(.+):(\d+)$/m.exec(String(err.stack || ''));
  return m ? ` (${path.basename(m[1])} line ${m[2]})` : '';
}

async function loadHandler() {
  const spec = process.env._HANDLER || 'handler.handler';
  const dot = spec.lastIndexOf('.');
  const modPath = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const base = path.resolve(root, modPath);
  const file = ['.js', '.cjs', '.mjs'].map((e) => base + e).find((f) => fs.existsSync(f));
  if (!file) {
    throw new InitError('Runtime.ImportModuleError', `Cannot find module '${modPath}' in ${root}`);
  }
  let mod;
  try {
    if (file.endsWith('.mjs')) {
      mod = await import(url.pathToFileURL(file).href);
    } else {
      try {
        mod = require(file);
      } catch (e) {
        if (e && e.code === 'ERR_REQUIRE_ESM') mod = await import(url.pathToFileURL(file).href);
        else throw e;
      }
    }
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new InitError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}${location(e)}`, e);
    }
    if (e && e.code === 'MODULE_NOT_FOUND') {
      throw new InitError('Runtime.ImportModuleError', `Error: ${e.message.split('\n')[0]}`, e);
    }
    const d = errorDoc(e);
    throw new InitError(d.errorType, `Error loading module '${modPath}': ${d.errorType}: ${d.errorMessage}`, e);
  }
  let fn = mod && mod[name];
  if (typeof fn !== 'function' && mod && mod.default) fn = mod.default[name];
  if (typeof fn !== 'function') {
    throw new InitError('Runtime.HandlerNotFound', `${spec} is undefined or not exported`);
  }
  return fn;
}

function makeContext(headers) {
  const env = process.env;
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  return {
    awsRequestId: headers['lambda-runtime-aws-request-id'] || '',
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'] || '',
    functionName: env.AWS_LAMBDA_FUNCTION_NAME || '',
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION || '',
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '',
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME || '',
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME || '',
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

function run(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(result);
    };
    context.done = callback;
    context.succeed = (r) => callback(null, r);
    context.fail = (e) => callback(e === undefined || e === null ? new Error('handler failed') : e);
    try {
      const r = handler.length >= 3 ? handler(event, context, callback) : handler(event, context);
      if (r && typeof r.then === 'function') r.then((v) => callback(null, v), (e) => callback(e));
      else if (handler.length < 3) callback(null, r);
    } catch (e) {
      callback(e);
    }
  });
}

async function main() {
  let handler;
  try {
    handler = await loadHandler();
  } catch (e) {
    const d = e instanceof InitError ? { errorType: e.errorType, errorMessage: e.message } : errorDoc(e);
    if (e instanceof InitError && e.cause) d.stackTrace = errorDoc(e.cause).stackTrace;
    process.stderr.write(`${d.errorType}: ${d.errorMessage}\n`);
    await postJSON('/init/error', d, { 'Lambda-Runtime-Function-Error-Type': d.errorType });
    process.exit(1);
  }
  for (;;) {
    const next = await call('GET', '/invocation/next');
    if (next.status !== 200) {
      process.stderr.write(`runtime API answered /next with ${next.status}; stopping\n`);
      process.exit(1);
    }
    const id = next.headers['lambda-runtime-aws-request-id'];
    if (next.headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'];
    const p = `/invocation/${id}`;
    let out;
    try {
      const event = next.body.length ? JSON.parse(next.body.toString('utf8')) : null;
      const result = await run(handler, event, makeContext(next.headers));
      out = JSON.stringify(result === undefined ? null : result);
    } catch (e) {
      const d = errorDoc(e);
      process.stderr.write(`[ERROR] ${d.errorType}: ${d.errorMessage}\n`);
      await postJSON(p + '/error', d, { 'Lambda-Runtime-Function-Error-Type': d.errorType });
      continue;
    }
    const body = Buffer.from(out);
    await call('POST', p + '/response', body, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  }
}

main().catch((e) => {
  process.stderr.write(`nimbus runtime: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
