"""A Nimbus python3 function: the user ships only this file."""
import json


def handler(event, context):
    # HTTP requests arrive as API Gateway v2 events.
    params = event.get("queryStringParameters") or {}
    name = params.get("name", "world")
    print(f"greeting {name} in {context.aws_request_id}")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": f"Hello, {name}, from Python!", "path": event.get("rawPath")}),
    }
