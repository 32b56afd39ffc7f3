"""Nimbus managed Python runtime.

Speaks the AWS Lambda Runtime API at AWS_LAMBDA_RUNTIME_API with the standard
library only: imports the handler named by _HANDLER ("file.function") from
LAMBDA_TASK_ROOT, then calls handler(event, context) for each event.
"""

import http.client
import importlib
import json
import os
import sys
import time
import traceback

BASE = "/2018-06-01/runtime"


class Client:
    def __init__(self, addr):
        host, _, port = addr.rpartition(":")
        self.host, self.port = host, int(port)
        self.conn = None

    def call(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port)
            try:
                self.conn.request(method, BASE + path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def post_json(self, path, doc, headers=None):
        body = json.dumps(doc).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.call("POST", path, body, h)


class InitError(Exception):
    def __init__(self, error_type, message, trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace or []


class Context:
    def __init__(self, request_id, deadline_ms, arn, trace_id):
        env = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.trace_id = trace_id
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def stack(tb):
    return [line.rstrip("\n") for line in traceback.format_list(traceback.extract_tb(tb))]


def load_handler():
    spec = os.environ.get("_HANDLER") or "handler.handler"
    module_path, _, name = spec.rpartition(".")
    module_name = module_path.replace("/", ".")
    root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as e:
        raise InitError(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '%s': %s: %s (%s line %s)"
            % (module_name, type(e).__name__, e.msg, os.path.basename(e.filename or "?"), e.lineno),
            stack(e.__traceback__),
        )
    except ImportError as e:
        raise InitError(
            "Runtime.ImportModuleError",
            "Unable to import module '%s': %s" % (module_name, e),
            stack(e.__traceback__),
        )
    except Exception as e:
        raise InitError(
            type(e).__name__,
            "Error importing module '%s': %s: %s" % (module_name, type(e).__name__, e),
            stack(e.__traceback__),
        )
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise InitError(
            "Runtime.HandlerNotFound",
            "Handler '%s' missing on module '%s'" % (name, module_name),
        )
    return fn


def main():
    client = Client(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler()
    except InitError as e:
        sys.stderr.write("%s: %s\n" % (e.error_type, e.message))
        client.post_json(
            "/init/error",
            {"errorType": e.error_type, "errorMessage": e.message, "stackTrace": e.trace},
            {"Lambda-Runtime-Function-Error-Type": e.error_type},
        )
        sys.exit(1)

    while True:
        resp, body = client.call("GET", "/invocation/next")
        if resp.status != 200:
            sys.stderr.write("runtime API answered /next with %d; stopping\n" % resp.status)
            sys.exit(1)
        request_id = resp.getheader("Lambda-Runtime-Aws-Request-Id", "")
        trace_id = resp.getheader("Lambda-Runtime-Trace-Id", "")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        ctx = Context(
            request_id,
            int(resp.getheader("Lambda-Runtime-Deadline-Ms", "0") or 0),
            resp.getheader("Lambda-Runtime-Invoked-Function-Arn", ""),
            trace_id,
        )
        path = "/invocation/%s" % request_id
        try:
            event = json.loads(body) if body else None
            result = handler(event, ctx)
        except Exception as e:
            doc = {"errorType": type(e).__name__, "errorMessage": str(e), "stackTrace": stack(e.__traceback__)}
            sys.stderr.write("[ERROR] %s: %s\n" % (doc["errorType"], doc["errorMessage"]))
            client.post_json(path + "/error", doc, {"Lambda-Runtime-Function-Error-Type": doc["errorType"]})
            continue
        try:
            out = json.dumps(result).encode()
        except Exception as e:
            doc = {"errorType": "Runtime.MarshalError", "errorMessage": "Unable to marshal response: %s" % e}
            client.post_json(path + "/error", doc, {"Lambda-Runtime-Function-Error-Type": doc["errorType"]})
            continue
        client.call("POST", path + "/response", out, {"Content-Type": "application/json"})


if __name__ == "__main__":
    main()
